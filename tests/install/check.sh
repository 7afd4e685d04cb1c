#!/usr/bin/env bash
# Installs the build into a scratch prefix with `meson install --destdir`, then builds and runs
# tests/install/consumer.c with nothing but `pkg-config --cflags --libs clattn` from that prefix.
# usage: check.sh BUILD_DIR SOURCE_DIR SCRATCH
set -euo pipefail
build=$1 src=$2 scratch=$3
rm -rf "$scratch" && mkdir -p "$scratch"
meson install -C "$build" --destdir "$scratch/root" --no-rebuild --quiet
pc=$(dirname "$(find "$scratch/root" -name clattn.pc | head -n 1)")
[ -f "$pc/clattn.pc" ] || { echo "no clattn.pc installed"; exit 1; }
export PKG_CONFIG_PATH="$pc" PKG_CONFIG_SYSROOT_DIR="$scratch/root"
echo "pkg-config --cflags --libs clattn: $(pkg-config --cflags --libs clattn)"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror -o "$scratch/consumer" "$src/tests/install/consumer.c" \
   $(pkg-config --cflags --libs clattn) -lm
libdir=$(dirname "$(find "$scratch/root" -name 'libclattn.so.[0-9]*' | head -n 1)")
LD_LIBRARY_PATH="$libdir" "$scratch/consumer"
# The library it ran is the installed one, not the build tree's, under the SONAME the ABI
# number gives (include/clattn.h's ABI policy).
abi=$(sed -n 's/^#define CLATTN_ABI_VERSION \([0-9]*\)$/\1/p' "$src/include/clattn.h")
LD_LIBRARY_PATH="$libdir" ldd "$scratch/consumer" | grep -q "libclattn.so.$abi => $libdir/libclattn"
# libclattn_mpi, when the build has it: a program using clattn_mpi.h builds and links from
# nothing but `pkg-config clattn-mpi` (it is not run: that takes mpirun).
if [ -f "$pc/clattn-mpi.pc" ]; then
  printf '#include <clattn_mpi.h>\nint main(void) { clattn_mpi_ring_params p = clattn_mpi_ring_params_default(); return (int)p.layout; }\n' > "$scratch/mpi_consumer.c"
  # shellcheck disable=SC2046
  # (MPI's own module lies outside the scratch root, which PKG_CONFIG_SYSROOT_DIR would prefix
  # to its paths: its flags are asked for without it.)
  cc -std=c11 -Wall -Werror -o "$scratch/mpi_consumer" "$scratch/mpi_consumer.c" \
     $(pkg-config --cflags --libs clattn-mpi) \
     $(env -u PKG_CONFIG_SYSROOT_DIR pkg-config --cflags --libs mpi-c)
  echo "pkg-config --cflags --libs clattn-mpi: ok"
fi
