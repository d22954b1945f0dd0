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
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {
namespace mpi {

/// Version of the grid checkpoint's entries.
constexpr std::int64_t grid_checkpoint_format_version = 1;

template <typename Scalar, typename Surrogate>
class GridCheckpoint {
 public:
  using Grid_ = StreamGrid<Scalar, Surrogate>;
  using Local = Rtrl<Scalar, Surrogate>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using RowMatrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  static std::string shard_file(int group, int shard) {
    return "shard-g" + std::to_string(group) + "-s" + std::to_string(shard) + ".npz";
  }

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
    namespace fs = std::filesystem;
    std::unique_ptr<io::CheckpointItem::Staged> model_staged;
    std::vector<StagedStream> staged;
    std::exception_ptr failure;
    try {
      // 1. The manifest, and the set of shard files it names: missing or extra files are refused
      //    (every rank checks the same directory and reaches the same verdict).
      const std::string manifest_path = (fs::path(dir) / "manifest.npz").string();
      if (!fs::exists(manifest_path))
        fail(where, manifest_path + " does not exist (no checkpoint there, or its save did not complete)");
      io::NpzReader man(manifest_path, where);
      expect(man, "format_version", grid_checkpoint_format_version, "this library's grid checkpoint format");
      const std::uint64_t id = man.read_scalar<std::uint64_t>("save_id");
      expect(man, "streams", std::int64_t(g.streams_), "the streams of this StreamGrid");
      expect(man, "layers", std::int64_t(g.layers()), "the model's layers");
      const Grid saved{int(man.read_scalar<std::int64_t>("groups")), int(man.read_scalar<std::int64_t>("shards"))};
      if (saved.groups < 1 || saved.shards < 1 || Index(saved.groups) > g.streams_)
        man.fail("the saved grid " + saved.str() + " is not valid for " + std::to_string(g.streams_) + " streams");
      const Index columns = Index(man.read_scalar<std::int64_t>("columns"));
      Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> bounds(saved.shards + 1);
      man.read_into("column_bounds", bounds);
      if (bounds(0) != 0 || bounds(saved.shards) != columns)
        man.fail("column_bounds must run from 0 to the " + std::to_string(columns) + " columns");
      for (int s = 0; s < saved.shards; ++s)
        if (bounds(s + 1) < bounds(s)) man.fail("column_bounds must not decrease");
      man.verify_all();
      std::set<std::string> expected;
      for (int gg = 0; gg < saved.groups; ++gg)
        for (int ss = 0; ss < saved.shards; ++ss) expected.insert(shard_file(gg, ss));
      const std::regex pattern("shard-g([0-9]+)-s([0-9]+)\\.npz");
      for (const auto& e : fs::directory_iterator(dir)) {
        const std::string name = e.path().filename().string();
        if (std::regex_match(name, pattern) && !expected.count(name))
          fail(where, dir + ": the shard file " + name + " is not part of the saved " + saved.str() +
                          " (a file of another save?): refused");
      }
      for (const auto& name : expected)
        if (!fs::exists(fs::path(dir) / name))
          fail(where, dir + ": the shard file " + name + " of the saved " + saved.str() + " is missing");
      // 2. Every shard file's header agrees with the manifest (same save, same split).
      for (int gg = 0; gg < saved.groups; ++gg)
        for (int ss = 0; ss < saved.shards; ++ss) {
          io::NpzReader r((fs::path(dir) / shard_file(gg, ss)).string(), where);
          expect(r, "format_version", grid_checkpoint_format_version, "this library's grid checkpoint format");
          if (r.read_scalar<std::uint64_t>("save_id") != id)
            r.fail("the file belongs to another save than the manifest (save_id differs): refused");
          expect(r, "streams", std::int64_t(g.streams_), "the manifest's streams");
          expect(r, "groups", std::int64_t(saved.groups), "the manifest's groups");
          expect(r, "shards", std::int64_t(saved.shards), "the manifest's shards");
          expect(r, "group", std::int64_t(gg), "the group its name gives");
          expect(r, "shard", std::int64_t(ss), "the shard its name gives");
          expect(r, "first_stream", std::int64_t(saved.first_stream(gg, g.streams_)), "the group's first stream");
          expect(r, "end_stream", std::int64_t(saved.first_stream(gg + 1, g.streams_)), "the group's end stream");
          expect(r, "column_begin", std::int64_t(bounds(ss)), "the manifest's bounds");
          expect(r, "column_end", std::int64_t(bounds(ss + 1)), "the manifest's bounds");
        }
      // 3. The model (staged), whose masks must be the live model's: the learner is laid out for them.
      {
        io::NpzReader r((fs::path(dir) / "model.npz").string(), where);
        sparse_rtrl::detail::require_checkpoint_version(r);
        sparse_rtrl::detail::ModelItem<Scalar, Surrogate> item(*g.model_);
        model_staged = item.stage(r, io::CheckpointItem::Context{});
        const auto& masks = sparse_rtrl::detail::ModelItem<Scalar, Surrogate>::masks_of(*model_staged);
        for (Index k = 0; k < g.layers(); ++k)
          if (!(masks[std::size_t(k)] == g.model_->mask(k)))
            r.fail("the saved mask of layer " + std::to_string(k) +
                   " differs from the live model's: construct the StreamGrid over a model with the saved masks "
                   "(e.g. io::load_model(dir + \"/model.npz\"))");
        r.verify_all();
      }
      if (columns != g.columns()) fail(where, "the manifest's columns differ from the learner's");
      // 4. This rank's streams: the state from the saved group's shard 0, each column from its file.
      const ColumnPartition& part = g.partition();
      const Index mb = part.begin(g.shard_), me = part.end(g.shard_);
      for (std::size_t i = 0; i < g.local_.size(); ++i) {
        const Index b = g.first_ + Index(i);
        const int sg = saved.group_of_stream(b, g.streams_);
        staged.push_back(stage_stream(dir, where, b, sg, saved, bounds, mb, me, g.local_[i]->local()));
      }
    } catch (...) {
      failure = std::current_exception();
    }
    agree_refusal(world, failure, where);
    // 5. Everything read and checked on every rank: commit (copies and swaps, no failure).
    model_staged->commit();
    for (std::size_t i = 0; i < g.local_.size(); ++i) commit(*g.local_[i]->local_, staged[i]);
  }

 private:
  struct StagedStream {
    Index steps = 0;
    bool valid = true;
    std::vector<Vector> state;
    std::vector<EgruStepCache<Scalar>> cache;
    std::vector<RowMatrix> M;
    Vector grad;
  };

  [[noreturn]] static void fail(const char* where, const std::string& what) {
    throw std::invalid_argument(std::string(where) + ": " + what);
  }
  static void expect(io::NpzReader& r, const std::string& name, std::int64_t value, const std::string& what) {
    const std::int64_t found = r.read_scalar<std::int64_t>(name);
    if (found != value)
      r.fail("entry '" + name + "': expected " + std::to_string(value) + " (" + what + "), found " +
             std::to_string(found));
  }
  /// Every rank learns whether any failed; all throw std::invalid_argument (a failing rank its
  /// own error, the others one naming the failed ranks), nothing changed anywhere.
  static void agree_refusal(const Communicator& world, std::exception_ptr failure, const char* where) {
    const std::vector<int> all = world.allgather(std::vector<int>{failure ? 1 : 0});
    std::string failed;
    for (int r = 0; r < world.size(); ++r)
      if (all[std::size_t(r)]) failed += (failed.empty() ? "" : ", ") + std::to_string(r);
    if (failure) std::rethrow_exception(failure);
    if (!failed.empty())
      fail(where, "the checkpoint was refused on rank(s) " + failed + " (see their error); nothing was changed on any rank");
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

  /// Stream b's state for the window [mb, me) of this rank, from the files of saved group sg.
  static StagedStream stage_stream(const std::string& dir, const char* where, Index b, int sg, const Grid& saved,
                                   const Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1>& bounds, Index mb, Index me,
                                   const Local& l) {
    namespace fs = std::filesystem;
    const std::string p = "s" + std::to_string(b);
    StagedStream st;
    const Index L = l.layers();
    std::vector<Index> width(static_cast<std::size_t>(L), 0);  // columns of layer k's blocks: offset + its own
    for (Index k = 0; k < L; ++k) width[std::size_t(k)] = l.column_offset(k) + l.layout(k).columns();
    st.grad.resize(me - mb);
    for (Index k = 0; k < L; ++k) {
      st.M.emplace_back(l.units(k), std::max<Index>(0, std::min(width[std::size_t(k)], me) - mb));
      st.cache.push_back(l.last_step_cache(k));
      st.state.push_back(Vector(l.units(k)));
    }
    for (int ss = 0; ss < saved.shards; ++ss) {
      const Index fb = Index(bounds(ss)), fe = Index(bounds(ss + 1));
      const bool overlaps = std::max(fb, mb) < std::min(fe, me);
      if (ss != 0 && !overlaps) continue;
      io::NpzReader r((fs::path(dir) / shard_file(sg, ss)).string(), where);
      if (ss == 0) {  // the stream's forward state: the same in every shard's file
        const std::int64_t steps = r.read_scalar<std::int64_t>(p + "/steps");
        if (steps < 0 || steps > std::int64_t(1) << 53) r.fail("entry '" + p + "/steps' out of range");
        st.steps = Index(steps);
        st.valid = r.read_scalar<bool>(p + "/last_step_valid");
        for (Index k = 0; k < L; ++k) {
          const std::string q = p + "/l" + std::to_string(k);
          r.read_into(q + "/state", st.state[std::size_t(k)]);
          if (!st.state[std::size_t(k)].allFinite()) r.fail("entry '" + q + "/state' is not finite");
          for (const auto& f : sparse_rtrl::detail::cache_fields<Scalar>(st.cache[std::size_t(k)])) {
            r.read_into(q + "/cache/" + f.first, *f.second);
            if (!f.second->allFinite()) r.fail("entry '" + q + "/cache/" + f.first + "' is not finite");
          }
        }
      }
      if (!overlaps) continue;
      const Index lo = std::max(fb, mb), hi = std::min(fe, me);
      Vector grad(fe - fb);
      r.read_into(p + "/gradient", grad);
      st.grad.segment(lo - mb, hi - lo) = grad.segment(lo - fb, hi - lo);
      for (Index k = 0; k < L; ++k) {
        const Index w = width[std::size_t(k)];
        const Index fcols = std::max<Index>(0, std::min(w, fe) - fb);
        const Index klo = lo, khi = std::min(hi, w);
        RowMatrix file(l.units(k), fcols);
        r.read_into(p + "/l" + std::to_string(k) + "/influence", file);
        if (khi > klo) st.M[std::size_t(k)].middleCols(klo - mb, khi - klo) = file.middleCols(klo - fb, khi - klo);
      }
    }
    if (!st.grad.allFinite()) fail(where, "stream " + std::to_string(b) + ": the saved gradient is not finite");
    for (const auto& M : st.M)
      if (!M.allFinite()) fail(where, "stream " + std::to_string(b) + ": the saved influence is not finite");
    return st;
  }

  static void commit(Local& l, StagedStream& st) noexcept {
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
