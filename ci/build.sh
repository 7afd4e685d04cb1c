#!/usr/bin/env bash
# Installs what is missing, then configures (warnings are errors) and builds into $BUILD_DIR
# (default: build), with any extra meson options in $MESON_ARGS. Used by ci/test.sh and
# ci/bench.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/install-deps.sh
build=${BUILD_DIR:-build}
# shellcheck disable=SC2086
if [ -d "$build/meson-private" ]; then
  meson setup --reconfigure -Dwerror=true ${MESON_ARGS:-} "$build" >/dev/null
else
  meson setup -Dwerror=true ${MESON_ARGS:-} "$build" >/dev/null
fi
ninja -C "$build" >/dev/null
