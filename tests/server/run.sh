#!/bin/sh
# run.sh TEST.mjs ARGS...: runs one server test with node, or skips (77) without node.
command -v node >/dev/null 2>&1 || { echo "skip: node is not installed"; exit 77; }
exec node "$@"
