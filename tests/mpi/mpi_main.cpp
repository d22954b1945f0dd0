// Main of the MPI test binary (sparse_rtrl_mpi_tests), run by ctest under mpiexec on 1, 2 and 3
// processes: every rank runs the same test cases, whose collectives therefore match. A failure
// on any rank makes that rank's exit code, and so mpiexec's, nonzero. The main test binary
// stays MPI-free.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <mpi.h>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  const int result = Catch::Session().run(argc, argv);
  MPI_Finalize();
  return result;
}
