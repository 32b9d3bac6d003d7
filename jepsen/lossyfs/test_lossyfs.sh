#!/usr/bin/env bash
# Tests kappa-lossyfs on its own: mounts it (strict and immediate directory
# semantics) on temporary directories, runs lossyfs_cases.py (writes, fsyncs,
# one "power failure" drop, checks that exactly the fsynced data and the
# fsynced directory entries survived), and unmounts and removes everything,
# even on failure. Exit 77 (skip) when this machine cannot mount FUSE.
#
# usage: test_lossyfs.sh PATH/TO/kappa-lossyfs
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-}
[ -x "$bin" ] || { echo "usage: $0 PATH/TO/kappa-lossyfs" >&2; exit 2; }
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
# shellcheck source=jepsen/lossyfs/mount_lib.sh
. "$here/mount_lib.sh"
lossyfs_require_fuse

tmp=$(mktemp -d /tmp/kappa-lossyfs-test.XXXXXX)
cleanup() {
    lossyfs_cleanup_all
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rc=0
for mode in strict immediate; do
    mkdir -p "$tmp/$mode/backing" "$tmp/$mode/mnt"
    lossyfs_mount "$bin" "$tmp/$mode/backing" "$tmp/$mode/mnt" "--meta=$mode"
    echo "== lossyfs --meta=$mode"
    if ! /usr/bin/python3 "$here/lossyfs_cases.py" "$mode" "$tmp/$mode/mnt" \
            "$tmp/$mode/backing"; then
        rc=1
        echo "--- lossyfs log:"; cat "$tmp/$mode/lossyfs.mnt.log"
    fi
    lossyfs_umount "$tmp/$mode/mnt"
done
[ $rc -eq 0 ] && echo "PASS: lossyfs" || echo "FAIL: lossyfs"
exit $rc
