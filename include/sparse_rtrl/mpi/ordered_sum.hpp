/// @file mpi/ordered_sum.hpp
/// @brief The sum of per-stream vectors held by the ranks of a chain, added in global stream
///        order, bitwise the one-process left fold g_0 + g_1 + ... + g_{B-1}: a chained sum,
///        pipelined over chunks of the vector, then broadcast.
///
/// Why not MPI_Allreduce(MPI_SUM): floating-point addition is not associative, and the standard
/// leaves the order (and bracketing) of the reduction to the implementation, which picks among
/// recursive doubling, ring, Rabenseifner and tree algorithms by message size and rank count.
/// So the bits of an Allreduce change with the number of ranks (and the MPI version): ((g0+g1)+
/// (g2+g3)) is not ((g0+g1)+g2)+g3. RtrlStreams adds streams left to right, element by element
/// (sum = g_0; sum += g_1; ...), so the only way to get its bits on R ranks is to add in that
/// order: rank r (holding streams [b_r, b_{r+1})) receives the running sum of streams [0, b_r)
/// from rank r - 1, adds its own streams one after another and passes it on. The vector is cut
/// into chunks so that rank r + 1 adds chunk i while rank r adds chunk i + 1 (a pipeline): the
/// chain costs about (R - 1 + chunks) chunk-steps, i.e. one vector transfer plus R - 1 chunk
/// latencies, not R vector transfers. The last rank holds the sum and broadcasts it (a copy:
/// MPI_Bcast does no arithmetic).
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/mpi/communicator.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {
namespace mpi {

/// Smallest message of the chained sum: 16 Ki values (64 KB of floats), large enough that a
/// message's latency (microseconds) is small next to its transfer.
constexpr Index kOrderedSumChunk = Index(1) << 14;
/// @brief The chunk ordered_sum() uses for @p m values over a chain of @p ranks: the vector in
/// 16 + 4 (ranks - 1) pieces, but no piece below @p chunk values. Few pieces keep the hand-offs
/// few (each wakes a process: on a loaded or oversubscribed node, a scheduler switch); more ranks
/// need smaller pieces, since the chain's fill is (ranks - 1) pieces: at 256 ranks and 41 MB
/// (n = 8192) the pieces are 64 KB and the fill 255 x (2 us + 5 us) = 1.8 ms at 100 Gb/s.
inline Index ordered_sum_chunk(Index m, int ranks, Index chunk = kOrderedSumChunk) {
  const Index pieces = 16 + 4 * Index(std::max(0, ranks - 1));
  return std::max(chunk, (m + pieces - 1) / pieces);
}

/// @brief Collective over @p chain: @p out (resized to the parts' size) becomes, on every rank,
/// the left fold over ranks 0, 1, ..., size-1 of each rank's @p parts in their order, element by
/// element: out = ((p^0_0 + p^0_1) + ...) + p^1_0 + ... (the first term copied, not added to
/// zero: 0 + (-0) would be +0). Every rank must pass at least one part (@p m values each; m the
/// same on every rank). Allocation-free once @p out has the size.
template <typename Scalar>
void ordered_sum(const Communicator& chain, const std::vector<const Scalar*>& parts, Index m,
                 Eigen::Matrix<Scalar, Eigen::Dynamic, 1>& out, Index chunk = kOrderedSumChunk) {
  using Map = Eigen::Map<const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>>;
  if (parts.empty() || chunk < 1 || m < 0)
    throw std::invalid_argument("sparse_rtrl::mpi::ordered_sum(): every rank needs at least one part, m >= 0 and chunk >= 1");
  if (out.size() != m) out.resize(m);
  chunk = ordered_sum_chunk(m, chain.size(), chunk);
  const int R = chain.size(), me = chain.rank();
  const MPI_Comm comm = chain.get();
  const int tag = 23;
  const MPI_Datatype type = datatype<Scalar>();
  for (Index lo = 0; lo < m; lo += chunk) {
    const Index hi = std::min(m, lo + chunk);
    const int count = checked_count(hi - lo, "ordered_sum chunk");
    auto seg = out.segment(lo, hi - lo);
    std::size_t first = 0;
    if (me == 0) {
      seg = Map(parts.front() + lo, hi - lo);
      first = 1;
    } else {
      check(MPI_Recv(seg.data(), count, type, me - 1, tag, comm, MPI_STATUS_IGNORE), "MPI_Recv");
    }
    for (std::size_t i = first; i < parts.size(); ++i) seg += Map(parts[i] + lo, hi - lo);
    // Blocking send of a finished chunk: the next rank is already waiting for it (or will be),
    // and a chunk fits the eager protocol's buffers for moderate sizes; the pipeline depth is
    // one chunk per link, which is what makes the chain cost one vector transfer in all.
    if (me + 1 < R) check(MPI_Send(seg.data(), count, type, me + 1, tag, comm), "MPI_Send");
  }
  // The last rank holds the sum: a copy to every rank, in int-sized pieces.
  for (Index lo = 0; lo < m; lo += Index(1) << 30) {
    const Index hi = std::min(m, lo + (Index(1) << 30));
    check(MPI_Bcast(out.data() + lo, checked_count(hi - lo, "ordered_sum broadcast"), type, R - 1, comm), "MPI_Bcast");
  }
}

}  // namespace mpi
}  // namespace sparse_rtrl
