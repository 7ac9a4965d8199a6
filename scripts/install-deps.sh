#!/bin/bash
# Installs tierlm's Debian build and test dependencies (run as root, or with sudo available).
# Idempotent: packages already present are left alone.
set -euo pipefail
pkgs=(build-essential cmake pkg-config git
      libopenblas-dev libhwloc-dev liburing-dev libcivetweb-dev libjansson-dev
      libpcre2-dev libutf8proc-dev libcurl4-openssl-dev libcmocka-dev
      clang-format)
# node/npm (tokenizer reference in tests) may come from elsewhere: install Debian's only if absent
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then echo "install-deps: all ${#pkgs[@]} packages present"; exit 0; fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${missing[*]}"
