"""A bot on an unmodified matrix-nio, for test/integration/proxy.test.ts.

It is given the proxy's URL and the proxy token as if they were a homeserver and an access token
(nio never learns a real token), then: checks whoami, creates a room and invites PEER, and for
DURATION seconds syncs (1 s long-polls), sends a numbered message every round and collects what the
room's timeline brings back: its own messages and the peer's. nio's own retries are turned off
(max_timeouts=0, max_limit_exceeded=0), so every failed request shows as an error here.

Usage: python nio-client.py HOMESERVER USER_ID DEVICE_ID PEER_USER_ID DURATION_SECONDS
The token comes on standard input (one line), never in argv. Output: one JSON object per line on
stdout: {"event": "room", "room_id"} once the room exists, then {"event": "done", ...} at the end.
"""

import asyncio
import json
import sys
import time

from nio import AsyncClient, AsyncClientConfig, ErrorResponse, RoomMessageText


def emit(**fields):
    print(json.dumps(fields), flush=True)


async def main():
    homeserver, user_id, device_id, peer, duration = sys.argv[1:6]
    token = sys.stdin.readline().strip()
    config = AsyncClientConfig(max_timeouts=0, max_limit_exceeded=0, request_timeout=30, encryption_enabled=False)
    client = AsyncClient(homeserver, user_id, device_id=device_id, config=config)
    client.access_token = token
    client.user_id = user_id
    client.device_id = device_id

    errors = []
    sent = []
    received_own = set()
    received_peer = []
    requests = 0

    def check(resp, what):
        nonlocal requests
        requests += 1
        if isinstance(resp, ErrorResponse):
            errors.append(f"{what}: {resp.status_code} {resp.message}")
            return False
        return True

    try:
        who = await client.whoami()
        if check(who, "whoami") and who.user_id != user_id:
            errors.append(f"whoami: {who.user_id} is not {user_id}")

        created = await client.room_create(name="nio through mxs proxy", invite=[peer])
        if not check(created, "room_create"):
            raise SystemExit(1)
        room_id = created.room_id
        emit(event="room", room_id=room_id)

        first = await client.sync(timeout=0, full_state=True)
        check(first, "sync")
        since = first.next_batch if not isinstance(first, ErrorResponse) else None

        async def sync(timeout_ms):
            """One long-poll; collects the room's new messages, own and the peer's."""
            nonlocal since
            resp = await client.sync(timeout=timeout_ms, since=since)
            if not check(resp, "sync"):
                return
            since = resp.next_batch
            room = resp.rooms.join.get(room_id)
            for event in room.timeline.events if room else []:
                if isinstance(event, RoomMessageText):
                    if event.sender == user_id:
                        received_own.add(event.body)
                    else:
                        received_peer.append(event.body)

        deadline = time.monotonic() + float(duration)
        n = 0
        while time.monotonic() < deadline:
            n += 1
            body = f"nio message {n}"
            resp = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})
            if check(resp, "room_send"):
                sent.append(body)
            await sync(1000)
        # Read back what is still on its way.
        for _ in range(3):
            await sync(500)
    except Exception as exc:  # noqa: BLE001 - any exception is a failed request to report
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        await client.close()
    emit(
        event="done",
        requests=requests,
        errors=errors,
        sent=len(sent),
        received_own=len([b for b in sent if b in received_own]),
        received_peer=received_peer,
    )


asyncio.run(main())
