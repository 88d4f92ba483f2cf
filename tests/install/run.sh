#!/usr/bin/env bash
# Installs cellroute into a scratch prefix, moves it elsewhere, and builds tiny consumers
# against it the ways a user would: find_package(cellroute) (C and C++) and pkg-config (C and
# C++) with only PKG_CONFIG_PATH set. Nothing may need LD_LIBRARY_PATH or --define-variable:
# every consumer, and the installed CLI, must run as built.
set -euo pipefail
build=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
unset LD_LIBRARY_PATH
cmake --install "$build" --prefix "$work/staged" >/dev/null
mv "$work/staged" "$work/prefix"  # relocated: nothing may remember where it was installed
prefix="$work/prefix"
pcdir=$(dirname "$(find "$prefix" -name 'cellroute.pc' | head -n1)")
expected_version=$(grep -E '^#define CR_VERSION_(MAJOR|MINOR|PATCH)' "$src/../../include/cellroute/version.h" | awk '{print $3}' | paste -sd.)

cmake -S "$src/consumer" -B "$work/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
out_c=$("$work/consumer/consumer_c")
out_cxx=$("$work/consumer/consumer_cxx")
[ "$out_c" = "$expected_version 2" ] || { echo "find_package C consumer printed: $out_c"; exit 1; }
[ "$out_cxx" = "3" ] || { echo "find_package C++ consumer printed: $out_cxx"; exit 1; }

export PKG_CONFIG_PATH="$pcdir"
[ "$(pkg-config --variable=prefix cellroute)" -ef "$prefix" ] \
  || { echo "cellroute.pc prefix: $(pkg-config --variable=prefix cellroute), not $prefix"; exit 1; }
libs=$(pkg-config --libs cellroute)
[ "$(echo "$libs" | grep -o -- '-l[^ ]*' | wc -l)" = 1 ] \
  || { echo "a C consumer must need one library: pkg-config --libs cellroute: $libs"; exit 1; }
cc -std=c99 -o "$work/pc_consumer_c" "$src/consumer/main.c" $(pkg-config --cflags --libs cellroute)
out_pc=$("$work/pc_consumer_c")
[ "$out_pc" = "$out_c" ] || { echo "pkg-config C consumer printed: $out_pc"; exit 1; }
c++ -o "$work/pc_consumer_cxx" "$src/consumer/main.cpp" $(pkg-config --cflags --libs cellroute++)
out_pcxx=$("$work/pc_consumer_cxx")
[ "$out_pcxx" = "$out_cxx" ] || { echo "pkg-config C++ consumer printed: $out_pcxx"; exit 1; }

# The installed programs find their libraries from where they are.
"$prefix/bin/cellroute" --version | grep -qx "$expected_version" \
  || { echo "installed cellroute --version: $("$prefix/bin/cellroute" --version)"; exit 1; }
out_cli=$("$prefix/bin/cellroute" route --path /o/acme-corp/x | grep -o '"cell_id":[0-9]*')
[ "$out_cli" = '"cell_id":3' ] || { echo "installed cellroute routed: $out_cli"; exit 1; }
echo "install test: relocated prefix; find_package and pkg-config (C, C++) consumers and the CLI run: ok"
