# Builds the native extension against libcellroute (the C API): found with pkg-config, or
# under --with-cellroute-dir=PREFIX (or --with-cellroute-include/--with-cellroute-lib).
require "mkmf"

include_dir, lib_dir = dir_config("cellroute")
if lib_dir
  # Given by hand: the extension finds the library there at run time too.
  $LDFLAGS << " -Wl,-rpath,#{lib_dir}"
  have_library("cellroute", "cr_version", "cellroute.h") or
    abort "cellroute: no libcellroute in #{lib_dir} (--with-cellroute-dir=PREFIX)"
elsif !pkg_config("cellroute")
  # (cellroute.pc gives the run path to its libdir with the library.)
  abort "cellroute not found: install libcellroute and its cellroute.pc and set PKG_CONFIG_PATH " \
        "(e.g. /opt/cellroute/lib/pkgconfig), or pass --with-cellroute-dir=PREFIX"
end
$CFLAGS << " -std=c99 -Wall -Wextra -Wno-unused-parameter"
have_header("cellroute.h") or abort "cellroute.h not found#{include_dir ? " in #{include_dir}" : ''}"
have_func("rb_thread_call_without_gvl", "ruby/thread.h")
create_makefile("cellroute/cellroute")
