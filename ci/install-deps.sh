#!/usr/bin/env bash
# Installs the Debian 12 packages clattn needs to build and test, only those that are missing:
# the build (meson, ninja, gcc, the OpenCL ICD loader and headers, CLBlast), the device for the
# tests (PoCL), the checkers (Oclgrind; clang with its sanitizer runtimes and libFuzzer), and
# Debian's pyopencl, numpy, pytest and venv for the Python package and its tests.
# Usage: ci/install-deps.sh [extra packages...]
set -euo pipefail
want=(meson ninja-build gcc pkg-config python3 ocl-icd-opencl-dev opencl-c-headers
      libclblast-dev libxxhash-dev pocl-opencl-icd clinfo
      oclgrind clang libclang-rt-14-dev libfuzzer-14-dev python3-pyopencl python3-numpy
      python3-pytest python3-venv libopenmpi-dev openmpi-bin "$@")
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ci/install-deps.sh: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
