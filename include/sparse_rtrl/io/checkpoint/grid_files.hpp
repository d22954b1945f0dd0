/// @file io/checkpoint/grid_files.hpp
/// @brief Reading the directory a StreamGrid saved (mpi/grid_checkpoint.hpp), MPI-free: the
///        manifest and the shard files checked, the model staged, and one stream's state for any
///        column window assembled from the shard files that hold its columns. So a run saved on
///        R ranks resumes on R' ranks, and in one process without MPI into a plain RtrlStreams
///        (load_grid_checkpoint()).
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint/entries.hpp>
#include <sparse_rtrl/io/checkpoint/model_item.hpp>
#include <sparse_rtrl/io/npz.hpp>
#include <sparse_rtrl/learners/rtrl.hpp>
#include <sparse_rtrl/streams/rtrl_streams.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparse_rtrl {
namespace io {

/// Version of the grid checkpoint's entries (docs/checkpoint_format.md).
constexpr std::int64_t grid_checkpoint_format_version = 1;

namespace grid_files {

/// The file of group @p group, shard @p shard.
inline std::string shard_file(int group, int shard) {
  return "shard-g" + std::to_string(group) + "-s" + std::to_string(shard) + ".npz";
}

[[noreturn]] inline void fail(const char* where, const std::string& what) {
  throw std::invalid_argument(std::string(where) + ": " + what);
}

inline void expect(NpzReader& r, const std::string& name, std::int64_t value, const std::string& what) {
  const std::int64_t found = r.read_scalar<std::int64_t>(name);
  if (found != value)
    r.fail("entry '" + name + "': expected " + std::to_string(value) + " (" + what + "), found " +
           std::to_string(found));
}

/// What the manifest says, once every file has been checked against it.
struct Manifest {
  std::uint64_t id = 0;
  Index streams = 0, columns = 0;
  int groups = 1, shards = 1;
  std::vector<Index> bounds;  ///< shards + 1 column bounds
  Index first_stream(int group) const { return Index(std::int64_t(streams) * group / groups); }
  int group_of_stream(Index b) const {
    int g = 0;
    while (g + 1 < groups && first_stream(g + 1) <= b) ++g;
    return g;
  }
  std::string grid() const { return std::to_string(groups) + " groups x " + std::to_string(shards) + " shards"; }
};

/// @brief Reads the manifest of @p dir and checks the directory against it: exactly the shard
/// files it names (a missing or an extra one is refused, naming it), each of the same save, B,
/// grid and column bounds. Throws std::invalid_argument (io errors: std::runtime_error).
inline Manifest check_directory(const std::string& dir, Index streams, Index layers, const char* where) {
  namespace fs = std::filesystem;
  const std::string manifest_path = (fs::path(dir) / "manifest.npz").string();
  if (!fs::exists(manifest_path))
    fail(where, manifest_path + " does not exist (no checkpoint there, or its save did not complete)");
  NpzReader man(manifest_path, where);
  expect(man, "format_version", grid_checkpoint_format_version, "this library's grid checkpoint format");
  Manifest m;
  m.id = man.read_scalar<std::uint64_t>("save_id");
  expect(man, "streams", std::int64_t(streams), "the streams of the learner");
  expect(man, "layers", std::int64_t(layers), "the model's layers");
  m.streams = streams;
  const std::int64_t groups = man.read_scalar<std::int64_t>("groups"), shards = man.read_scalar<std::int64_t>("shards");
  if (groups < 1 || shards < 1 || groups > std::int64_t(streams) || shards > (std::int64_t(1) << 24))
    man.fail("the saved grid " + std::to_string(groups) + " groups x " + std::to_string(shards) +
             " shards is not valid for " + std::to_string(streams) + " streams");
  m.groups = int(groups);
  m.shards = int(shards);
  m.columns = Index(man.read_scalar<std::int64_t>("columns"));
  Eigen::Matrix<std::int64_t, Eigen::Dynamic, 1> bounds(m.shards + 1);
  man.read_into("column_bounds", bounds);
  if (bounds(0) != 0 || bounds(m.shards) != m.columns)
    man.fail("column_bounds must run from 0 to the " + std::to_string(m.columns) + " columns");
  for (int s = 0; s < m.shards; ++s)
    if (bounds(s + 1) < bounds(s)) man.fail("column_bounds must not decrease");
  m.bounds.assign(bounds.data(), bounds.data() + bounds.size());
  man.verify_all();
  std::set<std::string> expected;
  for (int g = 0; g < m.groups; ++g)
    for (int s = 0; s < m.shards; ++s) expected.insert(shard_file(g, s));
  const std::regex pattern("shard-g([0-9]+)-s([0-9]+)\\.npz");
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, pattern) && !expected.count(name))
      fail(where, dir + ": the shard file " + name + " is not part of the saved " + m.grid() +
                      " (a file of another save?): refused");
  }
  for (const auto& name : expected)
    if (!fs::exists(fs::path(dir) / name))
      fail(where, dir + ": the shard file " + name + " of the saved " + m.grid() + " is missing");
  for (int g = 0; g < m.groups; ++g)
    for (int s = 0; s < m.shards; ++s) {
      NpzReader r((fs::path(dir) / shard_file(g, s)).string(), where);
      expect(r, "format_version", grid_checkpoint_format_version, "this library's grid checkpoint format");
      if (r.read_scalar<std::uint64_t>("save_id") != m.id)
        r.fail("the file belongs to another save than the manifest (save_id differs): refused");
      expect(r, "streams", std::int64_t(streams), "the manifest's streams");
      expect(r, "groups", groups, "the manifest's groups");
      expect(r, "shards", shards, "the manifest's shards");
      expect(r, "group", g, "the group its name gives");
      expect(r, "shard", s, "the shard its name gives");
      expect(r, "first_stream", std::int64_t(m.first_stream(g)), "the group's first stream");
      expect(r, "end_stream", std::int64_t(m.first_stream(g + 1)), "the group's end stream");
      expect(r, "column_begin", std::int64_t(m.bounds[std::size_t(s)]), "the manifest's bounds");
      expect(r, "column_end", std::int64_t(m.bounds[std::size_t(s) + 1]), "the manifest's bounds");
    }
  return m;
}

