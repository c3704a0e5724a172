import { spawn } from 'node:child_process';
import type { ChildExit, ChildLauncher, StartedChild } from '../services/exec.js';

/**
 * Signals mxs passes on to the command it runs. SIGINT, SIGTERM and SIGHUP are the contract's; SIGQUIT
 * and SIGUSR2 too, because left alone they would end mxs and orphan the command. (SIGUSR1 belongs to
 * Node's inspector; job-control signals reach the whole process group from the terminal anyway.)
 */
export const FORWARDED_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR2'];

/**
 * The real process side of `mxs exec`: the command in mxs's own process group (so that the terminal's
 * job control and Ctrl-C reach it as they would without mxs) with inherited stdin, stdout and stderr.
 */
export const nodeLauncher: ChildLauncher = {
  start(command, args, env) {
    return new Promise<StartedChild>((resolve, reject) => {
      let child;
      try {
        child = spawn(command, args, { env, stdio: 'inherit' });
      } catch (err) {
        // An empty or NUL-carrying name is refused before any process exists.
        reject(err);
        return;
      }
      const exited = new Promise<ChildExit>((done) => child.once('exit', (code, signal) => done({ code, signal })));
      child.once('error', reject);
      child.once('spawn', () => {
        child.removeListener('error', reject);
        // A signal sent to a child that has just died fails with ESRCH: nothing to report.
        child.on('error', () => {});
        resolve({
          pid: child.pid!,
          exited,
          kill(signal) {
            if (child.exitCode !== null || child.signalCode !== null) return;
            try {
              child.kill(signal);
            } catch {
              // gone meanwhile
            }
          },
        });
      });
    });
  },
  onSignal(forward) {
    const handlers = FORWARDED_SIGNALS.map((signal) => {
      const handler = () => forward(signal);
      process.on(signal, handler);
      return [signal, handler] as const;
    });
    return () => {
      for (const [signal, handler] of handlers) process.removeListener(signal, handler);
    };
  },
};
