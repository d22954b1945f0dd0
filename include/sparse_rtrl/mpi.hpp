/// @file mpi.hpp
/// @brief Umbrella header of the MPI part (docs/distributed.md): include it, link
///        sparse_rtrl::mpi (CMake: find_package(sparse_rtrl COMPONENTS mpi)), and call MPI_Init
///        before and MPI_Finalize after using it. The rest of the library never includes MPI.
#pragma once

#include <sparse_rtrl/sparse_rtrl.hpp>
#include <sparse_rtrl/learners/column_partition.hpp>
#include <sparse_rtrl/mpi/communicator.hpp>
#include <sparse_rtrl/mpi/fingerprint.hpp>
#include <sparse_rtrl/mpi/consistency.hpp>
#include <sparse_rtrl/mpi/sharded_rtrl.hpp>
#include <sparse_rtrl/mpi/sharded_rtrl_streams.hpp>
#include <sparse_rtrl/mpi/grid.hpp>
#include <sparse_rtrl/mpi/ordered_sum.hpp>
#include <sparse_rtrl/mpi/stream_grid.hpp>
#include <sparse_rtrl/mpi/grid_checkpoint.hpp>
