// A bot on an unmodified matrix-js-sdk, for test/integration/proxy.test.ts (the matrix-nio bot's twin:
// test/support/nio-client.py). Runs on Node 22+ (the test runs it on the Node 24 of scripts/node24.sh).
//
// It is given the proxy's URL and the proxy token as if they were a homeserver and an access token (the SDK
// never learns a real token), then: checks whoami, creates a room and invites PEER, starts the SDK's own sync
// loop (startClient: initial sync, then long-polls), and for DURATION seconds sends a numbered message every
// round, collecting what the room's live timeline brings back (RoomEvent.Timeline): its own messages and the
// peer's. Pending events are kept out of the timeline (pendingEventOrdering "detached", as Element does), so
// an own message counts as received only when its remote echo came back through /sync, never for its local
// echo. The SDK retries failed requests by itself (sync loop, send queue): the test reads failures from the
// proxy's request log; sync-state errors seen here are reported too.
//
// Usage: node js-sdk-client.mjs HOMESERVER USER_ID DEVICE_ID PEER_USER_ID DURATION_SECONDS
// with MXS_JS_SDK_DIR naming the directory whose node_modules holds matrix-js-sdk (.cache/matrix-js-sdk).
// The token comes on standard input (one line), never in argv. Output: one JSON object per line on stdout:
// {"event": "room", "room_id"} once the room exists, {"event": "synced"} once the initial sync is done,
// {"event": "stopping", "at"} (ms since epoch) right before stopClient(), then {"event": "done", ...}. The SDK's own
// logging (debug level: its sub-loggers set that themselves) goes to stderr.
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { format } from 'node:util';

// stdout carries the JSON lines only: the SDK logs through console.* (loglevel), so console.* goes to stderr.
for (const level of ['log', 'info', 'debug', 'warn', 'error', 'trace']) {
  console[level] = (...args) => process.stderr.write(`[js-sdk ${level}] ${format(...args)}\n`);
}
const emit = (fields) => process.stdout.write(`${JSON.stringify(fields)}\n`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const sha256 = (text) => createHash('sha256').update(text ?? '').digest('hex');

async function readToken() {
  let input = '';
  for await (const chunk of process.stdin) input += chunk;
  return input.split('\n')[0].trim();
}

async function loadSdk() {
  const dir = process.env.MXS_JS_SDK_DIR;
  if (!dir) throw new Error('MXS_JS_SDK_DIR is not set');
  const entry = createRequire(path.join(path.resolve(dir), 'package.json')).resolve('matrix-js-sdk');
  const sdk = await import(pathToFileURL(entry).href);
  const { version } = createRequire(entry)('../package.json');
  return { sdk, version };
}

async function main() {
  const [homeserver, userId, deviceId, peer, duration] = process.argv.slice(2, 7);
  const token = await readToken();
  const { sdk, version } = await loadSdk();

  const errors = [];
  const sent = [];
  const receivedOwn = new Set();
  const receivedPeer = [];
  const syncStates = [];
  let roomId;

  const client = sdk.createClient({ baseUrl: homeserver, accessToken: token, userId, deviceId });
  try {
    const who = await client.whoami();
    if (who.user_id !== userId) errors.push(`whoami: ${who.user_id} is not ${userId}`);

    const created = await client.createRoom({ name: 'matrix-js-sdk through mxs proxy', invite: [peer] });
    roomId = created.room_id;
    emit({ event: 'room', room_id: roomId });

    client.on(sdk.ClientEvent.Sync, (state, prev, data) => {
      if (syncStates.at(-1) !== state) syncStates.push(state);
      if (state === sdk.SyncState.Error || state === sdk.SyncState.Reconnecting) errors.push(`sync state ${state}: ${data?.error?.message ?? 'no error given'}`);
    });
    client.on(sdk.RoomEvent.Timeline, (event, room, toStartOfTimeline, removed, data) => {
      if (room?.roomId !== roomId || toStartOfTimeline || removed || !data?.liveEvent) return;
      if (event.getType() !== 'm.room.message' || event.status !== null || !event.getId()?.startsWith('$')) return;
      const body = event.getContent().body;
      if (event.getSender() === userId) receivedOwn.add(body);
      else receivedPeer.push(body);
    });

    const prepared = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no initial sync within 60 s')), 60_000);
      const onSync = (state) => {
        if (state !== sdk.SyncState.Prepared) return;
        clearTimeout(timer);
        client.off(sdk.ClientEvent.Sync, onSync);
        resolve();
      };
      client.on(sdk.ClientEvent.Sync, onSync);
    });
    await client.startClient({ initialSyncLimit: 10, pendingEventOrdering: sdk.PendingEventOrdering.Detached, lazyLoadMembers: true });
    await prepared;
    emit({ event: 'synced' });

    const deadline = Date.now() + Number(duration) * 1000;
    for (let n = 1; Date.now() < deadline; n++) {
      const body = `js-sdk message ${n}`;
      try {
        const r = await client.sendMessage(roomId, { msgtype: 'm.text', body });
        if (r?.event_id) sent.push(body);
        else errors.push(`sendMessage ${n}: no event_id`);
      } catch (err) {
        errors.push(`sendMessage ${n}: ${err?.name ?? 'Error'}: ${err?.message ?? err}`);
      }
      await sleep(1000);
    }
    // Read back what is still on its way (the sync loop keeps running meanwhile).
    for (let i = 0; i < 100 && sent.some((b) => !receivedOwn.has(b)); i++) await sleep(100);
  } catch (err) {
    errors.push(`${err?.name ?? 'Error'}: ${err?.message ?? err}`);
  } finally {
    // stopClient() aborts the sync long-poll in flight: the proxy logs that one request with no status.
    emit({ event: 'stopping', at: Date.now() });
    client.stopClient();
  }
  // After stopClient() only timers may be left: the SDK arms one per request with a local timeout
  // (http-api/utils.js timeoutSignal(): never cleared; pollTimeout + 80 s for each /sync), which would keep Node
  // alive for up to two minutes (matrix-org/matrix-js-sdk#2472). Anything else (a socket, a request still
  // running) is reported; then the bot exits, as a bot does at shutdown.
  const leftovers = () => process.getActiveResourcesInfo().filter((r) => !['Timeout', 'TTYWrap', 'PipeWrap'].includes(r));
  for (let i = 0; i < 20 && leftovers().length > 0; i++) await sleep(100);
  emit({
    event: 'done',
    sdk_version: version,
    node_version: process.version,
    errors,
    sync_states: syncStates,
    sent: sent.length,
    received_own: sent.filter((b) => receivedOwn.has(b)).length,
    received_peer: receivedPeer,
    // The token the client holds at the end, as a hash (no secret on stdout): the test compares it with the proxy token's.
    token_sha256: sha256(client.getAccessToken()),
    left_after_stop: leftovers(),
  });
}

await main();
process.stdout.write('', () => process.exit(0));
