/// @file mpi/grid_checkpoint.hpp
/// @brief Checkpoints of a StreamGrid across rank counts: each rank saves what it owns (its
///        streams' column slices), rank 0 the model once, and a manifest naming the split is
///        written last; a run saved on R ranks (any grid) resumes on R' ranks (any grid, 1
///        included) and continues bit for bit.
///
/// Directory layout (docs/distributed.md, "Checkpoints across rank counts"):
///   model.npz               rank 0: the model (io::Checkpoint's entries: torch names, masks)
///   shard-g{G}-s{S}.npz     the rank of group G, shard S: its streams [first, end) and, per
///                           stream b, s{b}/steps, s{b}/last_step_valid, s{b}/gradient (its
///                           columns), s{b}/l{k}/state, s{b}/l{k}/influence (n_k x its columns of
///                           layer k's blocks), s{b}/l{k}/cache/<field>; and the save's id
///   manifest.npz            rank 0, last: the save's id, B, the grid, the column bounds
/// Every file is written atomically (io::NpzWriter: temporary file, fsync, rename). The save
/// first removes the old manifest, so a save interrupted half way leaves no manifest and is
/// refused; a shard file from another save carries another id and is refused.
///
/// Why a shard is only a column range: given the stream's state trajectory, each influence
/// column evolves on its own (docs/distributed.md), and every stream's forward state (c, the
/// step's cache) is the same on all shards. So a loader on any grid takes, for each of its
/// streams, the state from one file and each of its columns from whichever file holds it.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint.hpp>
#include <sparse_rtrl/io/checkpoint/grid_files.hpp>
#include <sparse_rtrl/io/npz.hpp>
#include <sparse_rtrl/mpi/stream_grid.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <memory>
#include <random>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {
namespace mpi {

using io::grid_checkpoint_format_version;

template <typename Scalar, typename Surrogate>
class GridCheckpoint {
 public:
  using Grid_ = StreamGrid<Scalar, Surrogate>;
  using Local = Rtrl<Scalar, Surrogate>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using RowMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  static std::string shard_file(int group, int shard) { return io::grid_files::shard_file(group, shard); }

  static void save(Grid_& g, const std::string& dir) {
    const char* where = "sparse_rtrl::mpi::save_checkpoint()";
    const Communicator& world = g.world_;
    for (auto& s : g.local_) s->follow_mask();  // collective per group: laid out for the model's masks
    namespace fs = std::filesystem;
    // The save's id, made by rank 0 and sent to all: it ties the files of one save together.
    std::uint64_t id = 0;
    std::exception_ptr failure;
    if (world.rank() == 0) {
      try {
        fs::create_directories(dir);
        // No manifest while the save is under way: an interrupted save is refused, not mixed.
        fs::remove(fs::path(dir) / "manifest.npz");
        std::random_device rd;
        id = (std::uint64_t(rd()) << 32) ^ std::uint64_t(rd()) ^
             std::uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
      } catch (...) {
        failure = std::current_exception();
      }
    }
    world.agree(failure, where);
    check(MPI_Bcast(&id, 1, MPI_UINT64_T, 0, world.get()), "MPI_Bcast");
    const ColumnPartition& part = g.partition();
    try {
      io::NpzWriter w((fs::path(dir) / shard_file(g.group_, g.shard_)).string(), {}, where);
      w.add_scalar("format_version", grid_checkpoint_format_version);
      w.add_scalar("save_id", id);
      w.add_scalar("streams", std::int64_t(g.streams_));
      w.add_scalar("groups", std::int64_t(g.grid_.groups));
      w.add_scalar("shards", std::int64_t(g.grid_.shards));
      w.add_scalar("group", std::int64_t(g.group_));
      w.add_scalar("shard", std::int64_t(g.shard_));
      w.add_scalar("first_stream", std::int64_t(g.first_));
      w.add_scalar("end_stream", std::int64_t(g.end_));
      w.add_scalar("column_begin", std::int64_t(part.begin(g.shard_)));
      w.add_scalar("column_end", std::int64_t(part.end(g.shard_)));
      for (std::size_t i = 0; i < g.local_.size(); ++i) save_stream(w, "s" + std::to_string(g.first_ + Index(i)), g.local_[i]->local());
      w.commit();
      if (world.rank() == 0) {
        io::Checkpoint model;
        model.add(*g.model_);
        model.save((fs::path(dir) / "model.npz").string());
      }
    } catch (...) {
      failure = std::current_exception();
    }
    world.agree(failure, where);
    // Every shard is on disk: rank 0 removes shard files of older saves, then writes the manifest.
    if (world.rank() == 0) {
      try {
        const std::regex pattern("shard-g([0-9]+)-s([0-9]+)\\.npz");
        for (const auto& e : fs::directory_iterator(dir)) {
          std::smatch m;
          const std::string name = e.path().filename().string();
          if (!std::regex_match(name, m, pattern)) continue;
          const long gg = std::stol(m[1]), ss = std::stol(m[2]);
          if (gg >= g.grid_.groups || ss >= g.grid_.shards) fs::remove(e.path());
        }
        io::NpzWriter w((fs::path(dir) / "manifest.npz").string(), {}, where);
        w.add_scalar("format_version", grid_checkpoint_format_version);
        w.add_scalar("save_id", id);
        w.add_scalar("streams", std::int64_t(g.streams_));
        w.add_scalar("groups", std::int64_t(g.grid_.groups));
        w.add_scalar("shards", std::int64_t(g.grid_.shards));
        w.add_scalar("layers", std::int64_t(g.layers()));
        w.add_scalar("columns", std::int64_t(part.columns()));
        std::vector<std::int64_t> bounds(part.bounds().begin(), part.bounds().end());
        w.add_values("column_bounds", bounds.data(), bounds.size());
        w.commit();
      } catch (...) {
        failure = std::current_exception();
      }
    }
    world.agree(failure, where);
  }

