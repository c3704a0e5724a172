import type { Hint } from '../../errors.js';
import { doctorAllService, doctorService, type DoctorReport } from '../../services/doctor/index.js';
import { configDir, statePaths } from '../../store/paths.js';
import { doctorLines, doctorSummary, type DoctorView } from '../../ui/doctor.js';
import type { CommandDefinition } from '../command.js';
import type { CommandContext } from '../context.js';

export type DoctorOutput = DoctorView | { profiles: DoctorView[] };

/** `mxs doctor`: checks everything a session depends on and says what to fix; changes nothing. */
export const doctorCommand: CommandDefinition<{ all: boolean; refresh: boolean }, object, DoctorOutput> = {
  id: 'doctor',
  summary: 'Check everything a session depends on, locally and on the server, and say what to fix.',
  description:
    'Checks, in order: config (files private, format known), storage (the secret store answers and holds the tokens), lock, server (/versions), discovery (.well-known), auth (OAuth issuer), clock (skew against the server), token (whoami), refresh (a refresh token is stored), device. Read-only: it never refreshes, writes or deletes anything, unless --refresh. Exit 0 when nothing failed (warnings allowed), else the first failure\'s code: 3 network, 4 authentication, 6 storage.',
  examples: ['<%= config.bin %> doctor', '<%= config.bin %> doctor --all --json', '<%= config.bin %> doctor --profile bot --refresh'],
  flags: {
    all: { type: 'boolean', summary: 'Every stored profile.' },
    refresh: { type: 'boolean', summary: 'Also try a refresh (this one changes the stored tokens) and report it as the refresh check.' },
  },
  async run(ctx, { flags }) {
    const root = configDir(ctx.env);
    const deps = { ...ctx.deps, paths: statePaths(root), root };
    const opts = { refresh: flags.refresh, timeoutMs: ctx.invocation.timeoutMs };
    const reports = flags.all ? await doctorAllService(deps, opts) : [await doctorService(ctx.profile, deps, opts)];
    const views = reports.map((r) => view(r, ctx));
    const exitCode = reports.find((r) => r.exitCode !== 0)?.exitCode ?? 0;
    return { result: flags.all ? { profiles: views } : views[0]!, exitCode };
  },
  text(ctx, result) {
    const { out } = ctx;
    const views = 'profiles' in result ? result.profiles : [result];
    if (views.length === 0) {
      out.data('No stored sessions.');
      return;
    }
    const blocks = views.map((v) => doctorLines(v, out.color, `Profile ${v.profile}`).join('\n'));
    out.data(`${blocks.join('\n\n')}\n\n${doctorSummary(views)}`);
  },
};

function view(r: DoctorReport, ctx: CommandContext): DoctorView {
  // Every command in a fix names the profile checked (`mxs login … --profile bot` under --all).
  const fix = (h: Hint | null) => (h === null ? null : ctx.hint(h));
  return { profile: r.profile, ok: r.ok, checks: r.findings.map((f) => ({ id: f.id, status: f.status, detail: f.detail, fix: fix(f.fix) })) };
}
