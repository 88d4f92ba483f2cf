"""The native shim of the cellroute package, built against an installed cellroute.

pkg-config finds cellroute++ (its headers, the library, and a run path to it, so that the
extension loads without LD_LIBRARY_PATH); the package's version is the library's.
"""
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
            "(/opt/cellroute/lib/pkgconfig): " + detail.strip())
    return shlex.split(out)


setup(
    version=pkg_config("--modversion")[0],
    ext_modules=[
        Extension(
            "cellroute._cellroute",
            sources=["_cellroute.cpp"],
            language="c++",
            extra_compile_args=pkg_config("--cflags") + ["-fvisibility=hidden"],
            extra_link_args=pkg_config("--libs"),
        )
    ],
)
