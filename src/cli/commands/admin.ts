import { parseDuration } from '../../duration.js';
import {
  adminEndService,
  adminSessionsService,
  adminTokenCreateService,
  adminTokenListService,
  adminTokenRegenerateService,
  adminTokenRevokeService,
  openAdmin,
  type AdminEndedResult,
  type AdminSessionsResult,
  type AdminTokenResult,
  type AdminTokensResult,
} from '../../services/admin/admin.js';
import type { AdminBackend } from '../../services/admin/backend.js';
import type { SynapseBackendFactory } from '../../services/admin/choose.js';
import { printable } from '../../printable.js';
import { confirmEnd, createdLine, endedLine, sessionsText, tokensText } from '../../ui/admin.js';
import type { CommandContext } from '../context.js';
import { synapseAdminBackend } from '../../services/admin/synapse.js';
import type { CommandDefinition, FlagSpec } from '../command.js';

// `mxs admin …`: one command surface over two back ends (src/services/admin/). The definitions are
// made by adminCommands(synapse) so that tests can give the Synapse back end; the CLI's come from
// the real one.

interface ApiFlags {
  'admin-api'?: string;
}

const ADMIN_API: FlagSpec = {
  type: 'option',
  helpValue: 'URL',
  summary: "The Matrix Authentication Service admin API's base URL (env MXS_ADMIN_API; default: the issuer's /api/admin/v1).",
};

/** `--expires`: MAS takes whole seconds up to 2^32-1; ten years is more than any bot needs. */
const EXPIRES_MAX_MS = 3660 * 86_400_000;
const EXPIRES: FlagSpec = { type: 'option', helpValue: 'DURATION', summary: 'How long the token lasts, e.g. 90d (default: it never expires).' };

const expiresOf = (v: string | undefined) => (v === undefined ? null : parseDuration(v, '--expires', EXPIRES_MAX_MS));

/** The Synapse back end (src/services/admin/synapse.ts), for servers without the MAS admin API. */
export const loadSynapseBackend: SynapseBackendFactory = (conn) => synapseAdminBackend(conn);

export interface AdminCommands {
  sessions: CommandDefinition<ApiFlags & { active: boolean }, { user: string }, AdminSessionsResult>;
  sessionsEnd: CommandDefinition<ApiFlags & { user?: string; all: boolean; yes: boolean }, { ids?: string[] }, AdminEndedResult>;
  tokenCreate: CommandDefinition<ApiFlags & { expires?: string; name?: string }, { user: string }, AdminTokenResult>;
  tokenList: CommandDefinition<ApiFlags, { user: string }, AdminTokensResult>;
  tokenRevoke: CommandDefinition<ApiFlags, { id: string }, AdminEndedResult>;
  tokenRegenerate: CommandDefinition<ApiFlags & { expires?: string }, { id: string }, AdminTokenResult>;
}

const tokenShape = (r: AdminTokenResult) => ({ id: r.id, userId: r.userId, token: r.token, expiresAt: r.expiresAt });
const USER_ARG = { description: '@user:server, or a localpart of this session\'s server.', required: true };

