// Fuzz-style: hundreds of truncated, bit-flipped and overwritten copies of a checkpoint, loaded
// into live objects that have moved on since. Each load must either throw std::invalid_argument
// and leave every object as it was, or (a flip in a byte no check covers: a timestamp, a
// version-made-by field) load exactly the saved state. Never a crash, another exception, or a
// partial load (run under ASan/UBSan by cmake/dev.sh sanitize).
#include "io/io_support.hpp"

#include <random>

using namespace sparse_rtrl;

namespace {

/// A small run with every kind of object a checkpoint holds.
struct Objects {
  Model<float> model;
  RtrlStreams<float> streams;
  Rtrl<float> single;
  Adam<float> adam;
  Sgd<float> sgd;
  LinearReadout<float> readout;
  MagnitudePruner pruner;
  std::mt19937_64 rng{5};
  std::int64_t t = 0;
  std::vector<double> history = std::vector<double>(4, 0.0);

  static Model<float> make_model() {
    std::vector<EgruCell<float>> cells;
    cells.emplace_back(test::firing_parameters<float>(6, 3, 1), CellOptions{true}, TriangularSurrogate<float>(1.0f, 0.3f));
    cells.emplace_back(test::firing_parameters<float>(4, 6, 2), CellOptions{true}, TriangularSurrogate<float>(1.0f, 0.3f));
    return Model<float>(cells, {ParameterMask::random(6, 3, 0.8, 0.6, 3), ParameterMask::random(4, 6, 0.7, 0.6, 4)});
  }
  Objects()
      : model(make_model()),
        streams(model, 2),
        single(model),
        adam(AdamOptions<float>{0.01f}),
        sgd(SgdOptions<float>{0.01f, 0.5f}),
        readout(3, 4),
        pruner(PruningSchedule{0.5, 0.4, 4}, model.mask(0)) {}

  io::Checkpoint checkpoint() {
    io::Checkpoint c;
    c.add(model).add("streams", streams).add("single", single).add("adam", adam).add("sgd", sgd);
    c.add("readout", readout).add("pruner", pruner).add("rng", rng).add("t", t).add("history", history);
    return c;
  }

  void step() {
    Eigen::MatrixXf X(2, 3);
    for (Index i = 0; i < X.size(); ++i) X(i) = float(double(rng() >> 11) * (2.0 / 9007199254740992.0) - 1.0);
    streams.step(X);
    single.step(X.row(0));
    const Eigen::MatrixXf G = streams.outputs() * 0.5f;
    streams.accumulate_gradient(G);
    single.accumulate_gradient(G.row(0));
    EgruParameters<float> g;
    streams.gradient(0, g);
    adam.step(model.parameters(0), g, model.mask(0));
    single.gradient(1, g);
    sgd.step(model.parameters(1), g, model.mask(1));
    Eigen::VectorXf dy(4);
    readout.backward(streams.outputs().row(0).transpose(), Eigen::Vector3f(0.1f, -0.2f, 0.3f), dy);
    if (t % 3 == 1) pruner.prune(model);
    history[std::size_t(t % 4)] = double(G.sum());
    ++t;
  }
};

}  // namespace

TEST_CASE("Truncated and corrupted checkpoints throw cleanly and change nothing", "[io][checkpoint][fuzz]") {
  iotest::TempDir dir;
  const std::string saved_path = dir.file("saved.npz"), live_path = dir.file("live.npz");
  const std::string bad = dir.file("bad.npz"), probe = dir.file("probe.npz");
  Objects o;
  for (int k = 0; k < 5; ++k) o.step();
  o.checkpoint().save(saved_path);
  for (int k = 0; k < 3; ++k) o.step();  // the live objects have moved on
  o.checkpoint().save(live_path);
  const std::string saved = iotest::read_bytes(saved_path), live = iotest::read_bytes(live_path);
  REQUIRE(saved != live);
  INFO("checkpoint of " << saved.size() << " bytes");

  std::size_t refused = 0, loaded = 0;
  io::NpzWriterOptions scratch;
  scratch.sync = false;  // hundreds of probes: atomic, but no fsync
  // Loads @p bytes: a refusal must leave the objects as they were; a success must have loaded
  // exactly the saved state (the objects are then put back to the live state).
  auto attempt = [&](const std::string& bytes, const std::string& what) {
    INFO(what);
    iotest::write_bytes(bad, bytes);
    bool threw = false;
    try {
      o.checkpoint().load(bad);
    } catch (const std::invalid_argument& e) {
      threw = true;
      const std::string message = e.what();
      REQUIRE(message.find("sparse_rtrl::io::Checkpoint::load(): " + bad + ": ") == 0);
    }
    o.checkpoint().save(probe, scratch);
    if (threw) {
      ++refused;
      REQUIRE(iotest::read_bytes(probe) == live);
    } else {
      ++loaded;
      REQUIRE(iotest::read_bytes(probe) == saved);
      o.checkpoint().load(live_path);
    }
  };

  std::mt19937_64 rng(2024);
  // Truncations: every length near both ends, and 200 in between. A truncated file must never load.
  std::vector<std::size_t> lengths;
  for (std::size_t n = 0; n < 64; ++n) lengths.push_back(n);
  for (std::size_t n = saved.size() - 64; n < saved.size(); ++n) lengths.push_back(n);
  for (int k = 0; k < 200; ++k) lengths.push_back(std::size_t(rng() % saved.size()));
  for (std::size_t n : lengths) attempt(saved.substr(0, n), "truncated to " + std::to_string(n) + " bytes");
  REQUIRE(loaded == 0);

  // Single bit flips anywhere, and in the last 200 bytes (the zip's directories) especially.
  for (int k = 0; k < 400; ++k) {
    std::string b = saved;
    const std::size_t at = k < 100 ? saved.size() - 1 - std::size_t(rng() % 200) : std::size_t(rng() % saved.size());
    const int bit = int(rng() % 8);
    b[at] = char(b[at] ^ (1 << bit));
    attempt(b, "bit " + std::to_string(bit) + " of byte " + std::to_string(at) + " flipped");
  }
  // Runs of random bytes.
  for (int k = 0; k < 150; ++k) {
    std::string b = saved;
    const std::size_t at = std::size_t(rng() % saved.size()), len = 1 + std::size_t(rng() % 16);
    for (std::size_t i = at; i < std::min(b.size(), at + len); ++i) b[i] = char(rng() & 0xFF);
    if (b == saved) continue;
    attempt(b, std::to_string(len) + " random bytes at " + std::to_string(at));
  }
  // Appended garbage (the end record is then not at the end).
  attempt(saved + std::string(10, 'x'), "10 bytes appended");
  INFO(refused << " refused, " << loaded << " loaded unchanged data");
  REQUIRE(refused >= 700);
  CHECK(loaded * 10 < refused);  // only flips in fields no check covers (timestamps, attributes)
}
