import { Args, Flags } from '@oclif/core';
import { MxsCommand } from '../../base-command.js';
import { cancelOnSigint } from '../../cli/terminal.js';
import { parseDuration } from '../../duration.js';
import { deleteDevicesService, type DeleteDevicesResult } from '../../services/devices.js';
import { deletedLine, terminalDeleteInteraction } from '../../ui/devices.js';

export default class DevicesDelete extends MxsCommand {
  static override summary = "Delete devices (sessions) of the account; never this session's own.";
  static override description =
    'Deletes the devices named, or with --older-than every device last seen longer ago than DURATION (devices with no recorded activity are left alone). The server asks you to confirm who you are: password accounts give the password (prompted for, or piped in with --password-stdin); OAuth 2.0 accounts approve the deletion on the account page whose URL mxs prints (and opens with --browser). On a terminal mxs lists the devices and asks before deleting; elsewhere --yes is required. The device of this session is never deleted: use mxs logout.';
  static override examples = [
    '<%= config.bin %> devices delete QWERTYUIOP ASDFGHJKLZ',
    '<%= config.bin %> devices delete --older-than 30d',
    'printf "%s\\n" "$MATRIX_PASSWORD" | <%= config.bin %> devices delete --older-than 90d --yes --password-stdin',
  ];
  static override args = {
    // ignoreStdin: the password may arrive on stdin (--password-stdin) and must never be taken for an ID.
    ids: Args.string({ description: 'Device IDs (see: mxs devices).', multiple: true, ignoreStdin: true }),
  };
  static override flags = {
    'older-than': Flags.string({ summary: 'Delete every device last seen longer ago than this, e.g. 30d or 12h.', helpValue: 'DURATION' }),
    yes: Flags.boolean({ char: 'y', summary: 'Delete without asking (required when standard input is not a terminal).' }),
    'password-stdin': Flags.boolean({ summary: 'Read the account password from standard input (one line).' }),
    browser: Flags.boolean({ summary: 'OAuth accounts: open the account page in a browser.' }),
  };

  async run(): Promise<DeleteDevicesResult> {
    const { args, flags } = await this.parse(DevicesDelete);
    const { profile, deps } = this.setup(flags);
    const olderThanMs = flags['older-than'] === undefined ? undefined : parseDuration(flags['older-than'], '--older-than');
    const sigint = cancelOnSigint('Cancelled; nothing was deleted.');
    try {
      const io = terminalDeleteInteraction(
        this.out,
        { stdin: process.stdin, stdinIsTTY: Boolean(process.stdin.isTTY), env: process.env, now: Date.now, passwordStdin: flags['password-stdin'], browser: flags.browser },
        sigint.signal,
      );
      const result = await deleteDevicesService({ profile, deviceIds: args.ids ?? [], olderThanMs, yes: flags.yes }, deps, io);
      this.out.info(deletedLine(result, olderThanMs));
      return result;
    } finally {
      sigint.dispose();
    }
  }
}
