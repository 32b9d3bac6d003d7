#!/usr/bin/env bash
# End-to-end test of ansible/ on one machine, called from CI:
#
#   bash ansible/tests/run_local.sh [BUILD_DIR]     (default: ./build)
#
# BUILD_DIR holds the real kappad and kappa binaries. The test installs
# Debian's ansible and ansible-lint when missing, lints and syntax-checks
# every playbook, checks the rendered systemd unit with systemd-analyze,
# then deploys three kappad nodes on 127.0.0.11-13 with the local inventory
# (supervisor mode, one directory tree per node under a temporary
# directory), verifies them, checks a second site.yml changes nothing, rolls
# them under a writing producer, makes one node fail its health gate during
# an upgrade, adds and decommissions a fourth node and tears everything
# down. It asserts on the play recap (JSON callback), prints
# "N passed, N failed" and exits non-zero on any failure. Every process it
# starts is stopped and every file it creates is removed, also on Ctrl-C.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ansible_dir=$(dirname "$here")
build_arg=${1:-build}

n_pass=0
n_fail=0
n_skip=0
bg_pids=()
play_pid=""
tmp=""

log() { printf '%s\n' "$*"; }
pass() { n_pass=$((n_pass + 1)); log "PASS: $*"; }
fail() { n_fail=$((n_fail + 1)); log "FAIL: $*"; }
skip() { n_skip=$((n_skip + 1)); log "SKIP: $*"; }
# check NAME CMD...: one test result from a command's exit status.
check() {
    local name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}

