"""Builds sparse_rtrl's compiled module (sparse_rtrl._core) with CMake for `pip install .`.

The metadata is in pyproject.toml. The module is the CMake target sparse_rtrl_python of this
repository, configured for the interpreter pip runs (Python3_EXECUTABLE) without tests, examples or
benchmarks; the pure-Python files come from python/sparse_rtrl. Environment:
  SPARSE_RTRL_PIP_BUILD_TYPE  CMake build type (default Release)
  SPARSE_RTRL_PIP_CMAKE_ARGS  extra CMake arguments, separated by ";" (e.g. the tests' -O1 flags)
  CMAKE_BUILD_PARALLEL_LEVEL  parallel compile jobs (default 2: the module is two heavy units)
  CMAKE_CXX_COMPILER_LAUNCHER e.g. ccache (read by CMake itself)
  SPARSE_RTRL_PIP_BUILD_DIR   where setuptools and CMake build (default: build/ in the repository,
                              setuptools' own default; the ctest case python_pip_install uses its build tree)
"""
import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def version():
    text = open(os.path.join(ROOT, "include", "sparse_rtrl", "config.hpp")).read()
    return re.search(r'version_string = "([^"]+)"', text).group(1)


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = os.path.abspath(os.path.join(self.build_temp, "cmake"))
        os.makedirs(build_dir, exist_ok=True)
        args = [
            "cmake", "-S", ROOT, "-B", build_dir,
            f"-DCMAKE_BUILD_TYPE={os.environ.get('SPARSE_RTRL_PIP_BUILD_TYPE', 'Release')}",
            "-DSPARSE_RTRL_BUILD_PYTHON=ON", "-DSPARSE_RTRL_BUILD_TESTS=OFF", "-DSPARSE_RTRL_BUILD_EXAMPLES=OFF",
            "-DSPARSE_RTRL_BUILD_BENCHMARKS=OFF", f"-DPython3_EXECUTABLE={sys.executable}",
        ]
        try:  # an isolated build has PyPI's pybind11 (no system CMake config); Debian's is found either way
            import pybind11
            args.append(f"-Dpybind11_DIR={pybind11.get_cmake_dir()}")
        except ImportError:
            pass
        extra = os.environ.get("SPARSE_RTRL_PIP_CMAKE_ARGS")
        if extra:
            args += [a for a in extra.split(";") if a]
        subprocess.run(args, check=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
        subprocess.run(["cmake", "--build", build_dir, "--target", "sparse_rtrl_python", "-j", jobs], check=True)
        built = glob.glob(os.path.join(build_dir, "python", "sparse_rtrl", "_core*"))
        if len(built) != 1:
            raise RuntimeError(f"sparse_rtrl setup.py: expected one compiled module in {build_dir}, found {built}")
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(built[0], target)


BUILD_BASE = os.environ.get("SPARSE_RTRL_PIP_BUILD_DIR")

setup(
    options={"build": {"build_base": BUILD_BASE}} if BUILD_BASE else {},
    version=version(),
    ext_modules=[Extension("sparse_rtrl._core", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
)
