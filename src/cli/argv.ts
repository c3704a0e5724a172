// What a user types, as oclif expects it. The contract lets global flags stand before the command
// (`mxs -p work status`), and `mxs -h` and `mxs help status` show help; oclif wants the command id
// first and knows neither form. Used by bin/run.js for both the fast path and oclif.

const WITH_VALUE = new Set(['-p', '--profile', '--storage', '--timeout']);
const INLINE_VALUE = /^(?:--(?:profile|storage|timeout)=|-p.)/;
const BOOLEAN = new Set(['--json', '--verbose']);

export function normalizeArgv(argv: string[]): string[] {
  if (argv.length === 1 && (argv[0] === '-h' || argv[0] === 'help')) return ['--help'];
  if (argv[0] === 'help' && argv.length > 1) return [...argv.slice(1).filter((a) => a !== '-h' && a !== '--help'), '--help'];
  const leading: string[] = [];
  let i = 0;
  while (i < argv.length) {
    const a = argv[i]!;
    if (WITH_VALUE.has(a) && i + 1 < argv.length) {
      leading.push(a, argv[i + 1]!);
      i += 2;
    } else if (INLINE_VALUE.test(a) || BOOLEAN.has(a)) {
      leading.push(a);
      i++;
    } else {
      break;
    }
  }
  const rest = argv.slice(i);
  if (leading.length === 0 || rest.length === 0) return argv;
  if (rest[0] === '-h' || rest[0] === '--help') return ['--help'];
  if (rest[0] === 'help') return normalizeArgv(rest).concat(leading.filter((a) => a !== '--json'));
  return [rest[0]!, ...leading, ...rest.slice(1)];
}
