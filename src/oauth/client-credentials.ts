import { usageError } from '../errors.js';
import { jsonBody, send, type HttpDeps } from '../http/transport.js';
import type { TokenGrant } from '../model.js';
import { API_SCOPE, ADMIN_SCOPES, decodeOAuthError, tokenGrant, type AuthMetadata } from './client.js';

// The client credentials grant (RFC 6749 §4.4) for unattended admin tools: a confidential client
// (one the server's operator configured, e.g. listed in MAS's `policy.data.admin_clients`) gets a
// token for itself, no user and no device, and no refresh token: the grant is simply run again.

export type ClientAuthMethod = 'client_secret_basic' | 'client_secret_post';

export interface ConfidentialClient {
  clientId: string;
  clientSecret: string;
  authMethod: ClientAuthMethod;
}

/**
 * The admin scopes, and the client API scope that Synapse wants beside `urn:synapse:admin:*`
 * (MAS docs, scopes.md). No device scope: such a token belongs to no user's device.
 */
export const CLIENT_CREDENTIALS_SCOPE = [API_SCOPE, ...ADMIN_SCOPES].join(' ');

/**
 * How the client authenticates at the token endpoint: `client_secret_basic` where the metadata allows
 * it (RFC 8414 §2: it is the default when the metadata names no methods), else `client_secret_post`.
 */
export function chooseClientAuth(meta: AuthMetadata, homeserver: string): ClientAuthMethod {
  const offered = meta.tokenEndpointAuthMethods;
  if (offered.length === 0 || offered.includes('client_secret_basic')) return 'client_secret_basic';
  if (offered.includes('client_secret_post')) return 'client_secret_post';
  throw usageError(
    `${homeserver}'s OAuth server accepts no client secret at its token endpoint (it offers: ${offered.slice(0, 8).join(', ')}).`,
    'Use a client the server authenticates by secret (client_secret_basic or client_secret_post), or log in as an admin user with --admin.',
  );
}

/** RFC 6749 §2.3.1: the client's credentials, as the chosen method sends them. */
function authenticate(client: ConfidentialClient, form: Record<string, string>): { form: Record<string, string>; basicAuth?: { user: string; password: string } } {
  if (client.authMethod === 'client_secret_post') return { form: { ...form, client_id: client.clientId, client_secret: client.clientSecret } };
  return { form, basicAuth: { user: client.clientId, password: client.clientSecret } };
}

/** RFC 6749 §4.4.2. Repeated on network errors and 5xx like a refresh: it changes nothing on the server but a new token. */
export async function clientCredentialsGrant(tokenEndpoint: string, client: ConfidentialClient, scope: string, deps: HttpDeps): Promise<TokenGrant> {
  const req = authenticate(client, { grant_type: 'client_credentials', scope });
  const res = await send(deps, { method: 'POST', url: tokenEndpoint, ...req }, decodeOAuthError);
  return tokenGrant(jsonBody(res, 'an OAuth token endpoint'), res.sentAt);
}

/** RFC 7009 §2.1: a confidential client authenticates its revocation request. */
export async function revokeWithSecret(revocationEndpoint: string, client: ConfidentialClient, token: string, deps: HttpDeps): Promise<void> {
  const req = authenticate(client, { token, token_type_hint: 'access_token' });
  await send(deps, { method: 'POST', url: revocationEndpoint, ...req }, decodeOAuthError);
}
