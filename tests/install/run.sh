#!/usr/bin/env bash
# Installs cellroute into a scratch prefix and builds a tiny consumer against it, with
# find_package(cellroute) (C and C++) and with pkg-config (C); both must route.
set -euo pipefail
build=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
export LD_LIBRARY_PATH="$work/prefix/lib:$work/prefix/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
libdir=$(dirname "$(find "$work/prefix" -name 'libcellroute.so' | head -n1)")
export LD_LIBRARY_PATH="$libdir:$LD_LIBRARY_PATH"

cmake -S "$src/consumer" -B "$work/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
out_c=$("$work/consumer/consumer_c")
out_cxx=$("$work/consumer/consumer_cxx")
[ "$out_c" = "$(grep -E '^#define CR_VERSION_(MAJOR|MINOR|PATCH)' "$src/../../include/cellroute/version.h" | awk '{print $3}' | paste -sd.) 2" ] \
  || { echo "find_package C consumer printed: $out_c"; exit 1; }
[ "$out_cxx" = "3" ] || { echo "find_package C++ consumer printed: $out_cxx"; exit 1; }

export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc -std=c99 -o "$work/pc_consumer" "$src/consumer/main.c" $(pkg-config --define-variable=prefix="$work/prefix" --cflags --libs cellroute)
out_pc=$("$work/pc_consumer")
[ "$out_pc" = "$out_c" ] || { echo "pkg-config consumer printed: $out_pc"; exit 1; }
echo "install test: find_package (C, C++) and pkg-config consumers route: ok"
