#!/usr/bin/env bash
# Builds a parent Meson project that uses clattn as a subproject (dependency('clattn') resolved
# by meson.override_dependency) and runs tests/install/consumer.c from it.
# usage: subproject.sh SOURCE_DIR SCRATCH
set -euo pipefail
src=$1 scratch=$2
rm -rf "$scratch" && mkdir -p "$scratch/parent/subprojects"
ln -s "$src" "$scratch/parent/subprojects/clattn"
cp "$src/tests/install/consumer.c" "$scratch/parent/"
cat > "$scratch/parent/meson.build" <<'MESON'
project('parent', 'c', default_options : ['c_std=c11'])
clattn = dependency('clattn', fallback : ['clattn', 'clattn_dep'])
executable('consumer', 'consumer.c', dependencies : [clattn, meson.get_compiler('c').find_library('m')])
MESON
meson setup "$scratch/build" "$scratch/parent" --wrap-mode=forcefallback >/dev/null
ninja -C "$scratch/build" consumer >/dev/null
"$scratch/build/consumer"
