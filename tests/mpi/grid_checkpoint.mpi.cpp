// Checkpoints across rank counts (ctest: saved by mpiexec -n 3, a fixture; resumed by -n 2 and
// -n 1): a run of the grid learner saved on 3 ranks continues on 2 and on 1, on other grids,
// bitwise as the one-process RtrlStreams run that was never interrupted (run on every rank as
// the reference). A missing, extra or mismatched shard file, or no manifest, is refused on every
// rank with nothing changed. The directory comes from SPARSE_RTRL_GRID_CHECKPOINT_DIR.
#include <sparse_rtrl/mpi.hpp>

#include "mpi_support.hpp"
#include "test_support.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

using namespace sparse_rtrl;
using test::Mat;

namespace {

namespace fs = std::filesystem;

std::string grid_checkpoint_dir() {
  const char* dir = std::getenv("SPARSE_RTRL_GRID_CHECKPOINT_DIR");
  return dir ? std::string(dir) : (fs::temp_directory_path() / "sparse_rtrl_grid_checkpoint").string();
}


constexpr Index kB = 5, kD = 4, kSaveAt = 12, kEnd = 24;

/// One configuration of the run: its model, and the grids it is saved and resumed on.
template <typename S>
struct RunConfig {
  std::string name;
  std::vector<Index> sizes;
  bool events;
  Model<S> model() const {
    std::vector<EgruCell<S>> cells;
    std::vector<ParameterMask> masks;
    Index inputs = kD;
    for (std::size_t k = 0; k < sizes.size(); ++k) {
      auto p = test::firing_parameters<S>(sizes[k], inputs, 31 + 10 * k);
      if (k > 0) p.W *= S(2);
      cells.emplace_back(p, CellOptions{events}, TriangularSurrogate<S>(S(1), S(0.5)));
      masks.push_back(ParameterMask::random(sizes[k], inputs, 0.6, 0.6, 32 + 10 * k));
      inputs = sizes[k];
    }
    return Model<S>(cells, masks);
  }
};

/// The run's schedule, the same for every learner: inputs and losses per step, stream 2 reset at
/// step 4, an SGD update (from the summed gradient) at steps 6 and 18.
template <typename S, typename Learner>
void run_steps(Model<S>& model, Learner& learner, Index from, Index to, const std::function<void(Index)>& after = {}) {
  const Index n = model.units();
  std::vector<Sgd<S>> sgd(std::size_t(model.layers()));
  for (Index t = from; t < to; ++t) {
    if (t == 4) learner.reset(2);
    learner.step(test::random_matrix<S>(kB, kD, 300 + std::uint64_t(t)));
    learner.accumulate_gradient(test::random_matrix<S>(kB, n, 400 + std::uint64_t(t)));
    if (t == 6 || t == 18) {
      for (Index k = 0; k < model.layers(); ++k) sgd[std::size_t(k)].step(model, learner.gradient(k), k);
      learner.zero_gradient();
    }
    if (after) after(t);
  }
}

template <typename S>
std::vector<RunConfig<S>> run_configs() {
  return {RunConfig<S>{"stack-events", {12, 10}, true}, RunConfig<S>{"one-layer-gru", {18}, false}};
}

/// Saved grid (3 ranks) and resumed grid (2 or 1 ranks) for configuration c.
mpi::Grid saved_grid(std::size_t c) { return c == 0 ? mpi::Grid{1, 3} : mpi::Grid{3, 1}; }
mpi::Grid resumed_grid(std::size_t c, int ranks) {
  if (ranks == 1) return mpi::Grid{1, 1};
  return c == 0 ? mpi::Grid{2, 1} : mpi::Grid{1, 2};
}

template <typename S>
std::string config_dir(const RunConfig<S>& c) {
  return (fs::path(grid_checkpoint_dir()) / (c.name + "-" + (sizeof(S) == 4 ? "float" : "double"))).string();
}

}  // namespace

