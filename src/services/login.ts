import { Exit, MxsError } from '../errors.js';
import { login, loginFlows, type LoginMethod } from '../matrix/client.js';
import { resolveHomeserver } from '../matrix/discovery.js';
import type { SessionRecord, StorageKind, StoragePreference } from '../model.js';
import { notableSkew, type Deps } from './deps.js';
import { remainingMs, secretFromGrant, withProfileLock } from './session.js';
import { chooseSecretStore } from './storage.js';

export interface LoginInput {
  profile: string;
  server: string;
  method: LoginMethod;
  deviceId?: string;
  deviceName?: string;
  refresh: boolean;
  insecure: boolean;
  storage: StoragePreference;
}

export interface LoginResult {
  profile: string;
  homeserver: string;
  userId: string;
  deviceId: string;
  expiresAt: string | null;
  expiresInMs: number | null;
  refreshable: boolean;
  storage: StorageKind;
}

export async function loginService(input: LoginInput, deps: Deps): Promise<LoginResult> {
  const homeserver = await resolveHomeserver(input.server, input.insecure, deps.http);
  const flows = await loginFlows(homeserver, deps.http).catch(() => [] as string[]);
  if (flows.length > 0 && !flows.includes(input.method.type)) {
    throw new MxsError({
      code: 'usage',
      message: `${homeserver} does not accept ${input.method.type} (it offers: ${flows.join(', ')}).`,
      hint: input.method.type === 'm.login.password' && flows.includes('m.login.token') ? 'Get a login token through single sign-on and use: mxs login --token-stdin' : 'This server needs a login method mxs does not support yet.',
      exitCode: Exit.usage,
    });
  }
  // Settle where the secrets go before sending any credential: a login whose tokens cannot be
  // stored would leave a live device on the server that nobody can use or log out.
  const store = await chooseSecretStore(input.storage, input.profile, deps);
  if (input.method.type === 'm.login.password') deps.rememberSecret(input.method.password);
  else deps.rememberSecret(input.method.token);

  const grant = await login(
    homeserver,
    { method: input.method, deviceId: input.deviceId, deviceName: input.deviceName, refreshToken: input.refresh },
    deps.http,
  ).catch((err: MxsError) => {
    if (err.exitCode !== Exit.auth) throw err;
    throw err.with({
      message:
        input.method.type === 'm.login.password'
          ? `Login refused for ${input.method.user} on ${new URL(homeserver).host}: wrong user name or password (${err.code}).`
          : `Login refused: the login token was not accepted (${err.code}).`,
      hint: input.method.type === 'm.login.password' ? 'Check the user name and password, then retry.' : 'Get a new login token and retry.',
    });
  });
  deps.rememberSecret(grant.accessToken, grant.refreshToken);

  const secret = secretFromGrant(grant, null);
  const record: SessionRecord = {
    profile: input.profile,
    homeserver,
    userId: grant.userId,
    deviceId: grant.deviceId,
    issuedAt: secret.issuedAt,
    expiresAt: secret.expiresAt,
    refreshable: secret.refreshToken !== null,
    storage: store.kind,
    ...(input.insecure ? { insecure: true } : {}),
    clockSkewMs: notableSkew(deps),
  };
  await withProfileLock(input.profile, deps, async () => {
    const previous = await deps.sessions.read(input.profile).catch(() => null);
    await store.set(input.profile, secret);
    await deps.sessions.write(record);
    if (previous && previous.storage !== store.kind) {
      await deps.secretStores[previous.storage].delete(previous.profile).catch(() => {});
    }
  });
  return {
    profile: input.profile,
    homeserver,
    userId: grant.userId,
    deviceId: grant.deviceId,
    expiresAt: secret.expiresAt,
    expiresInMs: remainingMs(secret.expiresAt, deps.now()),
    refreshable: record.refreshable,
    storage: store.kind,
  };
}