  static void load(Grid_& g, const std::string& dir) {
    const char* where = "sparse_rtrl::mpi::load_checkpoint()";
    const Communicator& world = g.world_;
    for (auto& s : g.local_) s->follow_mask();
    std::unique_ptr<io::CheckpointItem::Staged> model_staged;
    std::vector<io::grid_files::StreamSlice<Scalar>> staged;
    std::exception_ptr failure;
    try {
      // 1. The manifest and exactly the shard files it names, each of the same save and split
      //    (every rank checks the same directory and reaches the same verdict); 2. the model,
      //    staged, with the live model's masks.
      const io::grid_files::Manifest m = io::grid_files::check_directory(dir, g.streams_, g.layers(), where);
      model_staged = io::grid_files::stage_model(dir, *g.model_, where);
      if (m.columns != g.columns()) io::grid_files::fail(where, "the manifest's columns differ from the learner's");
      // 3. This rank's streams: the state from the saved group's shard 0, each column from its file.
      const ColumnPartition& part = g.partition();
      const Index mb = part.begin(g.shard_), me = part.end(g.shard_);
      for (std::size_t i = 0; i < g.local_.size(); ++i)
        staged.push_back(io::grid_files::stage_stream(dir, where, g.first_ + Index(i), m, mb, me, g.local_[i]->local()));
    } catch (...) {
      failure = std::current_exception();
    }
    agree_refusal(world, failure, where);
    // 4. Everything read and checked on every rank: commit (copies and swaps, no failure).
    model_staged->commit();
    for (std::size_t i = 0; i < g.local_.size(); ++i) commit(*g.local_[i]->local_, staged[i]);
  }

 private:
  /// Every rank learns whether any failed; all throw std::invalid_argument (a failing rank its
  /// own error, the others one naming the failed ranks), nothing changed anywhere.
  static void agree_refusal(const Communicator& world, std::exception_ptr failure, const char* where) {
    const std::vector<int> all = world.allgather(std::vector<int>{failure ? 1 : 0});
    std::string failed;
    for (int r = 0; r < world.size(); ++r)
      if (all[std::size_t(r)]) failed += (failed.empty() ? "" : ", ") + std::to_string(r);
    if (failure) std::rethrow_exception(failure);
    if (!failed.empty())
      io::grid_files::fail(where, "the checkpoint was refused on rank(s) " + failed + " (see their error); nothing was changed on any rank");
  }

  static void save_stream(io::NpzWriter& w, const std::string& p, const Local& l) {
    w.add_scalar(p + "/steps", std::int64_t(l.steps()));
    w.add_scalar(p + "/last_step_valid", l.last_step_valid());
    // (The local learner's gradient is indexed globally, zero outside its window: the window's.)
    w.add(p + "/gradient", Vector(l.gradient_columns().segment(l.column_begin(), l.column_end() - l.column_begin())));
    for (Index k = 0; k < l.layers(); ++k) {
      const std::string q = p + "/l" + std::to_string(k);
      w.add(q + "/state", l.state(k));
      const Index rows = l.units(k), cols = l.influence_columns(k);
      w.add_array(q + "/influence", io::dtype_of<Scalar>::value, {std::uint64_t(rows), std::uint64_t(cols)},
                  [&](io::ByteSink& sink) {
                    for (Index i = 0; i < rows; ++i)
                      l.for_each_influence_segment(k, i, [&](const Scalar* v, Index count) {
                        sink.write_values(v, std::size_t(count));
                      });
                  });
      for (const auto& f : sparse_rtrl::detail::cache_fields<Scalar>(l.last_step_cache(k)))
        w.add(q + "/cache/" + f.first, *f.second);
    }
  }

  static void commit(Local& l, io::grid_files::StreamSlice<Scalar>& st) noexcept {
    for (std::size_t k = 0; k < l.layers_.size(); ++k) {
      auto& layer = l.layers_[k];
      layer.state.swap(st.state[k]);
      std::swap(layer.cache, st.cache[k]);
      const RowMatrix& M = st.M[k];
      layer.M.write_row_major(0, M.data(), std::size_t(M.size()));
    }
    l.grad_.segment(l.column_begin(), st.grad.size()) = st.grad;
    l.steps_ = st.steps;
    l.steps_valid_ = st.valid;
  }
};

/// @brief Collective: saves @p grid (and its model, once) into directory @p dir (created if
/// needed), one file per rank and a manifest written last. See the file comment.
template <typename Scalar, typename Surrogate>
void save_checkpoint(StreamGrid<Scalar, Surrogate>& grid, const std::string& dir) {
  GridCheckpoint<Scalar, Surrogate>::save(grid, dir);
}
/// @brief Collective: restores @p grid's streams and its model from a checkpoint saved by
/// save_checkpoint() on any number of ranks, any grid, for the same B and the same masks. All or
/// nothing on every rank: a missing, extra or mismatched file, or a corrupt entry, throws
/// std::invalid_argument on every rank and changes nothing.
template <typename Scalar, typename Surrogate>
void load_checkpoint(StreamGrid<Scalar, Surrogate>& grid, const std::string& dir) {
  GridCheckpoint<Scalar, Surrogate>::load(grid, dir);
}

}  // namespace mpi
}  // namespace sparse_rtrl
