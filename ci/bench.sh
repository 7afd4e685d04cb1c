#!/usr/bin/env bash
# The benchmark command: installs what is missing, builds, and runs clattn-bench on the default
# OpenCL device (PoCL when there is no GPU). With no arguments: the default suite of model shapes.
# Usage: ci/bench.sh [clattn-bench args, e.g. --check --json out.json, --demo, --help]
#        ci/bench.sh --plot DIR [clattn-bench args for every run, e.g. --device 1:0]
# --plot DIR runs the flash suite with --peak, --decode, and --startup and --startup-llama twice
# each (cold: fresh, empty clattn and PoCL caches; warm: the same caches again), each with --json
# into DIR, then draws them with ci/plot.py (matplotlib, installed if missing) as DIR/flash.png,
# DIR/decode.png and DIR/startup.png. About 3 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/build.sh
build=${BUILD_DIR:-build}
# PoCL keeps its compiled kernels inside the build folder.
export POCL_CACHE_DIR=${POCL_CACHE_DIR:-$PWD/$build/pocl-cache}
bench=$PWD/$build/tools/clattn-bench
[ "${1:-}" = "--plot" ] || exec "$bench" "$@"

[ $# -ge 2 ] || { echo "usage: ci/bench.sh --plot DIR [clattn-bench args]" >&2; exit 2; }
dir=$2
shift 2
bash ci/install-deps.sh python3-matplotlib
mkdir -p "$dir"
echo "{\"date\": \"$(date -u +%F)\", \"command\": \"ci/bench.sh --plot $dir${*:+ $*}\"}" >"$dir/meta.json"
"$bench" --peak --suite flash --json "$dir/flash.json" "$@"
"$bench" --decode --json "$dir/decode.json" "$@"
cold=$(mktemp -d)
trap 'rm -rf "$cold"' EXIT
for mode in startup startup-llama; do
  # Each mode starts from empty caches of its own, so neither warms the other's.
  mkdir -p "$cold/$mode/clattn" "$cold/$mode/pocl"
  for run in cold warm; do
    CLATTN_CACHE_DIR=$cold/$mode/clattn POCL_CACHE_DIR=$cold/$mode/pocl \
      "$bench" "--$mode" --json "$dir/$mode-$run.json" "$@"
  done
done
# Debian's interpreter: matplotlib comes from apt, which a pyenv or venv python3 would not see.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
"$py" ci/plot.py "$dir"
