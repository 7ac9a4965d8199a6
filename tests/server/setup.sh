#!/bin/sh
# setup.sh BUILD_SUBDIR: installs the official OpenAI client pinned by package-lock.json into
# BUILD_SUBDIR/node_modules (npm ci) for the server tests. Idempotent: npm ci runs only when
# node_modules was not installed from this lock file.
# Exit 0 ready, 77 skip (no node/npm, or npm ci failed, e.g. offline), 1 error.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILD_SUBDIR" >&2
    exit 1
fi
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)

skip() {
    echo "setup.sh: skipping the server client tests: $*" >&2
    exit 77
}

command -v node >/dev/null 2>&1 || skip "node is not installed (Node.js 18 or newer is needed)"
command -v npm >/dev/null 2>&1 || skip "npm is not installed"
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
[ "$node_major" -ge 18 ] 2>/dev/null || skip "node $(node --version 2>/dev/null) is too old (need 18+)"

for f in package.json package-lock.json; do
    cmp -s "$here/$f" "$out/$f" || cp "$here/$f" "$out/$f"
done
stamp="$out/node_modules/.tierlm-lock"
if ! cmp -s "$out/package-lock.json" "$stamp" 2>/dev/null; then
    log="$out/npm-ci.log"
    if ! (cd "$out" && npm ci --no-audit --no-fund --loglevel=error >"$log" 2>&1); then
        tail -n 20 "$log" >&2
        skip "npm ci failed in $out (log: $log)"
    fi
    cp "$out/package-lock.json" "$stamp"
fi
exit 0
