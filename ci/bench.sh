#!/usr/bin/env bash
# The benchmark command: installs what is missing, builds, and runs clattn-bench on the default
# OpenCL device (PoCL when there is no GPU). With no arguments: the default suite of model shapes.
# Usage: ci/bench.sh [clattn-bench args, e.g. --check --json out.json, --demo, --help]
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/build.sh
build=${BUILD_DIR:-build}
# PoCL keeps its compiled kernels inside the build folder.
export POCL_CACHE_DIR=${POCL_CACHE_DIR:-$PWD/$build/pocl-cache}
exec "$build/tools/clattn-bench" "$@"
