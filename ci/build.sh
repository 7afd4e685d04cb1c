#!/usr/bin/env bash
# Installs what is missing, then configures (warnings are errors) and builds into $BUILD_DIR
# (default: build), with any extra meson options in $MESON_ARGS. Used by ci/test.sh and
# ci/bench.sh. Quiet when all goes well; a failing step prints its whole output.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install-deps.sh
build=${BUILD_DIR:-build}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Runs one step with its output in $log, shown only if the step fails.
step() {
  if ! "$@" >"$log" 2>&1; then
    echo "ci/build.sh: '$*' failed:" >&2
    cat "$log" >&2
    exit 1
  fi
}
# shellcheck disable=SC2086
if [ -d "$build/meson-private" ]; then
  step meson setup --reconfigure -Dwerror=true ${MESON_ARGS:-} "$build"
else
  step meson setup -Dwerror=true ${MESON_ARGS:-} "$build"
fi
step ninja -C "$build"
