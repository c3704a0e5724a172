import { Args } from '@oclif/core';
import { MxsCommand } from '../base-command.js';
import { switchService, type SwitchResult } from '../services/switch.js';
import { printable } from '../ui/escape.js';

export default class Switch extends MxsCommand {
  static override summary = 'Make PROFILE the default for later commands.';
  static override description =
    'Commands without --profile then use PROFILE. --profile and MXS_PROFILE still win, so a job that names its profile is never switched under its feet. PROFILE must have a stored session (mxs status --all lists them).';
  static override examples = ['<%= config.bin %> switch work', '<%= config.bin %> switch default --json'];
  static override args = {
    profile: Args.string({ description: 'A profile with a stored session.', required: true }),
  };

  async run(): Promise<SwitchResult> {
    const { args, flags } = await this.parse(Switch);
    // PROFILE is what this command is about: validated like --profile, and the current default is never read.
    const { profile, config, deps } = this.setup({ ...flags, profile: args.profile });
    const result = await switchService(profile, { sessions: deps.sessions, config });
    this.out.info(`The default profile is now ${profile}.`);
    const env = process.env.MXS_PROFILE;
    if (env && env !== profile) this.out.info(`MXS_PROFILE=${printable(env)} is set here, so commands in this shell still use that profile.`);
    return result;
  }
}
