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

# Python: pip builds the package against this prefix, offline, in a fresh venv (Debian's
# setuptools and wheel through --system-site-packages and --no-build-isolation), from a copy
# so the source tree stays clean; then a wheel.
cp -r "$src/../../bindings/python" "$work/pysrc"
/usr/bin/python3 -m venv --system-site-packages "$work/venv"
"$work/venv/bin/pip" install -q --no-index --no-build-isolation "$work/pysrc" >/dev/null
out_py=$(cd "$work" && "$work/venv/bin/python" -c '
import cellroute
print(cellroute.__version__, cellroute.Router().route(path="/o/acme-corp/x").cell_id)')
[ "$out_py" = "$expected_version 3" ] || { echo "pip-installed Python package printed: $out_py"; exit 1; }
# The same against the build tree instead of an install (a developer's checkout).
cp -r "$src/../../bindings/python" "$work/pysrc-tree"
/usr/bin/python3 -m venv --system-site-packages "$work/venv-tree"
(unset PKG_CONFIG_PATH
 CELLROUTE_SOURCE_DIR="$src/../.." CELLROUTE_BUILD_DIR="$build" \
   "$work/venv-tree/bin/pip" install -q --no-index --no-build-isolation "$work/pysrc-tree" >/dev/null
 out=$(cd "$work" && "$work/venv-tree/bin/python" -c 'import cellroute; print(cellroute.Router().route(path="/o/acme-corp/x").cell_id)')
 [ "$out" = "3" ] || { echo "Python package built against the build tree printed: $out"; exit 1; })
"$work/venv/bin/pip" wheel -q --no-index --no-build-isolation --no-deps -w "$work/wheels" "$work/pysrc" >/dev/null
ls "$work/wheels"/cellroute-"$expected_version"-*.whl >/dev/null \
  || { echo "pip wheel made no cellroute wheel: $(ls "$work/wheels")"; exit 1; }

# Ruby: gem build, then gem install --local into a fresh GEM_HOME, compiled against this
# prefix through pkg-config, and again through --with-cellroute-dir.
(cd "$src/../../bindings/ruby" && gem build -q cellroute.gemspec --output "$work/cellroute.gem" >/dev/null)
GEM_HOME="$work/gems" gem install -q --local --no-document "$work/cellroute.gem" >/dev/null
out_rb=$(cd "$work" && GEM_HOME="$work/gems" ruby -e '
require "cellroute"
puts "#{Cellroute::VERSION} #{Cellroute::Router.new.route(path: "/o/acme-corp/x").cell_id}"')
[ "$out_rb" = "$expected_version 3" ] || { echo "gem-installed Ruby package printed: $out_rb"; exit 1; }
(unset PKG_CONFIG_PATH
 GEM_HOME="$work/gems-dir" gem install -q --local --no-document "$work/cellroute.gem" -- \
   --with-cellroute-dir="$prefix" --with-cellroute-lib="$(dirname "$pcdir")" >/dev/null
 out=$(cd "$work" && GEM_HOME="$work/gems-dir" ruby -e 'require "cellroute"; print Cellroute::Router.new.route(path: "/o/acme-corp/x").cell_id')
 [ "$out" = "3" ] || { echo "gem installed --with-cellroute-dir printed: $out"; exit 1; })
echo "install test: relocated prefix; find_package and pkg-config (C, C++) consumers, the CLI, pip, gem: ok"
