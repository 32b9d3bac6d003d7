#!/usr/bin/env bash
# Installs the Debian 12 packages Kappa needs to build and test. Idempotent.
set -euo pipefail
pkgs=(build-essential cmake pkg-config clang libclang-rt-14-dev
      libuv1-dev libraft-dev libmsgpack-dev libcmocka-dev liblz4-dev libzstd-dev
      python3 libsqlite3-dev libjansson-dev libfuse3-dev fuse3
      libpq-dev postgresql)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -o DPkg::Lock::Timeout=600
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=600 "${missing[@]}"
fi
