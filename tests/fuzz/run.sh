#!/bin/sh
# Builds the libFuzzer targets (tests/fuzz/fuzz_*.c) with clang, ASan and
# UBSan in build-fuzz/, then runs each for SECONDS (default 30) starting from
# the committed seed corpus. Exits non-zero if any target crashes, leaks,
# times out or fails a check; reproducers are left in build-fuzz/artifacts/.
#
#   tests/fuzz/run.sh [SECONDS]
#   tests/fuzz/run.sh --regen-corpus     rewrite tests/fuzz/corpus/
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
build=$root/build-fuzz
cc=${CC:-clang}

if [ "${1:-}" = "--regen-corpus" ]; then
    mkdir -p "$build" "$root/tests/fuzz/corpus/fuzz_batch" \
        "$root/tests/fuzz/corpus/fuzz_frame"
    # shellcheck disable=SC2046
    "$cc" -std=c11 -D_GNU_SOURCE -I"$root/include" -I"$root" \
        "$root/tests/fuzz/gen_corpus.c" $(ls "$root"/common/*.c) \
        -lmsgpackc -llz4 -lzstd -o "$build/gen_corpus"
    "$build/gen_corpus" "$root/tests/fuzz/corpus"
    exit 0
fi

secs=${1:-30}
case $secs in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS | --regen-corpus]" >&2
    exit 2
    ;;
esac

# Everything is built with coverage instrumentation (fuzzer-no-link) so the
# fuzzer sees inside common/; the targets themselves add -fsanitize=fuzzer.
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKAPPA_FUZZ=ON -DKAPPA_SANITIZE=ON \
    -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link" >/dev/null

targets=""
for src in "$root"/tests/fuzz/fuzz_*.c; do
    targets="$targets $(basename "$src" .c)"
done
# shellcheck disable=SC2086
cmake --build "$build" -j"$(nproc)" --target $targets

mkdir -p "$build/artifacts"
failed=""
for t in $targets; do
    work=$build/corpus/$t
    mkdir -p "$work"
    seeds=$root/tests/fuzz/corpus/$t
    [ -d "$seeds" ] || seeds=""
    echo "== $t: ${secs}s"
    # shellcheck disable=SC2086
    if ! "$build/tests/$t" -max_len=65536 -max_total_time="$secs" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$build/artifacts/$t-" "$work" $seeds; then
        failed="$failed $t"
    fi
done

if [ -n "$failed" ]; then
    echo "fuzz: FAILED:$failed (see $build/artifacts/)" >&2
    exit 1
fi
echo "fuzz: all targets ran ${secs}s without a failure"
