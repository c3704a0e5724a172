// Tests are TypeScript run as ESM through ts-jest: transpile only, because tsconfig.json says
// `isolatedModules: true` (ts-jest's own `isolatedModules` option is deprecated and warns on every
// run); `npm run typecheck` type-checks.
// Integration suites spawn bin/run.js, so `npm test` builds dist/ first.
export default {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: { '^.+\\.ts$': ['ts-jest', { useESM: true, tsconfig: '<rootDir>/tsconfig.json' }] },
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  testTimeout: 60000,
  // One real Synapse for the whole run (MXS_TEST_SYNAPSE=0 turns it off); see test/support/synapse.ts.
  globalSetup: '<rootDir>/test/support/global-setup.ts',
  globalTeardown: '<rootDir>/test/support/global-teardown.ts',
  // `npm run coverage`: line and branch coverage of src/ (text summary on stdout, coverage/coverage-summary.json).
  // Only code that runs inside jest's processes counts: unit tests and in-process tests, not the CLI processes
  // the integration suites spawn.
  collectCoverageFrom: ['<rootDir>/src/**/*.ts'],
  coverageReporters: ['text-summary', 'json-summary'],
  coverageDirectory: '<rootDir>/coverage',
};
