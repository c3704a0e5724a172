import { Exit, loginHint } from '../../errors.js';
import { statusAllService, statusService, type StatusResult } from '../../services/status.js';
import { shortStatusLine, statusLines } from '../../ui/render.js';
import type { CommandDefinition } from '../command.js';
import { reportAfterResult } from '../report-error.js';

export interface StatusFlags {
  all: boolean;
  watch: boolean;
  short: boolean;
}

export type StatusOutput = StatusResult | { defaultProfile: string; profiles: StatusResult[] };

/** `mxs status`: the stored session and its countdown, from local state only. */
export const statusCommand: CommandDefinition<StatusFlags, object, StatusOutput> = {
  id: 'status',
  // Local only; --watch stops its countdown on SIGINT itself.
  sigint: 'own',
  summary: 'Show the stored session and how long its access token has left.',
  description:
    'Reads local state only: no network, no keychain. Exit 0 when the token is valid, 5 when it has expired but can be refreshed (run mxs refresh), 4 when not logged in or expired for good.',
  examples: ['<%= config.bin %> status', '<%= config.bin %> status --all --json', '<%= config.bin %> status --watch', 'PS1=\'$(<%= config.bin %> status --short) \\$ \''],
  flags: {
    all: { type: 'boolean', summary: 'Every stored profile.' },
    watch: { type: 'boolean', summary: 'Live countdown on a terminal until expiry or Ctrl-C.', exclusive: ['json'] },
    // One line for a prompt: a second document (--json) or many profiles (--all) have no place in it.
    short: { type: 'boolean', summary: 'One line for shell prompts (user and time left); nothing at all when not logged in.', exclusive: ['all', 'json', 'watch'] },
  },
  // The exit code is 0 when the token is valid, 5 when it has expired but can be refreshed, 4 when not logged in or expired for good.
  async run(ctx, { flags, json }) {
    const { out, deps } = ctx;
    const view = ctx.invocation;
    if (flags.all) {
      // The default is the one chosen with `mxs switch` (else `default`), whatever --profile or
      // MXS_PROFILE say for this one run: that is the setting a user of --all wants to see.
      const defaultProfile = ctx.defaultProfile();
      const { reports, unreadable } = await statusAllService(deps);
      if (!json) {
        if (reports.length === 0 && unreadable.length === 0) out.info(`No stored sessions. ${ctx.hint(loginHint(defaultProfile))}`);
        reports.forEach((r, i) => {
          const lines = statusLines(r, deps.now(), out.color, view);
          // A profile named default that is the default says so by its name.
          if (r.status.profile === defaultProfile && defaultProfile !== 'default') lines[0] += ' (default)';
          out.data((i ? '\n' : '') + lines.join('\n'));
        });
        if (reports.length > 0 && ![...reports.map((r) => r.status.profile), ...unreadable.map((u) => u.profile)].includes(defaultProfile)) {
          out.info(`The default profile ${defaultProfile} has no session. ${ctx.hint(loginHint(defaultProfile))}, or choose another: mxs switch PROFILE`);
        }
      }
      // The profiles that could be read are shown; each one that could not is named with its error (exit 6).
      for (const { error } of unreadable) reportAfterResult(error, out, view);
      return { result: { defaultProfile, profiles: reports.map((r) => r.status) }, exitCode: unreadable.length > 0 ? Exit.storage : 0 };
    }
    let report = await statusService(ctx.profile, deps);
    if (flags.short) {
      const line = shortStatusLine(report, deps.now(), out.color);
      if (line !== null) out.data(line);
      return { result: report.status, exitCode: report.exitCode };
    }
    if (!json) {
      if (flags.watch && out.interactive && report.status.loggedIn) {
        // Re-read each second: a refresh by another mxs process shows up live.
        const { watch } = await import('../../ui/watch.js');
        await watch(out, async () => {
          report = await statusService(ctx.profile, deps);
          return { lines: statusLines(report, deps.now(), out.color, view), done: report.status.expired || !report.status.loggedIn };
        });
      } else {
        out.data(statusLines(report, deps.now(), out.color, view).join('\n'));
      }
    }
    const s = report.status;
    if (!s.loggedIn) out.info(ctx.hint(loginHint(s.profile)));
    else if (report.exitCode === 5) out.info(ctx.hint(['The access token has expired. Run: ', { next: 'refresh', profile: s.profile }]));
    else if (report.exitCode === 4) out.info(ctx.hint(loginHint(s.profile, s.homeserver ?? undefined)));
    return { result: s, exitCode: report.exitCode };
  },
};
