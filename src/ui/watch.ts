import type { Output } from './output.js';

/** Redraws `render(now)` in place once a second until `expiresAt` passes or Ctrl-C. */
export async function watch(out: Output, render: (now: number) => string[], expiresAt: string | null): Promise<void> {
  let previous = 0;
  const draw = () => {
    const lines = render(Date.now());
    const up = previous > 0 ? `\x1b[${previous}A` : '';
    out.raw(up + lines.map((l) => `\x1b[2K${l}\n`).join(''));
    previous = lines.length;
  };
  draw();
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      draw();
      if (expiresAt !== null && Date.parse(expiresAt) <= Date.now()) stop();
    }, 1000);
    const stop = () => {
      clearInterval(timer);
      process.off('SIGINT', stop);
      resolve();
    };
    process.on('SIGINT', stop);
  });
}