# --- cleanup: stop every kappad and helper we started, remove $tmp ---------
kill_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
    local pid f
    # Finish the cleanup even if another Ctrl-C or TERM arrives.
    trap - EXIT
    trap '' INT TERM
    [ -n "$play_pid" ] && kill_pid "$play_pid"
    for pid in "${bg_pids[@]}"; do kill_pid "$pid"; done
    if [ -n "$tmp" ] && [ -d "$tmp" ]; then
        # kappad nodes run detached under start-stop-daemon: find them by
        # their pidfiles and, as a fallback, by our unique directory in
        # their command line.
        for f in "$tmp"/nodes/*/run/kappad.pid; do
            [ -f "$f" ] || continue
            pid=$(cat "$f")
            [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = kappad ] && kill_pid "$pid"
        done
        for f in /proc/[0-9]*/cmdline; do
            pid=${f#/proc/}
            pid=${pid%/cmdline}
            if { tr '\0' ' ' <"$f"; } 2>/dev/null | grep -q -- "--config $tmp/"; then
                kill_pid "$pid"
            fi
        done
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# --- prerequisites ------------------------------------------------------------
if ! command -v ansible-playbook >/dev/null || ! command -v ansible-lint >/dev/null; then
    log "installing Debian's ansible and ansible-lint"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -o DPkg::Lock::Timeout=600 ansible ansible-lint >/dev/null ||
        { apt-get update >/dev/null && apt-get install -y -o DPkg::Lock::Timeout=600 ansible ansible-lint >/dev/null; } ||
        { log "FAIL: cannot install ansible and ansible-lint"; log "0 passed, 1 failed"; exit 1; }
fi
if [ ! -x "$build_arg/kappad" ] || [ ! -x "$build_arg/kappa" ]; then
    log "FAIL: no kappad and kappa in '$build_arg' (pass the cmake build directory)"
    log "0 passed, 1 failed"
    exit 1
fi
build=$(cd "$build_arg" && pwd)

tmp=$(mktemp -d /tmp/kappa-ansible-test.XXXXXX)
mkdir -p "$tmp/nodes" "$tmp/out" "$tmp/ansible-tmp"
cli="$build/kappa"

# Ports base+11 .. base+43 (see inventories/local/hosts.yml), free on all of
# 127.0.0.11-14.
pick_port_base() {
    python3 - <<'EOF'
import random, socket, sys
for _ in range(50):
    base = random.randrange(20000, 60000, 100)
    ok = True
    for node in range(1, 5):
        for k in range(1, 4):
            s = socket.socket()
            try:
                s.bind((f"127.0.0.{10 + node}", base + 10 * node + k))
            except OSError:
                ok = False
            finally:
                s.close()
    if ok:
        print(base)
        sys.exit(0)
sys.exit(1)
EOF
}
port_base=$(pick_port_base) || { log "FAIL: no free port range"; log "0 passed, 1 failed"; exit 1; }
addr() { echo "127.0.0.1$1:$((port_base + 10 * $1 + 1))"; }

export ANSIBLE_CONFIG="$ansible_dir/ansible.cfg"
export ANSIBLE_LOCAL_TEMP="$tmp/ansible-tmp"
export ANSIBLE_REMOTE_TEMP="$tmp/ansible-tmp"
export ANSIBLE_NOCOLOR=1
export ANSIBLE_FORCE_COLOR=0
inv="$ansible_dir/inventories/local/hosts.yml"
evars=(-e "kappa_local_base_dir=$tmp/nodes" -e "kappa_local_build_dir=$build" -e "kappa_local_port_base=$port_base")

# play NAME PLAYBOOK [ARGS...]: run with the JSON callback; the document
# lands in $tmp/out/NAME.json, stderr in NAME.err; returns the exit status.
# The inventory is $inv unless play_inv is set for the call.
play() {
    local name=$1 book=$2
    shift 2
    # In the background and waited for, so that a signal runs the cleanup
    # at once instead of after the playbook.
    (cd "$ansible_dir" && ANSIBLE_STDOUT_CALLBACK=json \
        exec ansible-playbook -i "${play_inv:-$inv}" "${evars[@]}" "$book" "$@" \
        >"$tmp/out/$name.json" 2>"$tmp/out/$name.err") &
    play_pid=$!
    local rc=0
    wait "$play_pid" || rc=$?
    play_pid=""
    return "$rc"
}
# recap NAME EXPR: evaluate a Python expression over the play recap
# (stats: {host: {changed, failures, ...}}) and the plays; exit 0 when true.
recap() {
    python3 - "$tmp/out/$1.json" "$2" <<'EOF'
import json, sys
try:
    doc = json.load(open(sys.argv[1]))
except ValueError as e:
    print(f"  no JSON recap: {e}")
    sys.exit(1)
stats = doc.get("stats", {})
plays = doc.get("plays", [])
changed = sum(h["changed"] for h in stats.values())
failures = sum(h["failures"] + h["unreachable"] for h in stats.values())
def hosts_of(play_name):
    """Hosts each batch (serial) of the named play ran tasks on."""
    out = []
    for p in plays:
        if p["play"]["name"] == play_name:
            hs = set()
            for t in p["tasks"]:
                hs.update(t["hosts"].keys())
            out.append(sorted(hs))
    return out
ok = eval(sys.argv[2])
if not ok:
    print(f"  recap: changed={changed} failures={failures} "
          + " ".join(f"{h}:{s['changed']}/{s['failures']}" for h, s in sorted(stats.items())))
sys.exit(0 if ok else 1)
EOF
}
# Show what went wrong in a failed playbook run (the failed task results).
show_failures() {
    python3 - "$tmp/out/$1.json" <<'EOF' | head -40
import json, sys
try:
    doc = json.load(open(sys.argv[1]))
except ValueError:
    sys.exit(0)
for p in doc.get("plays", []):
    for t in p["tasks"]:
        for h, r in t["hosts"].items():
            if r.get("failed") or r.get("unreachable"):
                print(f"  {h}: {t['task']['name']}: {str(r.get('msg', ''))[:300]}")
EOF
    tail -n 5 "$tmp/out/$1.err" | sed 's/^/  stderr: /'
}
expect_ok() {
    local name=$1
    shift
    if play "$name" "$@" && recap "$name" "failures == 0"; then
        pass "$name"
    else
        fail "$name"
        show_failures "$name"
    fi
}
node_pid() { cat "$tmp/nodes/kappa-$1/run/kappad.pid" 2>/dev/null; }
answers() { timeout 5 "$cli" -b "$(addr "$1")" topic list >/dev/null 2>&1; }

log "ansible-test: build=$build tmp=$tmp ports=$port_base+"

# --- 1. lint and syntax ----------------------------------------------------
if (cd "$ansible_dir" && ansible-lint --nocolor >"$tmp/out/lint.txt" 2>&1); then
    pass "ansible-lint (production profile, offline)"
else
    fail "ansible-lint"
    tail -n 30 "$tmp/out/lint.txt"
fi
for book in site rolling_restart upgrade add_node decommission_node verify teardown tests/render; do
    if (cd "$ansible_dir" && ansible-playbook -i "$inv" "${evars[@]}" --syntax-check "$book.yml" \
        >"$tmp/out/syntax.txt" 2>&1); then
        pass "syntax-check $book.yml"
    else
        fail "syntax-check $book.yml"
        cat "$tmp/out/syntax.txt"
    fi
done

# --- 2. rendered templates ---------------------------------------------------
if play render tests/render.yml -e "kappa_render_dir=$tmp/render" && recap render "failures == 0"; then
    pass "render templates"
    r="$tmp/render/kappa-1"
    if command -v systemd-analyze >/dev/null; then
        # verify exits 0 on warnings, so any output at all is a failure.
        # ReadWritePaths must exist for the check to mean anything.
        mkdir -p "$tmp/nodes/kappa-1/data"
        out=$(cd "$r" && systemd-analyze verify ./kappad.service 2>&1)
        rc=$?
        rmdir "$tmp/nodes/kappa-1/data" "$tmp/nodes/kappa-1" 2>/dev/null
        if [ $rc -eq 0 ] && [ -z "$out" ]; then
            pass "systemd-analyze verify kappad.service (no output)"
        else
            fail "systemd-analyze verify kappad.service: rc=$rc"
            printf '%s\n' "$out" | head -20
        fi
    else
        skip "systemd-analyze verify: systemd-analyze is not installed (Debian package systemd)"
    fi
    check "unit is Type=notify, hardened, ReadWritePaths=data" \
        grep -qzP "Type=notify\n(.|\n)*Restart=on-failure(.|\n)*LimitNOFILE=(.|\n)*NoNewPrivileges=yes\nProtectSystem=strict\nReadWritePaths=$tmp/nodes/kappa-1/data\n" "$r/kappad.service"
    check "cluster config lists the voter group" \
        grep -qx "cluster.voters = 1@127.0.0.11:$((port_base + 12)),2@127.0.0.12:$((port_base + 22)),3@127.0.0.13:$((port_base + 32))" \
        "$r/kappad-cluster.conf"
    check "single-node config has no cluster keys" bash -c "! grep -q '^cluster' '$r/kappad.conf'"
    check "supervisor script parses (sh -n)" sh -n "$r/kappad-ctl"
    if command -v nft >/dev/null && nft -c -f "$r/kappa.nft" >/dev/null 2>&1; then
        pass "nft -c kappa.nft"
    else
        skip "nft -c kappa.nft: nft is not installed or cannot check here (needs the nftables package and netlink)"
    fi
else
    fail "render templates"
    show_failures render
fi

# --- 3. deploy, verify, idempotence --------------------------------------------
expect_ok site-1 site.yml
check "site.yml first run changed something" recap site-1 "changed > 0"
for i in 1 2 3; do
    check "node $i answers on $(addr "$i")" answers "$i"
    check "node $i wrote DATA/kappad.addr = $(addr "$i")" \
        grep -qx "$(addr "$i")" "$tmp/nodes/kappa-$i/data/kappad.addr"
done
check "kappa-4 (not in group kappa) was not deployed" test ! -e "$tmp/nodes/kappa-4"
expect_ok verify-1 verify.yml
expect_ok site-2 site.yml
check "second site.yml run: changed=0" recap site-2 "changed == 0 and failures == 0"

# --- 4. rolling restart under a writing producer -------------------------------
for i in 1 2 3; do "$cli" -b "$(addr "$i")" topic create roll --partitions 1 >/dev/null 2>&1; done

# Producer: unique values, round robin over the nodes, acks=all; an
# acknowledged value (exit 0) is recorded as "NODE VALUE".
producer() {
    local seq=0 node
    while [ ! -e "$tmp/stop" ]; do
        seq=$((seq + 1))
        node=$((seq % 3 + 1))
        if printf 'v%d\n' "$seq" | timeout 5 "$cli" -b "$(addr "$node")" produce roll --acks all \
            >/dev/null 2>&1; then
            echo "$node v$seq" >>"$tmp/acked"
        else
            echo "$node v$seq" >>"$tmp/unacked"
        fi
    done
}
# Monitor: which nodes refuse connections, sampled every 50 ms (one
# connect per node per sample, 1 s timeout) until $tmp/stop exists.
monitor() {
    python3 - "$tmp" "$port_base" <<'PY'
import os, socket, sys, time
tmp, base = sys.argv[1], int(sys.argv[2])
with open(os.path.join(tmp, "monitor"), "w") as out:
    while not os.path.exists(os.path.join(tmp, "stop")):
        down = []
        for i in (1, 2, 3):
            try:
                socket.create_connection((f"127.0.0.1{i}", base + 10 * i + 1), timeout=1).close()
            except OSError:
                down.append(str(i))
        out.write(" ".join([f"{time.time():.3f}"] + down) + "\n")
        out.flush()
        time.sleep(0.05)
PY
}
: >"$tmp/acked"
: >"$tmp/unacked"
producer &
bg_pids+=($!)
monitor &
bg_pids+=($!)
wait_lines() { # FILE N TRIES: until FILE has N lines (bounded)
    local t
    for t in $(seq 1 "$3"); do
        [ "$(wc -l <"$1")" -ge "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
check "producer is writing before the roll" wait_lines "$tmp/acked" 30 300
pids_before="$(node_pid 1) $(node_pid 2) $(node_pid 3)"
expect_ok roll rolling_restart.yml
check "roll went one node per batch: kappa-1, kappa-2, kappa-3" \
    recap roll "hosts_of('Restart one node at a time') == [['kappa-1'], ['kappa-2'], ['kappa-3']]"
n=$(wc -l <"$tmp/acked")
check "producer writes after the roll" wait_lines "$tmp/acked" $((n + 30)) 300
touch "$tmp/stop"
for pid in "${bg_pids[@]}"; do wait "$pid" 2>/dev/null; done
bg_pids=()
rm -f "$tmp/stop"
pids_after="$(node_pid 1) $(node_pid 2) $(node_pid 3)"
check "every node was restarted (new pids: $pids_before -> $pids_after)" \
    python3 -c "import sys; a, b = sys.argv[1].split(), sys.argv[2].split(); sys.exit(not (len(a) == len(b) == 3 and all(x != y for x, y in zip(a, b))))" \
    "$pids_before" "$pids_after"
max_down=$(awk '{ if (NF - 1 > m) m = NF - 1 } END { print m + 0 }' "$tmp/monitor")
saw_down=$(awk 'NF > 1' "$tmp/monitor" | wc -l)
seen_down=$(awk 'NF > 1 { for (i = 2; i <= NF; i++) print $i }' "$tmp/monitor" | sort -u | tr '\n' ' ')
check "at most one node down at a time (max $max_down; $saw_down of $(wc -l <"$tmp/monitor") samples had a node down; seen down: ${seen_down:-none})" \
    test "$max_down" -le 1
check "the monitor saw each node down during the roll" test "$seen_down" = "1 2 3 "
lost=0
for i in 1 2 3; do
    timeout 30 "$cli" -b "$(addr "$i")" consume roll --from-beginning >"$tmp/consumed.$i" 2>/dev/null
    lost_i=$(awk -v n="$i" '$1 == n { print $2 }' "$tmp/acked" | sort | comm -23 - <(sort "$tmp/consumed.$i") | wc -l)
    lost=$((lost + lost_i))
done
check "no acknowledged record lost ($(wc -l <"$tmp/acked") acked, $(wc -l <"$tmp/unacked") refused while down, $lost lost)" \
    test "$lost" -eq 0

# --- 5. a node failing its health gate stops the upgrade -----------------------
# A "new build": the same binaries with a marker appended (ELF ignores it),
# so every node's kappad differs and would be replaced and restarted.
mkdir -p "$tmp/build-new"
cp "$build/kappad" "$build/kappa" "$tmp/build-new/"
printf '\nkappa-ansible-test-upgrade\n' >>"$tmp/build-new/kappad"
new_sum=$(sha256sum <"$tmp/build-new/kappad")
old_sum=$(sha256sum <"$build/kappad")
node_sum() { sha256sum <"$tmp/nodes/kappa-$1/bin/kappad"; }
# kappa-2 gets a config value kappad rejects (exit 2), through a copy of the
# inventory with one host_vars file.
cp -r "$ansible_dir/inventories/local" "$tmp/inv-bad"
mkdir -p "$tmp/inv-bad/host_vars"
printf -- '---\nkappa_extra_config:\n  segment.bytes: "1"\n' >"$tmp/inv-bad/host_vars/kappa-2.yml"
pid3=$(node_pid 3)
if play_inv="$tmp/inv-bad/hosts.yml" play upgrade-bad upgrade.yml -e "kappa_binary_src=$tmp/build-new"; then
    fail "upgrade with a broken kappa-2 must fail"
else
    pass "upgrade with a broken kappa-2 fails"
fi
check "kappa-2 failed its gate" recap upgrade-bad "stats['kappa-2']['failures'] > 0"
check "upgrade touched kappa-1, then kappa-2, and stopped" \
    recap upgrade-bad "hosts_of('Upgrade one node at a time') == [['kappa-1'], ['kappa-2']]"
check "kappa-1 runs the new build" test "$(node_sum 1)" = "$new_sum"
check "kappa-1 answers after its upgrade" answers 1
check "kappa-3 untouched: old binary" test "$(node_sum 3)" = "$old_sum"
check "kappa-3 untouched: same process (pid $pid3)" test "$(node_pid 3)" = "$pid3"
check "kappa-3 still answers" answers 3

# Recovery: fix the inventory (back to the real one) and run the upgrade
# again; it finishes kappa-2 and kappa-3 and leaves kappa-1 alone.
pid1=$(node_pid 1)
expect_ok upgrade-fixed upgrade.yml -e "kappa_binary_src=$tmp/build-new"
for i in 1 2 3; do check "node $i runs the new build" test "$(node_sum "$i")" = "$new_sum"; done
check "kappa-1 was not restarted again (already upgraded)" test "$(node_pid 1)" = "$pid1"
check "kappa-3 was restarted onto the new build" test "$(node_pid 3)" != "$pid3"
expect_ok site-3 site.yml -e "kappa_binary_src=$tmp/build-new"
check "site.yml after the upgrade: changed=0" recap site-3 "changed == 0 and failures == 0"
expect_ok verify-2 verify.yml

# --- 6. add a fourth node, decommission it -------------------------------------------
expect_ok add-node add_node.yml
check "kappa-4 answers on $(addr 4)" answers 4
expect_ok verify-new verify.yml -e kappa_verify_hosts=kappa_new
expect_ok decommission decommission_node.yml -e kappa_decommission_host=kappa-4 -e kappa_decommission_wipe=true
check "kappa-4 stopped" bash -c "! timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.14/$((port_base + 41))' 2>/dev/null"
check "kappa-4 data removed" test ! -e "$tmp/nodes/kappa-4/data"
for i in 1 2 3; do check "node $i unaffected" answers "$i"; done

# --- 7. teardown ------------------------------------------------------------------
if play teardown-unconfirmed teardown.yml; then
    fail "teardown without kappa_teardown_confirm must refuse"
else
    pass "teardown without kappa_teardown_confirm refuses"
fi
check "nodes still answer after a refused teardown" answers 2
pids="$(node_pid 1) $(node_pid 2) $(node_pid 3)"
expect_ok teardown teardown.yml -e kappa_teardown_confirm=yes
for pid in $pids; do check "kappad pid $pid is gone" bash -c "! kill -0 $pid 2>/dev/null"; done
check "data directories removed" bash -c "! ls -d '$tmp'/nodes/*/data 2>/dev/null | grep -q ."

log "ansible-test: skipped $n_skip"
log "$n_pass passed, $n_fail failed"
[ "$n_fail" -eq 0 ]
