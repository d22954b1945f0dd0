#!/usr/bin/env bash
# Installs the Debian packages sparse_rtrl needs, and only those that are missing.
# Usage: cmake/install_deps.sh [--python] [--plots] [--mpi] [extra-package ...]   (does nothing when everything is present)
#   --python   also what the Python bindings and their tests need (python/; dev.sh test and bench)
#   --plots    also matplotlib, for the plots of bench/report.py and examples/copy_curriculum.py
#   --mpi      also an MPI implementation and its launcher, for the MPI part's tests, example and
#              benchmark rows (include/sparse_rtrl/mpi/; dev.sh test and bench)
set -euo pipefail
# pip install . (README, "Python"; ctest python_pip_install): pip, venv, setuptools and pybind11 from Debian.
python_packages=(pybind11-dev python3-dev python3-numpy python3-pytest python3-pip python3-venv python3-setuptools
                 python3-pybind11)
mpi_packages=(libopenmpi-dev openmpi-bin)
extra=()
for arg in "$@"; do
  if [ "$arg" = "--python" ]; then extra+=("${python_packages[@]}")
  elif [ "$arg" = "--plots" ]; then extra+=(python3-matplotlib)
  elif [ "$arg" = "--mpi" ]; then extra+=("${mpi_packages[@]}")
  else extra+=("$arg"); fi
done
needed=(cmake make g++ libeigen3-dev catch2 libbenchmark-dev "${extra[@]}")
missing=()
for pkg in "${needed[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "sparse_rtrl: installing missing Debian packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null; then
  SUDO="sudo"
else
  echo "sparse_rtrl: need root (or sudo) to install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
