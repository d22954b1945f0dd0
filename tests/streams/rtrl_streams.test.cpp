// RtrlStreams: B streams over one shared Model are bitwise B independent single-stream learners
// fed the same data, for any number of threads; per-stream resets; pruning mid-run; errors.
#include "test_support.hpp"

#include <cstring>
#include <memory>
#include <vector>

using namespace sparse_rtrl;
using test::Mat;
using test::Vec;

namespace {

/// Bitwise equality (memcmp: -0 and +0 differ, NaN equals itself) of two dense matrices.
template <typename A, typename B>
bool same_bits(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  using S = typename A::Scalar;
  const Mat<S> x = a, y = b;
  return x.rows() == y.rows() && x.cols() == y.cols() &&
         std::memcmp(x.data(), y.data(), sizeof(S) * std::size_t(x.size())) == 0;
}

/// Big enough that the step's column split runs on several threads ((nnz + n) P > 2e5), with P
/// not a multiple of the register chunk.
template <typename S>
Model<S> make_model(std::uint64_t seed) {
  const Index n = 48, d = 7;
  const auto p = test::firing_parameters<S>(n, d, seed);
  return Model<S>(EgruCell<S>(p, CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.3))),
                  ParameterMask::random(n, d, 0.5, 0.5, seed + 1));
}

/// Stream b's input and loss at step t: different in every stream.
template <typename S>
struct StreamData {
  std::vector<Mat<S>> X, G;  // one T x d / T x n matrix per stream
  StreamData(Index B, Index T, Index n, Index d) {
    for (Index b = 0; b < B; ++b) {
      X.push_back(test::random_matrix<S>(T, d, 100 + std::uint64_t(b)));
      Mat<S> G_b = test::random_matrix<S>(T, n, 200 + std::uint64_t(b));
      for (Index t = 0; t < T; ++t)
        if ((t + b) % 4 == 1) G_b.row(t).setZero();  // steps without a loss in this stream
      G.push_back(G_b);
    }
  }
};

bool resets_at(Index b, Index t) { return b % 2 == 1 && t == 9 + 2 * b; }

}  // namespace

TEMPLATE_TEST_CASE("RtrlStreams equals independent Rtrl learners bitwise, for any thread count", "[streams]", float,
                   double) {
  using S = TestType;
  const Index T = 30, prune_at = 17, update_at = 12;
  for (Index B : {Index(1), Index(3), Index(8)})
    for (int threads : {1, 2, 3}) {
      INFO("B = " << B << ", threads = " << threads);
      Model<S> shared = make_model<S>(5);
      Model<S> reference_model = make_model<S>(5);
      const Index n = shared.units(), d = shared.inputs();
      const StreamData<S> data(B, T, n, d);
      RtrlOptions options;
      options.threads = threads;
      RtrlStreams<S> streams(shared, B, options);
      REQUIRE(streams.streams() == B);
      REQUIRE(streams.threads() == threads);
      std::vector<Rtrl<S>> reference;
      for (Index b = 0; b < B; ++b) reference.emplace_back(reference_model);
      const ParameterMask pruned = ParameterMask::random(n, d, 0.3, 0.35, 77);
      Adam<S> adam_streams(AdamOptions<S>{S(1e-2)}), adam_reference(AdamOptions<S>{S(1e-2)});

      Mat<S> X(B, d), G(B, n);
      for (Index t = 0; t < T; ++t) {
        if (t == prune_at) {
          streams.set_mask(pruned);
          reference_model.set_mask(pruned);  // the reference learners follow at their next step
        }
        for (Index b = 0; b < B; ++b) {
          if (resets_at(b, t)) {
            streams.reset(b);
            reference[std::size_t(b)].reset();
          }
          X.row(b) = data.X[std::size_t(b)].row(t);
          G.row(b) = data.G[std::size_t(b)].row(t);
        }
        streams.step(X);
        streams.accumulate_gradient(G);
        for (Index b = 0; b < B; ++b) {
          auto& r = reference[std::size_t(b)];
          r.step(X.row(b));
          if (!G.row(b).isZero(0)) r.accumulate_gradient(G.row(b));
        }
        if (t == update_at) {
          // One optimizer step on each model from its summed gradient: the streams share theirs.
          EgruParameters<S> g_streams = streams.gradient(), g_reference(n, d);
          g_reference.set_zero();
          for (auto& r : reference) g_reference += r.gradient();
          adam_streams.step(shared, g_streams);
          adam_reference.step(reference_model, g_reference);
          CHECK(same_bits(shared.parameters().R, reference_model.parameters().R));
        }
      }
      Vec<S> summed = Vec<S>::Zero(reference.front().gradient_columns().size());
      for (Index b = 0; b < B; ++b) {
        INFO("stream " << b);
        const auto& s = streams.stream(b);
        const auto& r = reference[std::size_t(b)];
        CHECK(same_bits(s.state(), r.state()));
        CHECK(same_bits(s.output(), r.output()));
        CHECK(same_bits(streams.outputs().row(b).transpose(), r.output()));
        CHECK(same_bits(streams.events().row(b).transpose(), r.events()));
        CHECK(same_bits(s.influence(), r.influence()));
        CHECK(same_bits(s.gradient_columns(), r.gradient_columns()));
        CHECK(s.steps() == r.steps());
        summed += r.gradient_columns();
      }
      CHECK(same_bits(streams.gradient_columns(), summed));
      CHECK(streams.layout().columns() == pruned.kept_W() + pruned.kept_R() + 6 * n + n);
      CHECK(streams.total_work().propagation_fma > 0);
    }
}

