#!/usr/bin/env bash
# A route-table lookup prefetches its bucket's lines (ADR 0010). Nothing else shows it: a lookup
# without them decides the same, only slower, and a prefetch written as a fold expression once
# compiled to nothing for a day (ADR 0018). So the built library's Lookup must contain them.
set -euo pipefail
objdump=$1 lib=$2
listing=$("$objdump" -d --no-show-raw-insn -C "$lib")
# The function itself, not its PLT stub (which is listed first, as "...) const@plt>:").
body=$(awk '/^[0-9a-f]+ <cellroute::RouteTable::Reader::Lookup\(.*\) const>:$/ {on=1; next}
            on && /^$/ {exit} on' <<<"$listing")
if [ -z "$body" ]; then
  echo "no cellroute::RouteTable::Reader::Lookup in $lib"
  exit 1
fi
count=$(grep -cE '\s(prefetch[a-z0-9]*|prfm)\s' <<<"$body" || true)
if [ "$count" -eq 0 ]; then
  echo "RouteTable::Reader::Lookup in $lib prefetches nothing"
  exit 1
fi
echo "RouteTable::Reader::Lookup prefetches $count lines"
