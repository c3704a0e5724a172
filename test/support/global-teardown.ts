// jest globalTeardown: stops the Synapse that global-setup.ts started (if any) and removes its temp dir.
export default async function globalTeardown(): Promise<void> {
  const handle = globalThis.__MXS_TEST_SYNAPSE__;
  globalThis.__MXS_TEST_SYNAPSE__ = undefined;
  if (handle) await handle.stop();
}