TEMPLATE_TEST_CASE("StreamGrid checkpoint: saved on 3 ranks", "[.grid_save]", float, double) {
  using S = TestType;
  const mpi::Communicator comm;
  REQUIRE(comm.size() == 3);
  const auto configs = run_configs<S>();
  for (std::size_t c = 0; c < configs.size(); ++c) {
    Model<S> model = configs[c].model();
    mpi::StreamGrid<S> learner(model, kB, saved_grid(c));
    run_steps(model, learner, 0, kSaveAt);
    mpi::save_checkpoint(learner, config_dir(configs[c]));
    // What is on disk: one file per rank, the model, the manifest.
    for (int g = 0; g < saved_grid(c).groups; ++g)
      for (int s = 0; s < saved_grid(c).shards; ++s)
        CHECK(fs::exists(fs::path(config_dir(configs[c])) / ("shard-g" + std::to_string(g) + "-s" + std::to_string(s) + ".npz")));
    CHECK(fs::exists(fs::path(config_dir(configs[c])) / "manifest.npz"));
  }
}

TEMPLATE_TEST_CASE("StreamGrid checkpoint: resumed on these ranks, bit for bit", "[.grid_resume]", float, double) {
  using S = TestType;
  const mpi::Communicator comm;
  const auto configs = run_configs<S>();
  for (std::size_t c = 0; c < configs.size(); ++c) {
    INFO(configs[c].name << " saved on " << saved_grid(c).str() << ", resumed on "
                         << resumed_grid(c, comm.size()).str());
    // The reference: one process, never interrupted.
    Model<S> reference_model = configs[c].model();
    RtrlStreams<S> reference(reference_model, kB);
    std::vector<Mat<S>> states_at;  // stream states of the reference after every step >= kSaveAt
    std::vector<Eigen::Matrix<S, Eigen::Dynamic, 1>> grads_at;
    run_steps(reference_model, reference, 0, kEnd, [&](Index t) {
      if (t < kSaveAt) return;
      Mat<S> st(kB, reference_model.units());
      for (Index b = 0; b < kB; ++b) st.row(b) = reference.stream(b).state().transpose();
      states_at.push_back(st);
      grads_at.push_back(reference.gradient_columns());
    });
    // The resumed run: a fresh model (its initial parameters, not the saved ones), loaded.
    Model<S> model = configs[c].model();
    mpi::StreamGrid<S> learner(model, kB, resumed_grid(c, comm.size()));
    mpi::load_checkpoint(learner, config_dir(configs[c]));
    bool same = true;
    run_steps(model, learner, kSaveAt, kEnd, [&](Index t) {
      const std::size_t i = std::size_t(t - kSaveAt);
      for (Index b = learner.first_stream(); b < learner.end_stream(); ++b)
        same &= test::same_bits(learner.stream(b).state(), Eigen::Matrix<S, Eigen::Dynamic, 1>(states_at[i].row(b).transpose()));
      same &= test::same_bits(learner.gradient_columns(), grads_at[i]);
    });
    for (Index k = 0; k < model.layers(); ++k) {
      same &= test::same_bits(model.parameters(k).W, reference_model.parameters(k).W);
      same &= test::same_bits(model.parameters(k).theta, reference_model.parameters(k).theta);
    }
    // And without MPI: into a plain RtrlStreams of one process (io::load_grid_checkpoint()).
    Model<S> plain_model = configs[c].model();
    RtrlStreams<S> plain(plain_model, kB);
    io::load_grid_checkpoint(plain, config_dir(configs[c]));
    bool plain_same = true;
    run_steps(plain_model, plain, kSaveAt, kEnd, [&](Index t) {
      const std::size_t i = std::size_t(t - kSaveAt);
      for (Index b = 0; b < kB; ++b)
        plain_same &= test::same_bits(plain.stream(b).state(), Eigen::Matrix<S, Eigen::Dynamic, 1>(states_at[i].row(b).transpose()));
      plain_same &= test::same_bits(plain.gradient_columns(), grads_at[i]);
    });
    for (Index k = 0; k < plain_model.layers(); ++k)
      plain_same &= test::same_bits(plain_model.parameters(k).R, reference_model.parameters(k).R);
    CHECK(same);
    CHECK(plain_same);
    CHECK(test::all_ranks(comm, same && plain_same));
  }
}

