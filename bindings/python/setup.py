"""The parts of the build that pyproject.toml cannot say: the library inside the wheel, and its tag.

With COFFER_WHEEL_LIBRARY set to a built libcoffer (make wheel passes the stripped one it staged), the
file is copied into the package as coffer/libcoffer.so.0 and the wheel is tagged py3-none-<platform>
(e.g. py3-none-linux_x86_64): any Python 3 (the binding is ctypes, no CPython extension, so no ABI
tag), this platform only (the library is machine code). Without it, the wheel is the pure
py3-none-any binding that loads libcoffer.so.0 from $COFFER_LIBRARY or the system library path.
"""

import os
from typing import Tuple

from setuptools import setup
from setuptools.dist import Distribution as _Distribution
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

ABI_VERSION = 0
LIBRARY = os.environ.get("COFFER_WHEEL_LIBRARY", "")


def _check_library(path: str) -> None:
    with open(path, "rb") as f:
        header = f.read(4)
    if header != b"\x7fELF":
        raise SystemExit(f"COFFER_WHEEL_LIBRARY={path} is not an ELF shared library")


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        target = os.path.join(self.build_lib, "coffer", f"libcoffer.so.{ABI_VERSION}")
        if os.path.exists(target):  # left by an earlier build with the library: never in a pure wheel
            os.remove(target)
        if LIBRARY:
            _check_library(LIBRARY)
            self.copy_file(LIBRARY, target, preserve_mode=True)


class Distribution(_Distribution):
    def has_ext_modules(self) -> bool:
        # What makes setuptools install the package under platlib (the wheel's root, Root-Is-Purelib:
        # false), where auditwheel and installers expect machine code, not under .data/purelib.
        return bool(LIBRARY)


class BdistWheel(bdist_wheel):
    def get_tag(self) -> Tuple[str, str, str]:
        python, abi, platform = super().get_tag()
        if not LIBRARY:
            return python, abi, platform
        return "py3", "none", platform


setup(distclass=Distribution, cmdclass={"build_py": BuildPy, "bdist_wheel": BdistWheel})
