#!/usr/bin/env bash
# One entry point for people and CI: installs missing Debian packages, configures, builds, runs.
#   bash cmake/dev.sh example   build and run the main example (spiral task, short mode)
#   bash cmake/dev.sh test      build and run every test (ctest)
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
    build="$root/build/test"
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPARSE_RTRL_BUILD_TESTS=ON \
      -DSPARSE_RTRL_BUILD_BENCHMARKS=ON -DSPARSE_RTRL_BUILD_EXAMPLES=ON >/dev/null
    cmake --build "$build" -j "$jobs"
    ctest --test-dir "$build" --output-on-failure -j "$jobs"
    ;;
  bench)
    build="$root/build/bench"
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DSPARSE_RTRL_NATIVE=ON \
      -DSPARSE_RTRL_BUILD_TESTS=OFF -DSPARSE_RTRL_BUILD_EXAMPLES=OFF -DSPARSE_RTRL_BUILD_BENCHMARKS=ON >/dev/null
    cmake --build "$build" -j "$jobs"
    bash "$root/cmake/install_deps.sh" python3-matplotlib
    # The PyTorch peer is optional: without python3-torch the report leaves its columns empty.
    bash "$root/cmake/install_deps.sh" python3-torch || echo "sparse_rtrl: python3-torch not installed; the PyTorch peer will be skipped"
    /usr/bin/python3 "$root/bench/run_suite.py" --build "$build" "${@:---quick}"
    ;;
  *)
    echo "usage: bash cmake/dev.sh {example|test|bench}" >&2
    exit 2
    ;;
esac