/// @brief Stages @p model's parameters from dir/model.npz (committed later, by the caller), and
/// refuses saved masks other than the live model's (the learner is laid out for those).
template <typename S, typename Sur>
std::unique_ptr<CheckpointItem::Staged> stage_model(const std::string& dir, Model<S, Sur>& model, const char* where) {
  NpzReader r((std::filesystem::path(dir) / "model.npz").string(), where);
  sparse_rtrl::detail::require_checkpoint_version(r);
  sparse_rtrl::detail::ModelItem<S, Sur> item(model);
  std::unique_ptr<CheckpointItem::Staged> staged = item.stage(r, CheckpointItem::Context{});
  const auto& masks = sparse_rtrl::detail::ModelItem<S, Sur>::masks_of(*staged);
  for (Index k = 0; k < model.layers(); ++k)
    if (!(masks[std::size_t(k)] == model.mask(k)))
      r.fail("the saved mask of layer " + std::to_string(k) +
             " differs from the live model's: construct the learner over a model with the saved masks "
             "(e.g. io::load_model(dir + \"/model.npz\"))");
  r.verify_all();
  return staged;
}

/// One stream's state for a column window [mb, me): what a learner of that window holds.
template <typename S>
struct StreamSlice {
  using Vector = Eigen::Matrix<S, Eigen::Dynamic, 1>;
  using RowMatrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Index steps = 0;
  bool valid = true;
  std::vector<Vector> state;
  std::vector<EgruStepCache<S>> cache;
  std::vector<RowMatrix> M;  ///< per layer: n_k x (the window's columns of layer k's blocks)
  Vector grad;               ///< the window's columns
};

