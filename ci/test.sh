#!/usr/bin/env bash
# The test command: installs what is missing, configures and builds (warnings are errors), runs
# the whole suite on the default OpenCL device (PoCL when there is no GPU), then the Python
# package's pytest suite over the installed library (ci/python.sh), then the C tests again in a
# build with AddressSanitizer and UBSan (leak checks included), then the fuzzer over the
# validation layer for a bounded time, and ends with the line "N passed, N failed" counted from
# meson's test logs and pytest's report.
#
# Usage: ci/test.sh [meson test args]   e.g. ci/test.sh --suite sdpa (main build only)
# env:   BUILD_DIR (default build), PYTHON=0 to skip the Python package, SANITIZE=0 to skip the
#        sanitizer build, FUZZ_SECONDS
#        (default 60; 0 skips the fuzzer)
set -uo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
logs=()
# MPI is required here (install-deps installs it), so that its tests never vanish silently.
MESON_ARGS="-Dmpi=enabled ${MESON_ARGS:-}" bash ci/build.sh ||
  { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
rm -f "$build/meson-logs/testlog.json"
meson test -C "$build" --print-errorlogs "$@"
rc=$?
logs+=("$build/meson-logs/testlog.json")

if [ $# -eq 0 ] && [ "${PYTHON:-1}" != 0 ]; then
  echo "== the Python package (pytest), over the library as meson installs it"
  rm -f "$build/meson-logs/pytest.xml"
  BUILD_DIR=$build bash ci/python.sh || rc=1
  logs+=("$build/meson-logs/pytest.xml")
fi

if [ $# -eq 0 ] && [ "${SANITIZE:-1}" != 0 ]; then
  echo "== AddressSanitizer + UBSan build"
  if BUILD_DIR=$build-asan MESON_ARGS="-Db_sanitize=address,undefined -Db_lundef=false -Dmpi=enabled -Dtest_pocl_cache=$PWD/$build/pocl-cache" bash ci/build.sh; then
    # Leak checks on the create/destroy, error and cache paths. LeakSanitizer's exit-time
    # thread tracer now and then crashes ("Tracer caught signal 11") in processes where PoCL's
    # worker threads are busy, so the kernel-heavy suites run with ASan and UBSan but without
    # the exit-time leak check.
    rm -f "$build-asan/meson-logs/testlog.json"
    export LSAN_OPTIONS=suppressions=$PWD/ci/lsan.supp:print_suppressions=0
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    ASAN_OPTIONS=detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1 \
      meson test -C "$build-asan" --print-errorlogs --suite unit --suite errors \
        --suite reliability --suite cache || rc=1
    mv "$build-asan/meson-logs/testlog.json" "$build-asan/meson-logs/testlog-leaks.json"
    logs+=("$build-asan/meson-logs/testlog-leaks.json")
    ASAN_OPTIONS=detect_leaks=0:strict_string_checks=1:detect_stack_use_after_return=1 \
      meson test -C "$build-asan" --print-errorlogs --suite ops --suite sdpa --suite mha \
        --suite kv --suite kv_paged --suite events --suite varlen --suite mpi || rc=1
    logs+=("$build-asan/meson-logs/testlog.json")
  else
    echo "sanitizer build failed"; rc=1
  fi
fi

if [ $# -eq 0 ] && [ "${FUZZ_SECONDS:-60}" != 0 ]; then
  echo "== libFuzzer over the validation layer (${FUZZ_SECONDS:-60} s)"
  if BUILD_DIR=$build-fuzz MESON_ARGS="-Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false -Dmpi=disabled -Dtest_pocl_cache=$PWD/$build/pocl-cache" \
     CC=clang bash ci/build.sh; then
    rm -f "$build-fuzz/meson-logs/testlog.json"
    FUZZ_SECONDS=${FUZZ_SECONDS:-60} \
    LSAN_OPTIONS=suppressions=$PWD/ci/lsan.supp:print_suppressions=0 \
      meson test -C "$build-fuzz" --print-errorlogs --suite fuzz || rc=1
    logs+=("$build-fuzz/meson-logs/testlog.json")
  else
    echo "fuzzer build failed"; rc=1
  fi
fi

python3 ci/summary.py "${logs[@]}" || exit 1
exit $rc
