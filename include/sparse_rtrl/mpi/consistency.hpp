/// @file mpi/consistency.hpp
/// @brief The check that every rank holds the same model, and the column split every rank
///        computes for it: a mismatch, or more ranks than there is work to split, is a
///        std::invalid_argument on every rank, never a hang.
///
/// How no rank is left waiting: each rank contributes its fingerprint (mpi/fingerprint.hpp) to
/// the same fixed sequence of collectives (MPI_Allgather of the 4-number header, then, only if
/// every header agrees, of the 4 numbers per layer), so after each one every rank holds the same
/// data and reaches the same verdict. A rank never throws before it has taken part in every
/// collective the others take part in. The split that follows is a pure function of the model,
/// which is by then the same on every rank: every rank computes it, and refuses it, alike.
#pragma once

#include <sparse_rtrl/learners/column_partition.hpp>
#include <sparse_rtrl/mpi/communicator.hpp>
#include <sparse_rtrl/mpi/fingerprint.hpp>

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {
namespace mpi {

namespace internal {

/// "rank 1", "ranks 1, 3" for the ranks in @p ranks.
inline std::string rank_list(const std::vector<int>& ranks) {
  std::string s = ranks.size() == 1 ? "rank " : "ranks ";
  for (std::size_t i = 0; i < ranks.size(); ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s;
}

/// For item i of @p per_rank (size ranks x items, rank-major), the ranks whose value differs from
/// rank 0's, appended as "<what>: ranks ... differ from rank 0" to @p out.
template <typename Name>
void list_differences(const std::vector<std::uint64_t>& all, int ranks, int items, Name&& name,
                      std::vector<std::string>& out) {
  for (int i = 0; i < items; ++i) {
    std::vector<int> differ;
    for (int r = 1; r < ranks; ++r)
      if (all[std::size_t(r) * std::size_t(items) + std::size_t(i)] != all[std::size_t(i)]) differ.push_back(r);
    if (!differ.empty()) out.push_back(name(i) + " (" + rank_list(differ) + " differ" + (differ.size() == 1 ? "s" : "") + " from rank 0)");
  }
}

[[noreturn]] inline void fail_mismatch(const char* where, const std::vector<std::string>& items) {
  std::ostringstream s;
  s << where << ": the ranks do not hold the same model; they differ in ";
  for (std::size_t i = 0; i < items.size(); ++i) s << (i ? "; " : "") << items[i];
  s << ". Every rank must build the same model (parameters bit for bit, masks, modes, surrogates) and pass "
       "the same learner options: e.g. initialise from the same seed or broadcast rank 0's parameters first";
  throw std::invalid_argument(s.str());
}

}  // namespace internal

/// @brief Collective over @p comm: throws std::invalid_argument on every rank, naming which
/// ranks differ from rank 0 and in what (the build, shapes, options, or the parameters / mask /
/// mode / surrogate of layer k), unless every rank passed the same @p fingerprint.
inline void require_same_fingerprint(const Communicator& comm, const ModelFingerprint& fingerprint,
                                     const char* where) {
  const int R = comm.size();
  const std::vector<std::uint64_t> header = comm.allgather(fingerprint.header());
  std::vector<std::string> differences;
  internal::list_differences(header, R, ModelFingerprint::kHeader,
                           [](int i) { return std::string(ModelFingerprint::header_name(i)); }, differences);
  // Every rank saw the same headers: all stop here, or all go on to the second collective.
  if (!differences.empty()) internal::fail_mismatch(where, differences);
  const std::vector<std::uint64_t> layers = comm.allgather(fingerprint.per_layer());
  const int items = int(fingerprint.per_layer().size());
  internal::list_differences(layers, R, items,
                           [&](int i) {
                             std::string what = ModelFingerprint::per_layer_name(i % ModelFingerprint::kPerLayer);
                             return "the " + what + " of layer " + std::to_string(i / ModelFingerprint::kPerLayer);
                           },
                           differences);
  if (!differences.empty()) internal::fail_mismatch(where, differences);
}

/// require_same_fingerprint() for @p model and learner @p options.
template <typename Scalar, typename Surrogate>
void require_same_model(const Communicator& comm, const Model<Scalar, Surrogate>& model, const RtrlOptions& options,
                        const char* where) {
  require_same_fingerprint(comm, fingerprint(model, options), where);
}

/// @brief Collective: checks that every rank holds the same model and options
/// (require_same_model()), then returns the column split for comm.size() ranks (the same on
/// every rank), or throws std::invalid_argument on every rank when there are more ranks than
/// panels of columns to split.
template <typename Scalar, typename Surrogate>
ColumnPartition checked_partition(const Communicator& comm, const Model<Scalar, Surrogate>& model,
                                  const RtrlOptions& options, const char* where) {
  require_same_model(comm, model, options, where);
  try {
    return partition_columns(model, comm.size());
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string(where) + ": " + e.what());
  }
}

}  // namespace mpi
}  // namespace sparse_rtrl
