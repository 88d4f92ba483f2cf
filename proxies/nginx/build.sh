#!/usr/bin/env bash
# Builds ngx_http_cellroute_module.so against the nginx sources Debian's nginx-dev installs,
# configured with the flags Debian's nginx was built with (its conf_flags, with --with-compat),
# so that the packaged nginx's load_module accepts it.
#
#   build.sh OUT_DIR INCLUDE_DIRS LIB_DIR [NGINX_SRC]
#
# INCLUDE_DIRS: where cellroute.h and cellroute/version.h are (space-separated); LIB_DIR: where
# libcellroute.so is (the module's run path points there too). NGINX_SRC defaults to
# /usr/share/nginx/src. The sources are copied into OUT_DIR, since nginx's configure writes
# beside them; it runs again only when its inputs change.
set -euo pipefail
out=$1 incs=$2 libdir=$3 src=${4:-/usr/share/nginx/src}
module_dir=$(cd "$(dirname "$0")" && pwd)

if [ ! -f "$src/configure" ] || [ ! -f "$src/conf_flags" ]; then
  echo "build.sh: no nginx sources in $src (install nginx-dev)" >&2
  exit 1
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
inputs="$src $incs $libdir $(cat "$module_dir/config" "$0" | cksum)"
if [ ! -f "$out/objs/Makefile" ] || [ "$(cat "$out/configured" 2>/dev/null)" != "$inputs" ]; then
  rm -rf "$out/nginx" "$out/objs" "$out/configured"
  cp -r "$src" "$out/nginx"
  (
    cd "$out/nginx"
    # shellcheck disable=SC1091
    . ./conf_flags
    export CELLROUTE_INCS="$incs"
    export CELLROUTE_LIBS="-L$libdir -Wl,-rpath,$libdir -lcellroute"
    ./configure \
      --with-cc-opt="-g -O2 -fstack-protector-strong -Wformat -Werror=format-security -fPIC -D_FORTIFY_SOURCE=2" \
      --with-ld-opt="-Wl,-z,relro -Wl,-z,now -fPIC" \
      "${NGX_CONF_FLAGS[@]}" --add-dynamic-module="$module_dir" --builddir="$out/objs"
  ) > "$out/configure.log" 2>&1 || {
    cat "$out/configure.log" >&2
    exit 1
  }
  echo "$inputs" > "$out/configured"
fi
(cd "$out/nginx" && make -s -f "$out/objs/Makefile" modules)
cp "$out/objs/ngx_http_cellroute_module.so" "$out/ngx_http_cellroute_module.so"