TEMPLATE_TEST_CASE("RtrlStreams' gradient equals BPTT's summed over streams", "[streams][bptt]", float, double) {
  using S = TestType;
  Model<S> model = make_model<S>(9);
  const Index B = 3, T = 25, n = model.units(), d = model.inputs();
  const StreamData<S> data(B, T, n, d);
  RtrlOptions options;
  options.threads = 2;
  RtrlStreams<S> streams(model, B, options);
  Mat<S> X(B, d), G(B, n);
  for (Index t = 0; t < T; ++t) {
    for (Index b = 0; b < B; ++b) {
      X.row(b) = data.X[std::size_t(b)].row(t);
      G.row(b) = data.G[std::size_t(b)].row(t);
    }
    streams.step(X);
    streams.accumulate_gradient(G);
  }
  EgruParameters<S> expected(n, d);
  expected.set_zero();
  Bptt<S> bptt(model);
  for (Index b = 0; b < B; ++b) {
    bptt.forward(data.X[std::size_t(b)]);
    expected += bptt.backward(data.G[std::size_t(b)]);
  }
  CHECK(test::relative_error(streams.gradient(), expected) <= test::Tolerance<S>::gradient);
}

TEST_CASE("RtrlStreams: a stream reset from c0 starts there, other streams go on", "[streams]") {
  Model<double> model = make_model<double>(11);
  const Index n = model.units(), d = model.inputs();
  RtrlStreams<double> streams(model, 2);
  Rtrl<double> alone(model), other(model);
  const Mat<double> X = test::random_matrix<double>(2, d, 3);
  streams.step(X);
  alone.step(X.row(0));
  other.step(X.row(1));
  const Vec<double> c0 = test::random_matrix<double>(n, 1, 4);
  streams.reset(0, c0);
  alone.reset(c0);
  CHECK(streams.stream(0).state() == c0);
  CHECK(streams.stream(0).steps() == 0);
  CHECK(streams.stream(1).steps() == 1);
  streams.step(X);
  alone.step(X.row(0));
  other.step(X.row(1));
  CHECK(same_bits(streams.stream(0).state(), alone.state()));
  CHECK(same_bits(streams.stream(1).state(), other.state()));
  CHECK(same_bits(streams.stream(1).influence(), other.influence()));
}

