import { switchService, type SwitchResult } from '../../services/switch.js';
import { printable } from '../../printable.js';
import type { CommandDefinition } from '../command.js';

export const switchCommand: CommandDefinition<object, { profile: string }, SwitchResult> = {
  id: 'switch',
  summary: 'Make PROFILE the default for later commands.',
  description:
    'Commands without --profile then use PROFILE. --profile and MXS_PROFILE still win, so a job that names its profile is never switched under its feet. PROFILE must have a stored session (mxs status --all lists them).',
  examples: ['<%= config.bin %> switch work', '<%= config.bin %> switch default --json'],
  args: {
    profile: { description: 'A profile with a stored session.', required: true },
  },
  flags: {},
  // PROFILE is what this command is about: validated like --profile, and it is the invocation's profile.
  profileArg: 'profile',
  async run({ profile, config, deps, out, env }) {
    const result = await switchService(profile, { sessions: deps.sessions, config });
    out.info(`The default profile is now ${profile}.`);
    if (env.MXS_PROFILE && env.MXS_PROFILE !== profile) out.info(`MXS_PROFILE=${printable(env.MXS_PROFILE)} is set here, so commands in this shell still use that profile.`);
    return { result, exitCode: 0 };
  },
};
