#!/usr/bin/env bash
# One entry point for people and CI: installs missing Debian packages, configures, builds, runs.
#   bash cmake/dev.sh example   build and run the main example (spiral task, short mode)
#   bash cmake/dev.sh test      build and run every test (ctest; the Python bindings' pytest suite too)
#   bash cmake/dev.sh sanitize  build and run the library tests under AddressSanitizer and
#                               UndefinedBehaviorSanitizer (examples and benchmarks left out)
#   bash cmake/dev.sh bench [--quick|--full]
#                               build the benchmarks (Release, -march=native), run the suite,
#                               write bench/results/*.json and docs/benchmarks.md with plots
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
what="${1:-test}"
shift || true
jobs="$(nproc 2>/dev/null || echo 2)"
bash "$root/cmake/install_deps.sh"
case "$what" in
  example)
    build="$root/build/release"
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DSPARSE_RTRL_BUILD_TESTS=OFF \
      -DSPARSE_RTRL_BUILD_BENCHMARKS=OFF -DSPARSE_RTRL_BUILD_EXAMPLES=ON >/dev/null
    cmake --build "$build" --target spiral -j "$jobs"
    "$build/examples/spiral" --short
    ;;
  test)
    # Optional: the Fashion-MNIST example's smoke test runs on the real files when they are
    # installable, and reports itself skipped otherwise.
    bash "$root/cmake/install_deps.sh" dataset-fashion-mnist || echo "sparse_rtrl: dataset-fashion-mnist not installed; its smoke test will be skipped"
    # The Python bindings and their pytest suite (python/): Debian's interpreter, which has NumPy.
    # The io tests (tests/io) read our .npz checkpoints with that NumPy too; with python3-torch
    # also installed (optional, large) they load them into torch.nn.GRU, else they report skipped.
    bash "$root/cmake/install_deps.sh" --python
    # The MPI part's tests run as real processes under mpirun (Open MPI from Debian).
    bash "$root/cmake/install_deps.sh" --mpi
    build="$root/build/test"
    # RelWithDebInfo at -O1 -g1 (NDEBUG as in a release): compiling is most of this command's time
    # on 2 cores, and -O1 -g1 compiles the test files in about half the CPU time of -O2 -g while the
    # tests still run optimised code. Benchmarks and examples meant for timing use bench/example.
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
      -DSPARSE_RTRL_BUILD_TESTS=ON -DSPARSE_RTRL_BUILD_MPI=ON \
      -DSPARSE_RTRL_BUILD_BENCHMARKS=ON -DSPARSE_RTRL_BUILD_EXAMPLES=ON \
      -DSPARSE_RTRL_BUILD_PYTHON=ON -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
    cmake --build "$build" -j "$jobs"
    ctest --test-dir "$build" --output-on-failure -j "$jobs"
    ;;
  sanitize)
    build="$root/build/sanitize"
    flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
    # -O1 -g1 with Eigen's and our internal assertions on (no NDEBUG): compiling is most of this
    # pass's time, and -O1 -g1 compiles a test file in half the CPU time of -O2 -g (48 s vs 104 s for
    # rtrl_stack.test.cpp under ASan/UBSan on a 2-core EPYC) while keeping ASan's reports precise.
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Sanitize -DCMAKE_CXX_FLAGS_SANITIZE="-O1 -g1" \
      -DCMAKE_CXX_FLAGS="$flags" \
      -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" -DSPARSE_RTRL_BUILD_TESTS=ON \
      -DSPARSE_RTRL_BUILD_BENCHMARKS=OFF -DSPARSE_RTRL_BUILD_EXAMPLES=OFF >/dev/null
    cmake --build "$build" -j "$jobs"
    # The install and README tests build other projects (without these flags): the plain test
    # run covers them.
    ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1" \
      UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
      ctest --test-dir "$build" --output-on-failure -j "$jobs" -E "install_and_find_package|readme"
    ;;
  bench)
    build="$root/build/bench"
    # The Python module too (same flags), for the python/sparse_rtrl overhead rows; and MPI for the
    # column-sharded rows (bench_mpi under mpiexec, docs/distributed.md).
    bash "$root/cmake/install_deps.sh" --python
    bash "$root/cmake/install_deps.sh" --mpi
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DSPARSE_RTRL_NATIVE=ON \
      -DSPARSE_RTRL_BUILD_TESTS=OFF -DSPARSE_RTRL_BUILD_EXAMPLES=OFF -DSPARSE_RTRL_BUILD_BENCHMARKS=ON \
      -DSPARSE_RTRL_BUILD_MPI=ON -DSPARSE_RTRL_BUILD_PYTHON=ON -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
    cmake --build "$build" -j "$jobs"
    bash "$root/cmake/install_deps.sh" python3-matplotlib
    # The PyTorch peer is optional: without python3-torch the report leaves its columns empty.
    bash "$root/cmake/install_deps.sh" python3-torch || echo "sparse_rtrl: python3-torch not installed; the PyTorch peer will be skipped"
    /usr/bin/python3 "$root/bench/run_suite.py" --build "$build" "${@:---quick}"
    ;;
  *)
    echo "usage: bash cmake/dev.sh {example|test|sanitize|bench}" >&2
    exit 2
    ;;
esac
