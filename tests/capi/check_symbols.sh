#!/usr/bin/env bash
# The C library's exported symbols must be exactly the committed list: an accidental ABI change
# (a symbol added, removed, or a C++ or gRPC symbol leaking) fails here.
set -euo pipefail
lib=$1 expected=$2
actual=$(nm -D --defined-only "$lib" | awk '{print $3}' | sed 's/@.*//' | sort -u)
if ! diff -u "$expected" <(echo "$actual"); then
  echo "exported symbols of $lib differ from $expected (update it only for a deliberate ABI change)"
  exit 1
fi
echo "$(echo "$actual" | wc -l) exported symbols match $expected"
