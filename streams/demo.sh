#!/bin/sh
# The Kappa demo: generate click events into the log, compute page views
# with a stream job into SQLite, query the result, then reprocess the same
# log with new logic as version v2 and promote it, the Kappa way.
#
#   streams/demo.sh [-b HOST:PORT] [--build DIR] [--events N] [--keep]
#
# Without -b a kappad is started on 127.0.0.1 (ephemeral port) in a
# temporary directory and stopped at the end. Binaries come from --build
# (default: $KAPPA_BUILD, else build/ at the top of the repository).
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
build=${KAPPA_BUILD:-$here/build}
bootstrap=
events=20000
keep=0
while [ $# -gt 0 ]; do
    case $1 in
    -b) bootstrap=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --events) events=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "usage: $0 [-b HOST:PORT] [--build DIR] [--events N] [--keep]" >&2
       exit 2 ;;
    esac
done
job=$build/kappa-job
kappad=$build/kappad
[ -x "$job" ] || { echo "demo: $job not found (build first, or --build DIR)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/kappa-demo.XXXXXX")
kappad_pid=
cleanup() {
    if [ -n "$kappad_pid" ]; then
        kill "$kappad_pid" 2>/dev/null || true
        wait "$kappad_pid" 2>/dev/null || true
    fi
    if [ "$keep" = 1 ]; then
        echo "demo: kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT INT TERM

if [ -z "$bootstrap" ]; then
    [ -x "$kappad" ] || { echo "demo: $kappad not found" >&2; exit 1; }
    "$kappad" --data "$work/data" --listen 127.0.0.1:0 --log.level warn \
        2>"$work/kappad.log" &
    kappad_pid=$!
    tries=0
    while [ ! -s "$work/data/kappad.addr" ]; do
        tries=$((tries + 1))
        if [ $tries -gt 100 ] || ! kill -0 "$kappad_pid" 2>/dev/null; then
            echo "demo: kappad did not start:" >&2
            cat "$work/kappad.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    bootstrap=$(cat "$work/data/kappad.addr")
    echo "== started kappad on $bootstrap"
fi

db=$work/clicks.sqlite
topic=demo_clicks_$(date +%s)
q() { # one query, as a table when the sqlite3 shell is there
    if command -v sqlite3 >/dev/null 2>&1; then
        sqlite3 -header -column "$db" "$1"
    else
        "$job" query --db "$db" --header "$1"
    fi
}
top_pages="SELECT key AS page, sum(value) AS views FROM clickstream_page_views
           GROUP BY key ORDER BY views DESC, page LIMIT 5"

echo "== 1. generate $events click events into topic $topic"
"$job" gen clickstream -b "$bootstrap" --topic "$topic" --events "$events" \
    --seed 42 --partitions 4

echo "== 2. run the clickstream job, version v1, from offset 0"
"$job" run clickstream -b "$bootstrap" --topic "$topic" --db "$db" \
    --version v1 --from-beginning --exit-at-end --quiet

echo "== 3. query the result (readers use the view clickstream_page_views)"
q "$top_pages"

echo "== 4. new logic: page views without social-media referrals; replay the"
echo "      whole log as v2 into its own tables while v1 keeps serving"
"$job" run clickstream -b "$bootstrap" --topic "$topic" --db "$db" \
    --version v2 --where 'ref!=social' --from-beginning --exit-at-end --quiet
"$job" status --db "$db" -b "$bootstrap" --table

echo "== 5. promote v2 (refused unless it has caught up) and retire v1"
"$job" promote clickstream v2 --db "$db" -b "$bootstrap"
"$job" retire clickstream v1 --db "$db"
q "$top_pages"
"$job" status --db "$db" -b "$bootstrap" --table
echo "== done"
