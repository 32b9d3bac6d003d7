#!/usr/bin/env bash
# The README's first command: installs what is needed, builds, starts a local
# kappad, and runs a small demo (create a topic, produce, consume, describe),
# printing what happens. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh
bin=$PWD/build
dir=$(mktemp -d /tmp/kappa-demo-XXXXXX)
cleanup() {
  if [ -f "$dir/kappad.pid" ]; then kill "$(cat "$dir/kappad.pid")" 2>/dev/null || true; fi
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

echo "== starting kappad (data in $dir)"
"$bin/kappad" --data "$dir/data" --listen 127.0.0.1:0 2>"$dir/kappad.log" &
echo $! >"$dir/kappad.pid"
for _ in $(seq 1 200); do [ -s "$dir/data/kappad.addr" ] && break; sleep 0.05; done
addr=$(cat "$dir/data/kappad.addr")
echo "   listening on $addr"
k() { echo "\$ kappa $*" >&2; "$bin/kappa" -b "$addr" "$@"; }

echo "== create a topic with 3 partitions"
k topic create clicks --partitions 3
k topic list

echo "== produce 100000 click events (key:value lines, acks=all, lz4)"
seq 1 100000 | awk '{printf "user%d:{\"page\":\"/p/%d\",\"n\":%d}\n", $1 % 97, $1 % 13, $1}' \
  | k produce clicks --key-separator : --compression lz4

echo "== consume the first 5 records of partition 0"
k consume clicks --partition 0 --from-beginning --count 5 --format 'p=%p o=%o k=%k v=%v'

echo "== count every record back"
n=$(k consume clicks --from-beginning | wc -l)
echo "   read $n records"

echo "== describe"
k topic describe clicks

echo "== throughput: kappa-bench produce 100 B records, acks=all"
"$bin/kappa-bench" produce -b "$addr" --topic bench --create --partitions 4 \
  --record-size 100 --records 2000000 --acks all

echo "== stopping kappad"
kill "$(cat "$dir/kappad.pid")"; wait || true; rm -f "$dir/kappad.pid"
tail -n 3 "$dir/kappad.log"
echo "demo done"
