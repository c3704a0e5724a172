/**
 * Whether `host` is this machine's loopback: `localhost`, 127.0.0.0/8, `::1`, or a loopback IPv4
 * address written as IPv4-mapped IPv6 (`::ffff:127.0.0.1`, which WHATWG URL spells `::ffff:7f00:1`).
 * Brackets around an IPv6 address are allowed, so `new URL(x).hostname` can be passed as it is. Any
 * other host name is not loopback: it cannot be judged without resolving it. The one check for every
 * place that allows plain http:// or a listener only on loopback.
 */
export function isLoopbackHost(host: string): boolean {
  // node:net loads node:stream with it: the start-up of `mxs status`/`token` (which check the stored
  // homeserver) would pay for both, so it is asked for only here, when a host is judged.
  const { isIP } = process.getBuiltinModule('node:net') as typeof import('node:net');
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, '$1');
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.split('.')[0] === '127';
  if (isIP(h) !== 6) return false;
  // WHATWG URL writes IPv6 in its shortest form: ::1, and IPv4-mapped 127.x.y.z as ::ffff:7fxx:yyzz.
  const normal = new URL(`http://[${h}]/`).hostname;
  return normal === '[::1]' || /^\[::ffff:7f[0-9a-f]{2}:[0-9a-f]{1,4}\]$/.test(normal);
}
