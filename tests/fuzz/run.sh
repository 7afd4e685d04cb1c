#!/usr/bin/env bash
# Runs the fuzzer for $FUZZ_SECONDS (default 60) from the shipped seeds, in a scratch corpus so
# the repository's seeds stay as they are. Fails on any finding (libFuzzer exits non-zero).
# usage: run.sh FUZZER SEED_DIR WORK_DIR
set -u
fuzzer=$1 seeds=$2 work=$3
rm -rf "$work" && mkdir -p "$work/corpus" "$work/artifacts"
cp "$seeds"/* "$work/corpus/"
# -detect_leaks=0: libFuzzer's per-input leak check intermittently reports memory that PoCL's
# worker threads hold across inputs (stacks that end in libstdc++'s operator new). clattn's own
# leaks are judged by the sanitizer build's LeakSanitizer at each test's exit and by the
# reference-count tests (tests/test_reliability.c).
"$fuzzer" -max_total_time="${FUZZ_SECONDS:-60}" -timeout=30 -rss_limit_mb=4096 -detect_leaks=0 \
  -print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" 2>&1 | tail -n 40
exit "${PIPESTATUS[0]}"
