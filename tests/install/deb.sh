#!/usr/bin/env bash
# Builds the Debian packages from this build (cpack -G DEB), installs them into the machine with
# dpkg -i as an operator would, routes with the installed CLI, builds a C consumer against the
# installed -dev package, then purges the packages again.
set -euo pipefail
build=$1 src=$2
if [ "$(id -u)" -ne 0 ]; then
  echo "deb test: dpkg -i needs root; not run"
  exit 77
fi
packages=(cellroute-tools libcellroute-dev libcellroute0)
for p in "${packages[@]}"; do
  if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
    echo "deb test: $p is already installed on this machine; not replacing it"
    exit 1
  fi
done
work=$(mktemp -d)
cleanup() {
  dpkg -P "${packages[@]}" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
unset LD_LIBRARY_PATH PKG_CONFIG_PATH

# What `make deb` runs.
(cd "$work" && cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/out" >/dev/null)
debs=("$work"/out/*.deb)
[ "${#debs[@]}" = 3 ] || { echo "deb test: expected 3 packages, got: ${debs[*]}"; exit 1; }
dpkg -i "${debs[@]}" >/dev/null

expected_version=$(grep -E '^#define CR_VERSION_(MAJOR|MINOR|PATCH)' "$src/../../include/cellroute/version.h" | awk '{print $3}' | paste -sd.)
[ "$(command -v cellroute)" = /usr/bin/cellroute ] || { echo "deb test: cellroute is $(command -v cellroute)"; exit 1; }
[ "$(/usr/bin/cellroute --version)" = "$expected_version" ] || { echo "deb test: --version"; exit 1; }
out=$(/usr/bin/cellroute route --path /o/acme-corp/x | grep -o '"cell_id":[0-9]*')
[ "$out" = '"cell_id":3' ] || { echo "deb test: the installed CLI routed: $out"; exit 1; }
/usr/bin/cellroute-topology-server --version >/dev/null

[ "$(pkg-config --modversion cellroute)" = "$expected_version" ] || { echo "deb test: pkg-config"; exit 1; }
cc -std=c99 -o "$work/consumer" "$src/consumer/main.c" $(pkg-config --cflags --libs cellroute)
[ "$("$work/consumer")" = "$expected_version 2" ] || { echo "deb test: C consumer"; exit 1; }
dpkg -L libcellroute0 | grep -q '/usr/share/doc/.*LICENSE' || { echo "deb test: no LICENSE"; exit 1; }
echo "deb test: $(basename -a "${debs[@]}" | paste -sd' ') installed with dpkg -i; the CLI and a C consumer work: ok"
