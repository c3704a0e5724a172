import type { Output } from './output.js';

export interface Frame {
  lines: string[];
  /** Stop after drawing this frame (the token expired, the session went away). */
  done: boolean;
}

/** Redraws a frame in place once a second until a frame says it is done, or Ctrl-C. */
export async function watch(out: Output, frame: () => Promise<Frame>): Promise<void> {
  let previous = 0;
  const draw = async (): Promise<boolean> => {
    const { lines, done } = await frame();
    const up = previous > 0 ? `\x1b[${previous}A` : '';
    out.raw(up + lines.map((l) => `\x1b[2K${l}\n`).join(''));
    previous = lines.length;
    return done;
  };
  if (await draw()) return;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      draw().then((done) => done && stop(), stop);
    }, 1000);
    const stop = () => {
      clearInterval(timer);
      process.off('SIGINT', stop);
      resolve();
    };
    process.on('SIGINT', stop);
  });
}
