import { Flags } from '@oclif/core';
import { MxsCommand } from '../base-command.js';
import { loginHint } from '../errors.js';
import { statusAllService, statusService, type StatusReport, type StatusResult } from '../services/status.js';
import { statusLines } from '../ui/render.js';
import { watch } from '../ui/watch.js';

export default class Status extends MxsCommand {
  static override summary = 'Show the stored session and how long its access token has left.';
  static override description =
    'Reads local state only: no network, no keychain. Exit 0 when the token is valid, 5 when it has expired but can be refreshed (run mxs refresh), 4 when not logged in or expired for good.';
  static override examples = ['<%= config.bin %> status', '<%= config.bin %> status --all --json', '<%= config.bin %> status --watch'];
  static override flags = {
    all: Flags.boolean({ summary: 'Every stored profile.' }),
    watch: Flags.boolean({ summary: 'Live countdown on a terminal until expiry or Ctrl-C.', exclusive: ['json'] }),
  };

  async run(): Promise<StatusResult | { profiles: StatusResult[] }> {
    const { flags } = await this.parse(Status);
    const { profile, deps } = this.setup(flags);
    if (flags.all) {
      const reports = await statusAllService(deps);
      if (!this.jsonEnabled()) {
        if (reports.length === 0) this.out.info('No stored sessions. Run: mxs login SERVER');
        reports.forEach((r, i) => this.out.data((i ? '\n' : '') + statusLines(r, Date.now(), this.out.color).join('\n')));
      }
      return { profiles: reports.map((r) => r.status) };
    }
    const report = await statusService(profile, deps);
    if (!this.jsonEnabled()) {
      if (flags.watch && this.out.interactive && report.status.loggedIn) {
        await watch(this.out, (now) => statusLines({ ...report, status: { ...report.status } }, now, this.out.color), report.status.expiresAt);
      } else {
        this.out.data(statusLines(report, Date.now(), this.out.color).join('\n'));
      }
    }
    this.explain(report);
    return report.status;
  }

  private explain(report: StatusReport): void {
    this.exitWith(report.exitCode);
    const s = report.status;
    if (!s.loggedIn) this.out.info(loginHint(s.profile));
    else if (report.exitCode === 5) this.out.info(`The access token has expired. Run: mxs refresh${s.profile === 'default' ? '' : ` --profile ${s.profile}`}`);
    else if (report.exitCode === 4) this.out.info(loginHint(s.profile, s.homeserver ?? undefined));
  }
}
