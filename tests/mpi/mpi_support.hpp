// Helpers of the MPI tests (tests/mpi/*.mpi.cpp).
#pragma once

#include <sparse_rtrl/mpi.hpp>

#include <vector>

namespace test {

/// Whether every rank saw only agreement: a failed CHECK on one rank must not leave the others
/// waiting, so the MPI tests CHECK (never REQUIRE) inside loops with collectives and agree at the end.
inline bool all_ranks(const sparse_rtrl::mpi::Communicator& comm, bool mine) {
  const std::vector<int> all = comm.allgather(std::vector<int>{mine ? 1 : 0});
  for (int v : all)
    if (!v) return false;
  return true;
}

}  // namespace test