/// @brief Stream b's state for the window [mb, me) of global columns, laid out as @p shape (any
/// Rtrl of the model's masks: its column offsets, layouts, units and cache shapes), read from
/// the files of the saved group that advanced b: the forward state from its shard 0, each column
/// from the shard that holds it. Checks CRCs of what it reads and finite values.
template <typename S, typename Sur>
StreamSlice<S> stage_stream(const std::string& dir, const char* where, Index b, const Manifest& m, Index mb, Index me,
                            const Rtrl<S, Sur>& shape) {
  namespace fs = std::filesystem;
  using Vector = typename StreamSlice<S>::Vector;
  using RowMatrix = typename StreamSlice<S>::RowMatrix;
  const std::string p = "s" + std::to_string(b);
  const int sg = m.group_of_stream(b);
  StreamSlice<S> st;
  const Index L = shape.layers();
  std::vector<Index> width(static_cast<std::size_t>(L), 0);  // columns of layer k's blocks
  for (Index k = 0; k < L; ++k) width[std::size_t(k)] = shape.column_offset(k) + shape.layout(k).columns();
  st.grad.resize(me - mb);
  for (Index k = 0; k < L; ++k) {
    st.M.emplace_back(shape.units(k), std::max<Index>(0, std::min(width[std::size_t(k)], me) - mb));
    st.cache.push_back(shape.last_step_cache(k));
    st.state.push_back(Vector(shape.units(k)));
  }
  for (int ss = 0; ss < m.shards; ++ss) {
    const Index fb = m.bounds[std::size_t(ss)], fe = m.bounds[std::size_t(ss) + 1];
    const bool overlaps = std::max(fb, mb) < std::min(fe, me);
    if (ss != 0 && !overlaps) continue;
    NpzReader r((fs::path(dir) / shard_file(sg, ss)).string(), where);
    if (ss == 0) {  // the stream's forward state: the same in every shard's file
      const std::int64_t steps = r.read_scalar<std::int64_t>(p + "/steps");
      if (steps < 0 || steps > std::int64_t(1) << 53) r.fail("entry '" + p + "/steps' out of range");
      st.steps = Index(steps);
      st.valid = r.read_scalar<bool>(p + "/last_step_valid");
      for (Index k = 0; k < L; ++k) {
        const std::string q = p + "/l" + std::to_string(k);
        r.read_into(q + "/state", st.state[std::size_t(k)]);
        if (!st.state[std::size_t(k)].allFinite()) r.fail("entry '" + q + "/state' is not finite");
        for (const auto& f : sparse_rtrl::detail::cache_fields<S>(st.cache[std::size_t(k)])) {
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
      const Index khi = std::min(hi, w);
      RowMatrix file(shape.units(k), fcols);
      r.read_into(p + "/l" + std::to_string(k) + "/influence", file);
      if (khi > lo) st.M[std::size_t(k)].middleCols(lo - mb, khi - lo) = file.middleCols(lo - fb, khi - lo);
    }
  }
  if (!st.grad.allFinite()) fail(where, "stream " + std::to_string(b) + ": the saved gradient is not finite");
  for (const auto& M : st.M)
    if (!M.allFinite()) fail(where, "stream " + std::to_string(b) + ": the saved influence is not finite");
  return st;
}

}  // namespace grid_files

/// @brief Loads a StreamGrid checkpoint (saved by mpi::save_checkpoint() on any number of ranks,
/// any grid) into a plain, one-process RtrlStreams of the same B over a model with the saved
/// masks, and its model: no MPI needed. All or nothing: every file is checked and every stream
/// staged before anything changes; std::invalid_argument otherwise. Work counters restart at 0.
template <typename S, typename Sur>
void load_grid_checkpoint(RtrlStreams<S, Sur>& streams, const std::string& dir) {
  const char* where = "sparse_rtrl::io::load_grid_checkpoint()";
  Model<S, Sur>& model = streams.model();
  streams.follow_mask();
  const grid_files::Manifest m = grid_files::check_directory(dir, streams.streams(), model.layers(), where);
  auto model_staged = grid_files::stage_model(dir, model, where);
  const Index P = streams.stream(0).columns();
  if (m.columns != P) grid_files::fail(where, "the manifest's columns differ from the learner's");
  std::vector<ParameterMask> masks;
  for (Index k = 0; k < model.layers(); ++k) masks.push_back(model.mask(k));
  typename RtrlStreams<S, Sur>::StagedState staged;
  for (Index b = 0; b < streams.streams(); ++b) {
    const auto& learner = streams.stream(b);
    grid_files::StreamSlice<S> slice = grid_files::stage_stream(dir, where, b, m, 0, P, learner);
    auto st = learner.stage_state(masks, false);
    st.steps = slice.steps;
    st.steps_valid = slice.valid;
    st.gradient() = slice.grad;
    for (Index k = 0; k < model.layers(); ++k) {
      st.state(k) = slice.state[std::size_t(k)];
      st.step_cache(k) = slice.cache[std::size_t(k)];
      const auto& M = slice.M[std::size_t(k)];
      st.write_influence(k, 0, M.data(), std::size_t(M.size()));
    }
    staged.push_back(std::move(st));
  }
  streams.restore_state(std::move(staged));  // checks first: on a throw nothing has changed
  model_staged->commit();                     // cannot fail
}

}  // namespace io
}  // namespace sparse_rtrl
