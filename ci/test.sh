#!/usr/bin/env bash
# The test command: installs what is missing, configures and builds (warnings are errors), runs
# the whole suite on the default OpenCL device (PoCL when there is no GPU), and ends with the line
# "N passed, N failed" counted from meson's test log.
# Usage: ci/test.sh [meson test args, e.g. --suite sdpa]      env: BUILD_DIR (default: build)
set -uo pipefail
cd "$(dirname "$0")/.."
bash ci/build.sh || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
build=${BUILD_DIR:-build}
rm -f "$build/meson-logs/testlog.json"
meson test -C "$build" --print-errorlogs "$@"
rc=$?
python3 ci/summary.py "$build/meson-logs/testlog.json" || exit 1
exit $rc