export function adminCommands(synapse: SynapseBackendFactory): AdminCommands {
  const open = (ctx: CommandContext, flags: ApiFlags): Promise<AdminBackend> =>
    openAdmin(ctx.profile, ctx.deps, { adminApi: flags['admin-api'] ?? ctx.env.MXS_ADMIN_API, synapse });

  /** The token to stdout alone (the only output besides `mxs token` that carries one); which session and expiry to stderr. */
  const tokenText = (ctx: CommandContext, r: AdminTokenResult) => ctx.out.secretData(r.token);

  return {
    sessions: {
      id: 'admin:sessions',
      summary: "Every session of a user, on the server (needs an admin session).",
      description:
        'Lists the sessions of USER, newest activity first: kind (oauth2, compat, browser, personal on the Matrix Authentication Service; device on Synapse), ID, device, client, created, last active (time, IP, user agent), finished. mxs uses the Matrix Authentication Service admin API where the server has one that answers, else the Synapse admin API, and says which. End sessions with: mxs admin sessions end',
      examples: ['<%= config.bin %> admin sessions @bob:example.org', '<%= config.bin %> admin sessions bob --active --json'],
      args: { user: USER_ARG },
      flags: { active: { type: 'boolean', summary: 'Only sessions that have not ended.' }, 'admin-api': ADMIN_API },
      async run(ctx, { flags, args }) {
        return { result: await adminSessionsService(ctx.profile, args.user, flags.active, await open(ctx, flags)), exitCode: 0 };
      },
      text: ({ out }, r) => out.data(sessionsText(r)),
    },

    sessionsEnd: {
      id: 'admin:sessions:end',
      cancelled: 'Cancelled; nothing was ended.',
      summary: "End sessions of a user on the server (needs an admin session).",
      description:
        'Ends the sessions named by ID (see: mxs admin sessions USER), or with --user USER --all every active session of USER. All or nothing: an ID that names no active session is named and nothing is ended. On a terminal mxs lists the sessions and asks; elsewhere --yes is required.',
      examples: ['<%= config.bin %> admin sessions end 01J9Z8X7W6V5T4S3R2Q1P0NMKJ', '<%= config.bin %> admin sessions end --user @bob:example.org --all --yes'],
      args: { ids: { description: 'Session IDs (see: mxs admin sessions USER).', multiple: true } },
      flags: {
        user: { type: 'option', char: 'u', helpValue: 'USER', summary: 'Whose sessions (with --all; on Synapse also with IDs).' },
        all: { type: 'boolean', summary: 'Every active session of --user.' },
        yes: { type: 'boolean', char: 'y', summary: 'End them without asking (required when standard input is not a terminal).' },
        'admin-api': ADMIN_API,
      },
      async run(ctx, { flags, args }) {
        const interactive = Boolean(ctx.stdin().isTTY);
        const backend = await open(ctx, flags);
        const input = {
          profile: ctx.profile,
          ids: args.ids ?? [],
          user: flags.user,
          all: flags.all,
          yes: flags.yes,
          interactive,
          confirm: (sessions: Parameters<typeof confirmEnd>[1]) => confirmEnd(ctx.out, sessions, { signal: ctx.signal, cancelled: 'Cancelled at the prompt; nothing was ended.' }),
        };
        return { result: await adminEndService(input, backend), exitCode: 0 };
      },
      text: ({ out }, r) => out.info(endedLine(r)),
    },

    tokenCreate: {
      id: 'admin:token:create',
      summary: 'A long-lived access token for a bot, acting as USER (needs an admin session).',
      description:
        "Prints the token alone on stdout, once (its session ID and expiry go to stderr): store it where the bot reads it. On the Matrix Authentication Service it is a personal session (see: mxs admin token list USER); on Synapse the admin login-as-user endpoint's token, which makes no device and is ended by logging out with it.",
      examples: ['<%= config.bin %> admin token create @bot:example.org --expires 90d --name "build bot" > bot-token', '<%= config.bin %> admin token create bot --json'],
      args: { user: USER_ARG },
      flags: { expires: EXPIRES, name: { type: 'option', helpValue: 'NAME', summary: 'A name for the token, shown in token lists.' }, 'admin-api': ADMIN_API },
      async run(ctx, { flags, args }) {
        const opts = { expiresInMs: expiresOf(flags.expires), name: flags.name ?? null };
        const result = await adminTokenCreateService(ctx.profile, args.user, opts, await open(ctx, flags));
        ctx.out.info(createdLine(result));
        return { result, exitCode: 0 };
      },
      text: tokenText,
      jsonShape: tokenShape,
      // The contract's one JSON besides `token`'s that carries a token.
      json: 'unredacted',
    },

    tokenList: {
      id: 'admin:token:list',
      summary: "A user's personal access tokens (Matrix Authentication Service; needs an admin session).",
      description: 'Every personal access token acting as USER: ID, name, created, last active, expiry or revocation. Synapse keeps no such list (exit 2).',
      examples: ['<%= config.bin %> admin token list @bot:example.org'],
      args: { user: USER_ARG },
      flags: { 'admin-api': ADMIN_API },
      async run(ctx, { flags, args }) {
        return { result: await adminTokenListService(ctx.profile, args.user, await open(ctx, flags)), exitCode: 0 };
      },
      text: ({ out }, r) => out.data(tokensText(r)),
    },

    tokenRevoke: {
      id: 'admin:token:revoke',
      summary: 'Revoke a personal access token (Matrix Authentication Service; needs an admin session).',
      description: 'Ends the personal session with this ID at once (see: mxs admin token list USER). Synapse keeps no list of tokens (exit 2).',
      examples: ['<%= config.bin %> admin token revoke 01J9Z8X7W6V5T4S3R2Q1P0NMKJ'],
      args: { id: { description: 'The token\'s session ID.', required: true } },
      flags: { 'admin-api': ADMIN_API },
      async run(ctx, { flags, args }) {
        return { result: await adminTokenRevokeService(ctx.profile, args.id, await open(ctx, flags)), exitCode: 0 };
      },
      text: ({ out }, r) => out.info(`Revoked token ${r.ended.map((id) => printable(id)).join(', ')}.`),
    },

    tokenRegenerate: {
      id: 'admin:token:regenerate',
      summary: 'A new token for a personal session, the old one revoked (Matrix Authentication Service; needs an admin session).',
      description: 'Prints the new token as create does: alone on stdout, once; its session ID and expiry on stderr. Synapse keeps no list of tokens (exit 2).',
      examples: ['<%= config.bin %> admin token regenerate 01J9Z8X7W6V5T4S3R2Q1P0NMKJ --expires 90d > bot-token'],
      args: { id: { description: 'The token\'s session ID.', required: true } },
      flags: { expires: EXPIRES, 'admin-api': ADMIN_API },
      async run(ctx, { flags, args }) {
        const result = await adminTokenRegenerateService(ctx.profile, args.id, expiresOf(flags.expires), await open(ctx, flags));
        ctx.out.info(createdLine(result));
        return { result, exitCode: 0 };
      },
      text: tokenText,
      jsonShape: tokenShape,
      json: 'unredacted',
    },
  };
}

export const admin = adminCommands(loadSynapseBackend);
