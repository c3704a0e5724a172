// Checks the test homeserver itself (test/support/synapse.ts): it answers, and its refresh-token setup
// (refreshable_access_token_lifetime 6s) behaves as the interop suites expect.
import { describeWithSynapse, SYNAPSE_PINNED_VERSION, TEST_USERS, testSynapseUrl } from '../support/synapse.js';

interface LoginResponse {
  user_id: string;
  access_token: string;
  device_id: string;
  refresh_token?: string;
  expires_in_ms?: number;
}

async function postJson(url: string, body: unknown, token?: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

describeWithSynapse('test Synapse harness', () => {
  const base = (): string => testSynapseUrl();

  test('runs the pinned Synapse and answers /versions', async () => {
    expect(process.env.MXS_TEST_SYNAPSE_VERSION).toContain(SYNAPSE_PINNED_VERSION);
    const res = await fetch(`${base()}/_matrix/client/versions`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { versions: string[] };
    expect(body.versions).toEqual(expect.arrayContaining(['v1.1']));
  });

  test('password login with refresh_token: true gives a 6 s access token, and /refresh works', async () => {
    const { alice } = TEST_USERS;
    const login = await postJson(`${base()}/_matrix/client/v3/login`, {
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user: alice.user },
      password: alice.password,
      initial_device_display_name: 'mxs harness test',
      refresh_token: true,
    });
    expect(login.status).toBe(200);
    const session = login.json as unknown as LoginResponse;
    expect(session.user_id).toBe(alice.userId);
    expect(typeof session.refresh_token).toBe('string');
    expect(session.expires_in_ms).toBeGreaterThan(5000);
    expect(session.expires_in_ms).toBeLessThanOrEqual(6000);

    const refreshed = await postJson(`${base()}/_matrix/client/v3/refresh`, { refresh_token: session.refresh_token });
    expect(refreshed.status).toBe(200);
    expect(typeof refreshed.json.access_token).toBe('string');
    expect(typeof refreshed.json.refresh_token).toBe('string');
    expect(refreshed.json.access_token).not.toBe(session.access_token);
    expect(refreshed.json.expires_in_ms).toBeGreaterThan(5000);

    const whoami = await fetch(`${base()}/_matrix/client/v3/account/whoami`, {
      headers: { authorization: `Bearer ${refreshed.json.access_token as string}` },
    });
    expect(whoami.status).toBe(200);
    expect(await whoami.json()).toMatchObject({ user_id: alice.userId, device_id: session.device_id });
  });

  test('bob can log in; a wrong password is refused', async () => {
    const { bob } = TEST_USERS;
    const ok = await postJson(`${base()}/_matrix/client/v3/login`, {
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user: bob.user },
      password: bob.password,
    });
    expect(ok.status).toBe(200);
    const bad = await postJson(`${base()}/_matrix/client/v3/login`, {
      type: 'm.login.password',
      identifier: { type: 'm.id.user', user: bob.user },
      password: 'not-the-password',
    });
    expect(bad.status).toBe(403);
    expect(bad.json.errcode).toBe('M_FORBIDDEN');
  });
});
