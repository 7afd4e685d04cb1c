#!/usr/bin/env bash
# Runs the fuzzer for $FUZZ_SECONDS (default 60) from the shipped seeds, in a scratch corpus so
# the repository's seeds stay as they are. Fails on any finding (libFuzzer exits non-zero).
# usage: run.sh FUZZER SEED_DIR WORK_DIR
set -u
fuzzer=$1 seeds=$2 work=$3
rm -rf "$work" && mkdir -p "$work/corpus" "$work/artifacts"
cp "$seeds"/* "$work/corpus/"
# Leak checks off (-detect_leaks=0 and ASan's at exit): libFuzzer's per-input check and the
# check at exit report memory that PoCL allocates with operator new while it compiles kernels and
# runs them on its worker threads; with clang's fast unwinder the stacks stop at operator new, so
# no suppression can name PoCL. clattn's own leaks are judged by the sanitizer build's
# LeakSanitizer at each test's exit and by the reference-count tests (tests/test_reliability.c).
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
"$fuzzer" -max_total_time="${FUZZ_SECONDS:-60}" -timeout=30 -rss_limit_mb=4096 -detect_leaks=0 \
  -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" 2>&1 | tail -n 60
exit "${PIPESTATUS[0]}"
