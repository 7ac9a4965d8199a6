#!/bin/sh
# setup.sh: makes the golden outputs test_chat compares against.
#   tests/chat/setup.sh BUILD_DIR [OUT_JSON]
# Installs @huggingface/jinja 0.5.11 (pinned by package-lock.json) with `npm ci` into
# BUILD_DIR/chat-golden and renders every case of cases.json into OUT_JSON (default
# BUILD_DIR/chat-golden/golden.json). Then, where python3 has jinja2, renders the same cases
# with Python Jinja set up as transformers sets it up and fails if the two disagree (a
# disagreement needs an entry in cases.json's "overrides"). Exit 77 (skip) without node and
# npm, or when npm cannot install (no registry).
# Then: test_chat OUT_JSON tests/chat [shared/models]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 1 ]; then
    echo "usage: $0 BUILD_DIR [OUT_JSON]" >&2
    exit 2
fi
work=$1/chat-golden
out=${2:-$work/golden.json}
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "setup.sh: node and npm are needed to render the golden chat templates; skipping"
    exit 77
fi
mkdir -p "$work"
cp "$here/package.json" "$here/package-lock.json" "$here/render_golden.mjs" "$work/"
if ! (cd "$work" && npm ci --no-audit --no-fund --loglevel=error); then
    echo "setup.sh: npm ci failed (is the npm registry reachable?); skipping"
    exit 77
fi
node "$work/render_golden.mjs" "$here/cases.json" "$out"
if python3 -c 'import jinja2' 2>/dev/null; then
    python3 "$here/render_golden.py" "$here/cases.json" "$work/golden_py.json"
    python3 "$here/render_golden.py" --compare "$out" "$work/golden_py.json"
else
    echo "setup.sh: python3 has no jinja2; the cross-check with transformers' renderer is skipped"
fi
