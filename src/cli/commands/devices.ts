import { parseDuration } from '../../duration.js';
import { adminDeviceDeletionFor } from '../../services/admin/admin.js';
import type { DeletionTiming } from '../../services/devices-account-page.js';
import { DELETION_TIMING, deleteDevicesService, listDevicesService, renameDeviceService, type DeleteDevicesResult, type DevicesReport, type RenameDeviceResult } from '../../services/devices.js';
import { deletedLine, deviceTable, renamedLine, terminalDeleteInteraction } from '../../ui/devices.js';
import type { CommandDefinition, CommandInput } from '../command.js';
import type { CommandContext } from '../context.js';
import { openInBrowser } from '../terminal.js';
import { loadSynapseBackend } from './admin.js';

export const devicesCommand: CommandDefinition<object, object, DevicesReport> = {
  id: 'devices',
  summary: "List the account's devices (sessions).",
  description:
    'Every device of the account: its ID, display name, and when and from which IP address it was last seen. The device of this session is marked "(this device)". See also: mxs devices delete, mxs devices rename.',
  examples: ['<%= config.bin %> devices', '<%= config.bin %> devices --json --profile work'],
  flags: {},
  async run({ profile, deps }) {
    return { result: await listDevicesService(profile, deps), exitCode: 0 };
  },
  text: ({ out }, report) => out.data(deviceTable(report, Date.now(), out.color).join('\n')),
  jsonShape: (report) => report.result,
};

interface DeleteFlags {
  'older-than'?: string;
  yes: boolean;
  'password-stdin': boolean;
  browser: boolean;
}

export const devicesDeleteCommand: CommandDefinition<DeleteFlags, { ids?: string[] }, DeleteDevicesResult> = {
  id: 'devices:delete',
  cancelled: 'Cancelled; nothing was deleted.',
  summary: "Delete devices (sessions) of the account; never this session's own.",
  description:
    'Deletes the devices named, or with --older-than every device last seen longer ago than DURATION (devices with no recorded activity are left alone). The server asks you to confirm who you are: password accounts give the password (prompted for, or piped in with --password-stdin); OAuth 2.0 accounts approve the deletion on the account page whose URL mxs prints (and opens with --browser); a session logged in with --admin has them ended through the admin API instead. On a terminal mxs lists the devices and asks before deleting; elsewhere --yes is required. The device of this session is never deleted: use mxs logout.',
  examples: [
    '<%= config.bin %> devices delete QWERTYUIOP ASDFGHJKLZ',
    '<%= config.bin %> devices delete --older-than 30d',
    'printf "%s\\n" "$MATRIX_PASSWORD" | <%= config.bin %> devices delete --older-than 90d --yes --password-stdin',
  ],
  args: {
    ids: { description: 'Device IDs (see: mxs devices).', multiple: true },
  },
  flags: {
    'older-than': { type: 'option', summary: 'Delete every device last seen longer ago than this, e.g. 30d or 12h.', helpValue: 'DURATION' },
    yes: { type: 'boolean', char: 'y', summary: 'Delete without asking (required when standard input is not a terminal).' },
    'password-stdin': { type: 'boolean', summary: 'Read the account password from standard input (one line).' },
    browser: { type: 'boolean', summary: 'OAuth accounts: open the account page in a browser.' },
  },
  run: (ctx, input) => runDelete(ctx, input, REAL_WORLD),
  jsonShape: ({ profile, deleted }) => ({ profile, deleted }),
};

/** What `devices delete` waits with and opens pages with: the real clock and browser, or a test's. */
export interface DeleteWorld {
  timing: DeletionTiming;
  open(url: string, env: NodeJS.ProcessEnv): Promise<boolean>;
}

const REAL_WORLD: DeleteWorld = { timing: DELETION_TIMING, open: openInBrowser };

/** `devices delete` waiting and opening pages in `world` (tests: a short interval, a fake browser). */
export function devicesDeleteDefinition(world: DeleteWorld): typeof devicesDeleteCommand {
  return { ...devicesDeleteCommand, run: (ctx, input) => runDelete(ctx, input, world) };
}

async function runDelete(ctx: CommandContext, { flags, args }: CommandInput<DeleteFlags, { ids?: string[] }>, world: DeleteWorld) {
  const { profile, deps, out, env } = ctx;
  const olderThanMs = flags['older-than'] === undefined ? undefined : parseDuration(flags['older-than'], '--older-than');
  const stdin = ctx.stdin();
  const io = terminalDeleteInteraction(
    out,
    {
      stdin,
      stdinIsTTY: Boolean(stdin.isTTY),
      now: Date.now,
      passwordStdin: flags['password-stdin'],
      browser: flags.browser,
      open: (url) => world.open(url, env),
      timing: world.timing,
    },
    ctx.signal,
  );
  const admin = () => adminDeviceDeletionFor(profile, deps, { adminApi: env.MXS_ADMIN_API, synapse: loadSynapseBackend });
  const result = await deleteDevicesService({ profile, deviceIds: args.ids ?? [], olderThanMs, yes: flags.yes }, deps, io, { timing: world.timing, admin });
  out.info(deletedLine(result, olderThanMs));
  return { result, exitCode: 0 };
}

export const devicesRenameCommand: CommandDefinition<object, { id: string; name: string }, RenameDeviceResult> = {
  id: 'devices:rename',
  summary: 'Give a device a new display name.',
  description: 'The name is visible to the people you talk to on Matrix (in their device lists). See the IDs with: mxs devices',
  examples: ['<%= config.bin %> devices rename ABCDEFGHIJ "work laptop"'],
  args: {
    id: { description: 'The device ID.', required: true },
    name: { description: 'The new display name.', required: true },
  },
  flags: {},
  async run({ profile, deps, out }, { args }) {
    const result = await renameDeviceService(profile, args.id, args.name, deps);
    out.info(renamedLine(result));
    return { result, exitCode: 0 };
  },
};
