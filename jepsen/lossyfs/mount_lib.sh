# shellcheck shell=bash
# Shared by the lossyfs test scripts (sourced, not run): mounting a lossyfs
# with cleanup on every exit path, and skipping (exit 77) when this machine
# cannot mount FUSE filesystems at all.
#
# lossyfs_mount LOSSYFS_BIN BACKING MNT [--meta=...]  -> sets LOSSYFS_PID
# lossyfs_umount MNT
# lossyfs_drop MNT                                     (the power failure)

LOSSYFS_MOUNTS=()
LOSSYFS_PIDS=()

skip() {
    echo "SKIP: $*" >&2
    exit 77
}

# Exits 77 when FUSE cannot work here; says why.
lossyfs_require_fuse() {
    [ -c /dev/fuse ] || skip "/dev/fuse is missing (no FUSE in this kernel or container)"
    command -v fusermount3 >/dev/null 2>&1 || skip "fusermount3 is not installed (Debian package fuse3)"
    if [ "$(id -u)" -ne 0 ] && [ ! -r /dev/fuse ]; then
        skip "/dev/fuse is not accessible to uid $(id -u)"
    fi
}

lossyfs_mount() {
    local bin=$1 backing=$2 mnt=$3 meta=${4:-}
    local log
    log=$(dirname "$mnt")/lossyfs.$(basename "$mnt").log
    # shellcheck disable=SC2086
    "$bin" $meta "$backing" "$mnt" 2>"$log" &
    LOSSYFS_PID=$!
    LOSSYFS_PIDS+=("$LOSSYFS_PID")
    for _ in $(seq 1 100); do
        if grep -qs " $mnt fuse" /proc/mounts; then
            LOSSYFS_MOUNTS+=("$mnt")
            return 0
        fi
        if ! kill -0 "$LOSSYFS_PID" 2>/dev/null; then
            break
        fi
        sleep 0.05
    done
    cat "$log" >&2
    # Errors from libfuse's mount layer (not from lossyfs itself, whose
    # messages start with "lossyfs:") mean FUSE cannot be used here.
    if grep -qiE "^(fuse: (device not found|mount failed|failed to|bad mount point)|fusermount3?: )|permission denied|operation not permitted" "$log"; then
        skip "cannot mount a FUSE filesystem here: $(head -c 200 "$log")"
    fi
    echo "FAIL: lossyfs did not mount on $mnt" >&2
    return 1
}

lossyfs_umount() {
    local mnt=$1
    if grep -qs " $mnt fuse" /proc/mounts; then
        fusermount3 -u "$mnt" 2>/dev/null || {
            sleep 0.5
            fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"
        }
    fi
}

lossyfs_drop() {
    echo drop >"$1/.lossyfs/drop"
}

# The trap handler: unmount everything mounted, stop every lossyfs started.
lossyfs_cleanup_all() {
    local m p
    for m in "${LOSSYFS_MOUNTS[@]}"; do
        lossyfs_umount "$m"
    done
    for p in "${LOSSYFS_PIDS[@]}"; do
        if kill -0 "$p" 2>/dev/null; then
            for _ in $(seq 1 40); do
                kill -0 "$p" 2>/dev/null || break
                sleep 0.05
            done
            kill "$p" 2>/dev/null || true
        fi
        wait "$p" 2>/dev/null || true
    done
}
