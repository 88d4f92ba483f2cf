"""The native shim of the cellroute package, built against cellroute's C++ library.

Found, in this order:
- in a build tree, when CELLROUTE_SOURCE_DIR (the checkout) and CELLROUTE_BUILD_DIR (its CMake
  build directory) are set: for developers, no install needed;
- installed, through pkg-config (cellroute++.pc: its headers, the library, and a run path to
  it, so that the extension loads without LD_LIBRARY_PATH).
The package's version is the library's.
"""
import os
import re
import shlex
import subprocess

from setuptools import Extension, setup


def pkg_config(*args: str) -> list:
    try:
        out = subprocess.run(["pkg-config", *args, "cellroute++"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        raise SystemExit(
            "cellroute: pkg-config cannot find cellroute++; install cellroute first (e.g. "
            "cmake --install build --prefix /opt/cellroute) and point PKG_CONFIG_PATH at it "
            "(/opt/cellroute/lib/pkgconfig), or set CELLROUTE_SOURCE_DIR and "
            "CELLROUTE_BUILD_DIR to a checkout and its build: " + detail.strip())
    return shlex.split(out)


def from_build_tree(source: str, build: str):
    """(version, compile flags, link flags) for the library in a CMake build directory."""
    with open(os.path.join(source, "include", "cellroute", "version.h")) as f:
        parts = dict(re.findall(r"#define CR_VERSION_(MAJOR|MINOR|PATCH) (\d+)", f.read()))
    libdir = os.path.join(os.path.abspath(build), "src")
    if not os.path.exists(os.path.join(libdir, "libcellroute++.so")):
        raise SystemExit(f"cellroute: no libcellroute++.so in {libdir}: build the library first")
    version = ".".join(parts[k] for k in ("MAJOR", "MINOR", "PATCH"))
    cflags = ["-std=c++20", "-I" + os.path.join(os.path.abspath(source), "include")]
    return version, cflags, [f"-L{libdir}", f"-Wl,-rpath,{libdir}", "-lcellroute++"]


if os.environ.get("CELLROUTE_SOURCE_DIR") and os.environ.get("CELLROUTE_BUILD_DIR"):
    version, cflags, libs = from_build_tree(os.environ["CELLROUTE_SOURCE_DIR"],
                                            os.environ["CELLROUTE_BUILD_DIR"])
else:
    version, cflags, libs = pkg_config("--modversion")[0], pkg_config("--cflags"), pkg_config("--libs")

setup(
    version=version,
    ext_modules=[
        Extension(
            "cellroute._cellroute",
            sources=["_cellroute.cpp"],
            language="c++",
            extra_compile_args=cflags + ["-fvisibility=hidden"],
            extra_link_args=libs,
        )
    ],
)