TEST_CASE("StreamGrid checkpoint: missing, extra, mismatched shard files and no manifest refused on every rank",
          "[.grid_resume]") {
  using S = double;
  const mpi::Communicator comm;
  const RunConfig<S> config = run_configs<S>()[0];
  const std::string saved = config_dir(config);
  const std::string bad = (fs::path(grid_checkpoint_dir()) / ("refusals-np" + std::to_string(comm.size()))).string();
  const std::string other = bad + "-other";
  Model<S> model = config.model();
  mpi::StreamGrid<S> learner(model, kB, resumed_grid(0, comm.size()));
  run_steps(model, learner, 0, 3);
  // Another save (another state, the same masks), for a shard of the wrong save.
  mpi::save_checkpoint(learner, other);
  const auto before_grad = learner.gradient_columns();
  const auto before_state = learner.stream(learner.first_stream()).state();
  const auto before_W = model.parameters(0).W;
  auto unchanged = [&]() {
    return test::same_bits(learner.gradient_columns(), before_grad) &&
           test::same_bits(learner.stream(learner.first_stream()).state(), before_state) &&
           test::same_bits(model.parameters(0).W, before_W);
  };
  // Each damaged copy made by rank 0, then a barrier before every rank loads it.
  auto damaged = [&](const std::function<void()>& damage) {
    comm.barrier();  // every rank is done with the previous copy
    if (comm.rank() == 0) {
      fs::remove_all(bad);
      fs::copy(saved, bad);
      damage();
    }
    comm.barrier();
  };
  bool all_unchanged = true;
  damaged([&]() { fs::remove(fs::path(bad) / "shard-g0-s1.npz"); });
  CHECK_THROWS_WITH(mpi::load_checkpoint(learner, bad), Catch::Contains("is missing"));
  all_unchanged &= unchanged();
  {
    Model<S> plain_model = config.model();
    RtrlStreams<S> plain(plain_model, kB);
    CHECK_THROWS_WITH(io::load_grid_checkpoint(plain, bad), Catch::Contains("is missing"));
    const Model<S> fresh = config.model();
    all_unchanged &= plain.stream(0).steps() == 0 && test::same_bits(plain_model.parameters(0).W, fresh.parameters(0).W);
  }
  damaged([&]() { fs::copy_file(fs::path(bad) / "shard-g0-s0.npz", fs::path(bad) / "shard-g0-s3.npz"); });
  CHECK_THROWS_WITH(mpi::load_checkpoint(learner, bad), Catch::Contains("is not part of the saved"));
  all_unchanged &= unchanged();
  damaged([&]() {
    fs::copy_file(fs::path(other) / ("shard-g0-s0.npz"), fs::path(bad) / "shard-g0-s0.npz",
                  fs::copy_options::overwrite_existing);
  });
  CHECK_THROWS_WITH(mpi::load_checkpoint(learner, bad), Catch::Contains("another save"));
  all_unchanged &= unchanged();
  damaged([&]() { fs::remove(fs::path(bad) / "manifest.npz"); });
  CHECK_THROWS_AS(mpi::load_checkpoint(learner, bad), std::invalid_argument);
  all_unchanged &= unchanged();
  // A damaged entry (a flipped byte in the middle of shard 2's file): the CRC check refuses it on
  // the ranks that read it, and every other rank refuses too.
  damaged([&]() {
    const fs::path f = fs::path(bad) / "shard-g0-s2.npz";
    std::fstream io(f, std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(std::streamoff(fs::file_size(f) / 2));
    char byte = 0;
    io.seekg(std::streamoff(fs::file_size(f) / 2));
    io.read(&byte, 1);
    byte = char(byte ^ 0x5a);
    io.seekp(std::streamoff(fs::file_size(f) / 2));
    io.write(&byte, 1);
  });
  CHECK_THROWS_AS(mpi::load_checkpoint(learner, bad), std::invalid_argument);
  all_unchanged &= unchanged();
  CHECK(all_unchanged);
  CHECK(test::all_ranks(comm, all_unchanged));
}
