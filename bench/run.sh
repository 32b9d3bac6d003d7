#!/usr/bin/env bash
# bench/run.sh [BUILD_DIR] [OUT.jsonl] - the standard kappa-bench matrix
# against a fresh local kappad (loopback, temporary data directory).
#
# Starts BUILD_DIR/kappad (default ./build) on 127.0.0.1 port 0, runs:
#   1. produce 100 B, acks=all, max rate            (throughput)
#   2. produce 100 B, acks=all, at half of 1's rate  (latency, no coordinated
#                                                     omission)
#   3. consume 100 B: everything run 1 wrote         (throughput)
#   4. produce 1 KiB, acks=all, max rate             (throughput)
#   5. produce 1 KiB at 5,000 rec/s and 6. e2e 1 KiB at 5,000 rec/s (the
#      fixed-rate points of the NATS baseline, /work/shared/bench/nats)
# prints one JSON line per run on stdout (and appends them to OUT.jsonl when
# given), then stops kappad and removes the directory (also on failure or
# Ctrl-C). Progress and tables go to stderr.
#
# Environment: DURATION (s per run after warmup, default 10), WARMUP (s,
# default 2), PARTITIONS (default 1), MATRIX=standard (runs 1-4 only),
# KAPPAD_ARGS (extra kappad arguments), TMPDIR (where the data lives).
set -euo pipefail

build=${1:-./build}
out=${2:-}
duration=${DURATION:-10}
warmup=${WARMUP:-2}
partitions=${PARTITIONS:-1}
kappad=$build/kappad
bench=$build/kappa-bench
for bin in "$kappad" "$bench"; do
  if [ ! -x "$bin" ]; then
    echo "run.sh: $bin not found (build first, or pass the build dir)" >&2
    exit 1
  fi
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/kappa-bench-run-XXXXXX")
kappad_pid=
cleanup() {
  if [ -n "$kappad_pid" ]; then
    kill "$kappad_pid" 2>/dev/null || true
    wait "$kappad_pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck disable=SC2086
"$kappad" --data "$dir/data" --listen 127.0.0.1:0 ${KAPPAD_ARGS:-} \
  2>"$dir/kappad.log" &
kappad_pid=$!
# kappad writes its bound address once it listens: bounded wait, 10 s.
for _ in $(seq 1 200); do
  [ -s "$dir/data/kappad.addr" ] && break
  if ! kill -0 "$kappad_pid" 2>/dev/null; then break; fi
  sleep 0.05
done
if [ ! -s "$dir/data/kappad.addr" ]; then
  echo "run.sh: kappad did not start; its log:" >&2
  tail -n 20 "$dir/kappad.log" >&2
  exit 1
fi
addr=$(cat "$dir/data/kappad.addr")
echo "run.sh: kappad $addr (pid $kappad_pid), data in $dir, nproc $(nproc)" >&2

failed=0
# run NAME ARGS...: one kappa-bench run; its JSON line goes to stdout.
run() {
  local name=$1 line
  shift
  echo "== $name: kappa-bench $* (loadavg $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  if line=$("$bench" "$@" -b "$addr" --json); then :; else
    echo "run.sh: $name exited with status $?" >&2
    failed=1
  fi
  if [ -n "$line" ]; then
    echo "$line"
    if [ -n "$out" ]; then echo "$line" >>"$out"; fi
  fi
  last=$line
}
field() { # field NAME: a number from the last JSON line
  sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$last"
}

common=(--create --partitions "$partitions" --acks all --warmup "$warmup")
run produce-100B-max produce --topic p100 "${common[@]}" --record-size 100 \
  --duration "$duration"
max=$(field records_per_s)
half=$(awk -v m="${max:-0}" 'BEGIN { printf "%d", m / 2 }')
if [ "${half:-0}" -gt 0 ]; then
  run produce-100B-half produce --topic p100half "${common[@]}" \
    --record-size 100 --rate "$half" --duration "$duration"
else
  echo "run.sh: no max rate measured, skipping the half-rate run" >&2
  failed=1
fi
run consume-100B consume --topic p100 --warmup 0
run produce-1KiB-max produce --topic p1k "${common[@]}" --record-size 1024 \
  --duration "$duration"
if [ "${MATRIX:-full}" != standard ]; then
  run produce-1KiB-5k produce --topic p1k5k "${common[@]}" --record-size 1024 \
    --rate 5000 --duration "$duration"
  run e2e-1KiB-5k e2e --topic e2e1k5k "${common[@]}" --record-size 1024 \
    --rate 5000 --duration "$duration"
fi
echo "run.sh: kappad log tail:" >&2
tail -n 5 "$dir/kappad.log" >&2 || true
exit "$failed"
