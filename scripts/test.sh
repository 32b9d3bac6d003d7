#!/usr/bin/env bash
# The README's second command: installs what is needed, builds, and runs every
# test: clang-format check, unit and integration tests on a -Werror build,
# the same under ASan+UBSan, and a short libFuzzer run of every decoder.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc)

echo "== format"
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build*')
clang-format --dry-run --Werror $files

echo "== build (gcc, -Werror) and test"
BUILD_DIR=build scripts/build.sh
(cd build && ctest --output-on-failure -j"$jobs" -L 'unit|sim|integration')

echo "== build with ASan+UBSan and test"
BUILD_DIR=build-asan BUILD_TYPE=Debug scripts/build.sh -DKAPPA_SANITIZE=ON \
  -DKAPPA_TEST_TIMEOUT_MULTIPLIER=3
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 KAPPA_TEST_TIMEOUT_MULTIPLIER=3 \
   ctest --output-on-failure -j"$jobs" -L 'unit|sim|integration')

echo "== ansible: lint, deploy on 127.0.0.11-13, rolling restart under load"
bash ansible/tests/run_local.sh build

echo "== fuzz (${KAPPA_FUZZ_SECONDS:-30} s per target)"
tests/fuzz/run.sh "${KAPPA_FUZZ_SECONDS:-30}"
echo "all tests passed"
