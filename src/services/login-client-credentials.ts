import { MxsError, usageError } from '../errors.js';
import type { SessionAuth, TokenGrant } from '../model.js';
import { scopeList, type AuthMetadata } from '../oauth/client.js';
import { CLIENT_CREDENTIALS_SCOPE, chooseClientAuth, clientCredentialsGrant } from '../oauth/client-credentials.js';
import type { Deps } from './deps.js';

/** `mxs login --client-credentials`: what login.ts stores, as its other grants give it. */
export interface ClientGranted {
  grant: TokenGrant;
  userId: null;
  deviceId: null;
  refreshCredential: string;
  method: 'client_credentials';
  auth: SessionAuth;
}

/** RFC 6749 §4.4: the client's own token, no user, no device; the secret is kept to run the grant again. */
export async function clientCredentialsLogin(homeserver: string, meta: AuthMetadata, client: { clientId: string; clientSecret: string }, deps: Deps): Promise<ClientGranted> {
  if (meta.grantTypes.length > 0 && !meta.grantTypes.includes('client_credentials')) {
    throw usageError(`${homeserver}'s OAuth server does not offer the client credentials grant.`, 'Log in as an admin user instead: mxs login --admin');
  }
  const authMethod = chooseClientAuth(meta, homeserver);
  deps.rememberSecret(client.clientSecret);
  const { refreshToken: _none, ...grant } = await clientCredentialsGrant(meta.tokenEndpoint, { ...client, authMethod }, CLIENT_CREDENTIALS_SCOPE, deps.http).catch((err: MxsError) => {
    if (err.kind !== 'auth') throw err;
    throw err.with({
      message: `The server refused the client credentials of ${client.clientId}: ${err.detail ?? err.code} (${err.code}).`,
      hint: 'Check the client ID and secret, and that the server lists the client as an admin client (MAS: policy.data.admin_clients).',
    });
  });
  deps.rememberSecret(grant.accessToken);
  return {
    grant,
    userId: null,
    deviceId: null,
    refreshCredential: client.clientSecret,
    method: 'client_credentials',
    auth: {
      type: 'oauth',
      issuer: meta.issuer,
      clientId: client.clientId,
      tokenEndpoint: meta.tokenEndpoint,
      revocationEndpoint: meta.revocationEndpoint,
      ...(grant.scope !== undefined ? { scopes: scopeList(grant.scope) } : {}),
      grant: 'client_credentials',
      clientAuthMethod: authMethod,
    },
  };
}
