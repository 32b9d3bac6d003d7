#!/usr/bin/env bash
# The README's first command: installs what is needed, builds, starts a local
# 3-node cluster (`kappa dev up`), and runs a small demo on it (create a
# replicated topic, produce, consume, describe, cluster status, one benchmark
# run), printing what happens. Everything it starts is stopped on exit
# (`kappa dev down`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh
bin=$PWD/build
dir=$(mktemp -d /tmp/kappa-demo-XXXXXX)
cleanup() {
  "$bin/kappa" dev down --dir "$dir/cluster" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== starting a 3-node cluster on 127.0.0.1 (data and logs in $dir/cluster)"
brokers=$("$bin/kappa" dev up --nodes 3 --dir "$dir/cluster" | tail -n 1)
echo "   bootstrap servers: $brokers"
k() { echo "\$ kappa $*" >&2; "$bin/kappa" -b "$brokers" "$@"; }
# A topic is created once the metadata group commits it; the other nodes
# apply it a moment later. Wait until every node knows it.
wait_topic() {
  local a
  for a in ${brokers//,/ }; do
    for _ in $(seq 1 100); do
      "$bin/kappa" -b "$a" topic describe "$1" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
}

echo "== create a topic with 3 partitions, each replicated on all 3 nodes"
k topic create clicks --partitions 3 --replication-factor 3
wait_topic clicks
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

echo "== cluster status: nodes, metadata leader, per partition leader, replicas, commit index, follower lag"
k cluster status

echo "== throughput: kappa-bench produce 100 B records, acks=all, replication factor 3"
k topic create bench --partitions 4 --replication-factor 3
wait_topic bench
"$bin/kappa-bench" produce -b "$brokers" --topic bench \
  --record-size 100 --records 2000000 --acks all

echo "== stopping the cluster"
"$bin/kappa" dev down --dir "$dir/cluster"
tail -n 2 "$dir/cluster/node1.log"
echo "demo done"