TEST_CASE("RtrlStreams rejects bad input and leaves every stream unchanged", "[streams][errors]") {
  using Catch::Matchers::Contains;
  Model<float> model = make_model<float>(13);
  const Index n = model.units(), d = model.inputs();
  REQUIRE_THROWS_WITH(RtrlStreams<float>(model, 0), Contains("streams must be >= 1, received 0"));
  RtrlOptions zero_threads;
  zero_threads.threads = 0;
  REQUIRE_THROWS_WITH(RtrlStreams<float>(model, 2, zero_threads), Contains("options.threads must be >= 1"));

  RtrlStreams<float> streams(model, 3);
  REQUIRE_THROWS_AS(streams.accumulate_gradient(Mat<float>::Ones(3, n)), std::logic_error);
  const Mat<float> X = test::random_matrix<float>(3, d, 5);
  streams.step(X);
  const Vec<float> state0 = streams.stream(0).state();
  const Mat<float> M0 = streams.stream(0).influence();
  REQUIRE_THROWS_WITH(streams.step(Mat<float>::Zero(2, d)),
                      Contains("sparse_rtrl::RtrlStreams::step()") && Contains("X must be 3 x 7") && Contains("received 2 x 7"));
  Mat<float> bad = X;
  bad(2, 1) = std::nanf("");
  REQUIRE_THROWS_WITH(streams.step(bad), Contains("finite"));
  REQUIRE_THROWS_WITH(streams.accumulate_gradient(Mat<float>::Zero(3, n + 1)), Contains("G must be 3 x 48"));
  REQUIRE_THROWS_AS(streams.reset(3), std::out_of_range);
  REQUIRE_THROWS_AS(streams.stream(-1), std::out_of_range);
  CHECK(streams.stream(0).state() == state0);
  CHECK(Mat<float>(streams.stream(0).influence()) == M0);
  CHECK(streams.stream(0).steps() == 1);

  // A non-finite parameter written into the shared model: refused in every stream, nothing advanced.
  model.parameters().bW(1) = std::nanf("");
  REQUIRE_THROWS_WITH(streams.step(X), Contains("sparse_rtrl::RtrlStreams::step()") && Contains("bW"));
  CHECK(streams.stream(0).state() == state0);
  CHECK(streams.stream(2).steps() == 1);
  // The refused step is invisible (issue 20, item 9): outputs, events, caches and validity are
  // those of the last successful step, which may still take a loss.
  for (Index b = 0; b < 3; ++b) {
    CHECK(streams.stream(b).last_step_valid());
    CHECK(streams.stream(b).output().allFinite());
    CHECK(streams.stream(b).last_step_cache().c.allFinite());
  }
  CHECK(streams.outputs().allFinite());
  streams.accumulate_gradient(Mat<float>::Ones(3, n));
}

TEMPLATE_TEST_CASE("A refused RtrlStreams step leaves every stream bitwise unchanged", "[streams][errors]", float, double) {
  using S = TestType;
  const Index n = 5, d = 3;
  Model<S> model(EgruCell<S>(test::firing_parameters<S>(n, d, 51)));
  RtrlStreams<S> streams(model, 3);
  for (Index t = 0; t < 3; ++t) streams.step(test::random_matrix<S>(3, d, 52 + std::uint64_t(t)));
  std::vector<EgruStepCache<S>> caches;
  std::vector<Mat<S>> M;
  for (Index b = 0; b < 3; ++b) {
    caches.push_back(streams.stream(b).last_step_cache());
    M.push_back(streams.stream(b).influence());
  }
  const Mat<S> Y = streams.outputs(), O = streams.events();
  model.parameters().W(0, 0) = std::numeric_limits<S>::quiet_NaN();
  REQUIRE_THROWS_WITH(streams.step(test::random_matrix<S>(3, d, 60)), Catch::Matchers::Contains("W must be finite"));
  for (Index b = 0; b < 3; ++b) {
    CHECK(test::same_bits(streams.stream(b).last_step_cache(), caches[std::size_t(b)]));
    CHECK(test::same_bits(streams.stream(b).influence(), M[std::size_t(b)]));
    CHECK(streams.stream(b).last_step_valid());
    CHECK(streams.stream(b).steps() == 3);
  }
  CHECK(test::same_bits(streams.outputs(), Y));
  CHECK(test::same_bits(streams.events(), O));
}

TEST_CASE("RtrlStreams refuses influence matrices larger than the machine, with the size", "[streams][errors]") {
  using Catch::Matchers::Contains;
  Model<double> model(EgruCell<double>(256, 32));
  // 256 x ~270k doubles = 0.55 GB per stream: 100 000 streams are 55 TB.
  REQUIRE_THROWS_AS(RtrlStreams<double>(model, 100000), std::length_error);
  REQUIRE_THROWS_WITH(RtrlStreams<double>(model, 100000), Contains("100000 streams need") && Contains("GB"));
}

TEST_CASE("RtrlStreams reports its memory: B influence matrices of n x P_kept", "[streams]") {
  Model<float> model = make_model<float>(17);
  RtrlStreams<float> streams(model, 4);
  const std::size_t one = streams.stream(0).influence_bytes();
  CHECK(one == sizeof(float) * std::size_t(model.units()) * std::size_t(streams.stream(0).layout().columns()));
  CHECK(streams.influence_bytes() == 4 * one);
  CHECK(streams.state_bytes() > streams.influence_bytes());
}
