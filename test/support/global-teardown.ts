// jest globalTeardown: stops the Synapse and the OAuth homeserver that global-setup.ts started (if any) and
// removes their temp dirs.
export default async function globalTeardown(): Promise<void> {
  const handle = globalThis.__MXS_TEST_SYNAPSE__;
  const oauth = globalThis.__MXS_TEST_OAUTH__;
  globalThis.__MXS_TEST_SYNAPSE__ = undefined;
  globalThis.__MXS_TEST_OAUTH__ = undefined;
  await Promise.all([handle?.stop(), oauth?.stop()]);
}
