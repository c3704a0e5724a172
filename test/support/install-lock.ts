import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';

// One cross-process lock for the harnesses that install something into .cache on first use (Synapse's
// venvs, matrix-nio, matrix-js-sdk): parallel jest workers must not install into the same place at once.

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Runs `fn` holding `lockDir` (a directory holding the owner's pid). A lock whose owner is gone, or
 * that is older than 30 minutes, is stale and taken over. `what` names the install in messages;
 * `onWait` is called once when another process holds the lock.
 */
export async function withInstallLock<T>(lockDir: string, what: string, fn: () => Promise<T>, onWait?: () => void): Promise<T> {
  const deadline = Date.now() + 20 * 60_000;
  let announced = false;
  for (;;) {
    try {
      mkdirSync(lockDir);
      writeFileSync(path.join(lockDir, 'pid'), String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      let stale = false;
      try {
        const pid = Number(readFileSync(path.join(lockDir, 'pid'), 'utf8'));
        stale = !pid || !pidAlive(pid) || Date.now() - statSync(lockDir).mtimeMs > 30 * 60_000;
      } catch {
        // pid file not written yet (or lock just released): treat as held unless it is old
        try {
          stale = Date.now() - statSync(lockDir).mtimeMs > 60_000;
        } catch {
          stale = false; // gone: retry at once
        }
      }
      if (stale) {
        rmSync(lockDir, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`Timed out waiting for the ${what} install lock ${lockDir}`);
      if (!announced) onWait?.();
      announced = true;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(lockDir, { recursive: true, force: true });
  }
}
