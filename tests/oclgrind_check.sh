#!/usr/bin/env bash
# Runs one test case under Oclgrind, a second and independent OpenCL implementation that
# simulates the kernels and checks every memory access: out-of-bounds reads and writes, reads of
# uninitialised values, data races between work-items, and misuse of the OpenCL API. The case
# fails if its own checks fail or if Oclgrind reports anything at all.
#
# usage: oclgrind_check.sh OCLGRIND LOGDIR TEST_EXE CASE [PATH]
#
# -cl-opt-disable: Oclgrind 21.10's uninitialised-value plugin aborts ("Unsupported instruction:
# freeze") on the freeze instruction that LLVM's optimiser emits; unoptimised kernels have none.
set -u
oclgrind=$1 logdir=$2 exe=$3; shift 3
mkdir -p "$logdir"
log="$logdir/$(basename "$exe")-$(echo "$*" | tr ' /' '__').log"
rm -f "$log"
"$oclgrind" --check-api --data-races --uninitialized --build-options -cl-opt-disable \
  --log "$log" "$exe" "$@"
rc=$?
if [ -s "$log" ]; then
  echo "Oclgrind reported:"; head -c 4000 "$log"
  exit 1
fi
exit $rc
