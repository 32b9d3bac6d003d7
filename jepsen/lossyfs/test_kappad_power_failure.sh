#!/usr/bin/env bash
# Power-failure test of one kappad on kappa-lossyfs: every record acknowledged
# at acks=all, and every acknowledged topic creation, must survive
# "kill -9 kappad + drop every un-fsynced write".
#
#   round 1: create topics t (small segments, so rolls happen) and u;
#            produce 1..N to t; kill -9; drop; restart; t and u exist and t
#            holds exactly 1..N at offsets 0..N-1.
#   round 2: produce N+1..2N (acknowledged), then kill -9 in the middle of a
#            third produce; drop; restart; t holds exactly 1..2N at offsets
#            0..2N-1, and whatever follows is a gap-free prefix of the third
#            batch (unacknowledged records may be lost, never garbled).
#
# The data directory is made (and its entry fsynced) before kappad starts,
# as an operator would provision it; everything under it is kappad's job.
# KAPPA_LOSSYFS_META=immediate runs with LazyFS-like directory semantics
# (only file data is lost); the default, strict, also loses directory
# entries whose parent directory was never fsynced.
#
# usage: test_kappad_power_failure.sh KAPPA_LOSSYFS KAPPAD KAPPA_CLI
# Exit 0 pass, 1 fail, 77 skip (no FUSE here).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
[ $# -eq 3 ] || { echo "usage: $0 KAPPA_LOSSYFS KAPPAD KAPPA_CLI" >&2; exit 2; }
lossyfs=$(abs "$1")
kappad=$(abs "$2")
kappa=$(abs "$3")
meta=${KAPPA_LOSSYFS_META:-strict}
n=${KAPPA_POWER_FAILURE_RECORDS:-100000}
mult=${KAPPA_TEST_TIMEOUT_MULTIPLIER:-1}
# shellcheck source=jepsen/lossyfs/mount_lib.sh
. "$here/mount_lib.sh"
lossyfs_require_fuse

tmp=$(mktemp -d /tmp/kappa-power-failure.XXXXXX)
mnt=$tmp/mnt
data=$mnt/data
kappad_pid=
producer_pid=

cleanup() {
    if [ -n "$producer_pid" ]; then kill "$producer_pid" 2>/dev/null || true; fi
    if [ -n "$kappad_pid" ]; then
        kill -9 "$kappad_pid" 2>/dev/null || true
        wait "$kappad_pid" 2>/dev/null || true
    fi
    lossyfs_cleanup_all
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "FAIL: $*" >&2
    echo "--- lossyfs log (what each drop took):" >&2
    cat "$tmp/lossyfs.mnt.log" >&2 || true
    echo "--- kappad log (last 30 lines):" >&2
    tail -30 "$tmp/kappad.log" >&2 || true
    exit 1
}

# Bounded wait: COND is retried TRIES times, DELAY seconds apart.
wait_until() {
    local tries=$1 delay=$2
    shift 2
    for _ in $(seq 1 "$tries"); do
        if "$@"; then return 0; fi
        sleep "$delay"
    done
    return 1
}

start_kappad() {
    rm -f "$data/kappad.addr"
    "$kappad" --data "$data" --listen 127.0.0.1:0 >>"$tmp/kappad.log" 2>&1 &
    kappad_pid=$!
    wait_until $((100 * mult)) 0.1 test -s "$data/kappad.addr" ||
        fail "kappad did not start"
    addr=$(cat "$data/kappad.addr")
}

# kill -9 kappad, then lose what it did not fsync.
power_failure() {
    kill -9 "$kappad_pid"
    wait "$kappad_pid" 2>/dev/null || true
    kappad_pid=
    lossyfs_drop "$mnt"
    echo "power failure: $(grep 'drop:' "$tmp/lossyfs.mnt.log" | tail -1)"
}

produce() { # FIRST LAST: must all be acknowledged
    local out
    out=$(seq "$1" "$2" | timeout $((60 * mult)) "$kappa" -b "$addr" \
        produce t --acks all 2>&1) || fail "produce $1..$2: $out"
    case $out in
    *" 0 failed"*) ;;
    *) fail "produce $1..$2 not all acknowledged: $out" ;;
    esac
}

# Checks that t holds exactly 1..ACKED at offsets 0..ACKED-1, followed by at
# most a gap-free run of ACKED+1, ACKED+2, ...
check_log() {
    local acked=$1
    timeout $((60 * mult)) "$kappa" -b "$addr" consume t --from-beginning \
        --format '%o %v' >"$tmp/consumed" 2>"$tmp/consume.err" ||
        fail "consume: $(cat "$tmp/consume.err")"
    /usr/bin/python3 - "$tmp/consumed" "$acked" <<'EOF' || fail "log check"
import sys
path, acked = sys.argv[1], int(sys.argv[2])
rows = [line.split() for line in open(path)]
bad = [(i, r) for i, r in enumerate(rows)
       if len(r) != 2 or r != [str(i), str(i + 1)]]
if len(rows) < acked:
    print("lost acknowledged records: read %d, %d acknowledged; first "
          "missing value %d" % (len(rows), acked, len(rows) + 1))
    sys.exit(1)
if bad:
    i, r = bad[0]
    print("offset %d holds %r, expected value %d (%d bad rows)"
          % (i, r, i + 1, len(bad)))
    sys.exit(1)
print("log ok: %d acknowledged records at their offsets, %d more "
      "(unacknowledged) survived" % (acked, len(rows) - acked))
EOF
}

check_topics() {
    local list
    list=$(timeout $((30 * mult)) "$kappa" -b "$addr" topic list 2>&1) ||
        fail "topic list: $list"
    for topic in t u; do
        grep -qx "$topic" <<<"$list" || grep -qw "^$topic" <<<"$list" ||
            fail "acknowledged topic $topic is gone after the power failure (topics: $list)"
    done
}

mkdir -p "$tmp/backing" "$mnt"
lossyfs_mount "$lossyfs" "$tmp/backing" "$mnt" "--meta=$meta"
echo "== kappad power failure on lossyfs --meta=$meta, $n records per round"
mkdir "$data"
/usr/bin/python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)' "$mnt"

# Round 1.
start_kappad
"$kappa" -b "$addr" topic create t --partitions 1 \
    --config segment.bytes=65536 >/dev/null || fail "create t"
"$kappa" -b "$addr" topic create u --partitions 3 >/dev/null || fail "create u"
produce 1 "$n"
power_failure
start_kappad
check_topics
check_log "$n"

# Round 2: acknowledged records, then a crash in the middle of a produce.
produce $((n + 1)) $((2 * n))
seq $((2 * n + 1)) $((22 * n)) |
    "$kappa" -b "$addr" produce t --acks all >/dev/null 2>&1 &
producer_pid=$!
sleep 0.1
power_failure
wait "$producer_pid" 2>/dev/null || true
producer_pid=
start_kappad
check_topics
check_log $((2 * n))
echo "PASS: kappad power failure ($meta)"
