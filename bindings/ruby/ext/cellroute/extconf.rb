# Builds the native extension against libcellroute (the C API), found with pkg-config.
require "mkmf"

unless pkg_config("cellroute")
  abort "cellroute not found: install libcellroute and its cellroute.pc, or set PKG_CONFIG_PATH"
end
# Where the library was found, so the extension finds it at run time too.
libdir = `pkg-config --variable=libdir cellroute`.strip
$LDFLAGS << " -Wl,-rpath,#{libdir}" unless libdir.empty?
$CFLAGS << " -std=c99 -Wall -Wextra -Wno-unused-parameter"
have_header("cellroute.h") or abort "cellroute.h not found"
have_func("rb_thread_call_without_gvl", "ruby/thread.h")
create_makefile("cellroute/cellroute")
