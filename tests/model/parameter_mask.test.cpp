#include "test_support.hpp"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

using namespace sparse_rtrl;

TEST_CASE("Random masks keep the requested fraction, reproducibly", "[mask]") {
  const auto m = ParameterMask::random(20, 6, 0.5, 0.1, 7);
  CHECK(m.kept_W() == 180);  // round(0.5 * 60 * 6)
  CHECK(m.kept_R() == 120);  // round(0.1 * 60 * 20)
  CHECK(m == ParameterMask::random(20, 6, 0.5, 0.1, 7));
  CHECK_FALSE(m == ParameterMask::random(20, 6, 0.5, 0.1, 8));
  CHECK(ParameterMask::random(3, 2, 1.0, 0.0, 1).kept_R() == 0);
  CHECK(ParameterMask::dense(3, 2).all_kept());
}

TEST_CASE("Magnitude masks keep the largest weights", "[mask]") {
  auto p = init_torch_like<double>(5, 2, {3, 0.3});
  const auto m = ParameterMask::from_magnitude(p, 0.5, 0.2);
  CHECK(m.kept_R() == 15);
  double smallest_kept = 1e9, largest_pruned = 0;
  for (Index i = 0; i < p.R.rows(); ++i)
    for (Index j = 0; j < p.R.cols(); ++j)
      (m.R()(i, j) ? smallest_kept : largest_pruned) =
          m.R()(i, j) ? std::min(smallest_kept, std::abs(p.R(i, j))) : std::max(largest_pruned, std::abs(p.R(i, j)));
  CHECK(smallest_kept >= largest_pruned);
  m.apply(p);
  CHECK(m.respected_by(p));
  CHECK((p.R.array() != 0).count() == 15);
}

TEST_CASE("Masks reject bad input", "[mask][errors]") {
  using Catch::Matchers::Contains;
  REQUIRE_THROWS_WITH(ParameterMask::random(3, 2, 1.5, 0.5), Contains("density_W must be in [0, 1], received 1.5"));
  REQUIRE_THROWS_WITH(ParameterMask::random(3, 2, 0.5, -0.1), Contains("density_R"));
  REQUIRE_THROWS_AS(ParameterMask::random(3, 2, std::nan(""), 0.5), std::invalid_argument);
  REQUIRE_THROWS_WITH(ParameterMask::dense(0, 2), Contains("n_units must be > 0"));
  using B = ParameterMask::BoolMatrix;
  REQUIRE_THROWS_WITH(ParameterMask(B::Constant(9, 2, true), B::Constant(8, 3, true)), Contains("keep_R must be 9 x 3, received 8 x 3"));
  REQUIRE_THROWS_WITH(ParameterMask(B::Constant(6, 2, true), B::Constant(9, 3, true)), Contains("keep_W must be 9 x 2, received 6 x 2"));
  auto p = init_torch_like<double>(4, 2);
  REQUIRE_THROWS_WITH(ParameterMask::dense(3, 2).apply(p), Contains("mask is for n = 3, d = 2 but the parameters have n = 4, d = 2"));
}

TEMPLATE_TEST_CASE("apply zeroes exactly the pruned entries and leaves kept ones bitwise", "[mask]", float, double) {
  using S = TestType;
  auto p = init_torch_like<S>(6, 3, {5, S(0.3)});
  // Non-finite values in pruned slots (an optimizer bug, say) must be cleared too.
  const auto m = ParameterMask::random(6, 3, 0.4, 0.3, 11);
  const auto before = p;
  p.R(0, 0) = std::numeric_limits<S>::quiet_NaN();
  p.W(1, 0) = std::numeric_limits<S>::infinity();
  const bool R00_kept = m.R()(0, 0), W10_kept = m.W()(1, 0);
  m.apply(p);
  for (Index e = 0; e < p.R.size(); ++e) {
    if (!m.R().data()[e]) {
      CHECK(p.R.data()[e] == S(0));
      CHECK_FALSE(std::signbit(p.R.data()[e]));
    } else if (!(e == 0 && R00_kept)) {
      CHECK(p.R.data()[e] == before.R.data()[e]);
    }
  }
  for (Index i = 0; i < p.W.rows(); ++i)
    for (Index j = 0; j < p.W.cols(); ++j) {
      if (!m.W()(i, j)) CHECK(p.W(i, j) == S(0));
      else if (!(i == 1 && j == 0 && W10_kept)) CHECK(p.W(i, j) == before.W(i, j));
    }
  CHECK(p.bW == before.bW);
  CHECK(p.theta == before.theta);
}

namespace {

/// Column-major indices of the kept entries, to pin a mask's exact pattern.
std::vector<Index> kept_indices(const ParameterMask::BoolMatrix& m) {
  std::vector<Index> kept;
  for (Index e = 0; e < m.size(); ++e)
    if (m.data()[e]) kept.push_back(e);
  return kept;
}

bool gate_blocks_equal(const ParameterMask::BoolMatrix& m) {
  const Index n = m.rows() / 3;
  return (m.topRows(n) == m.middleRows(n, n)).all() && (m.topRows(n) == m.bottomRows(n)).all();
}

}  // namespace

TEST_CASE("Independent random masks are unchanged by the sharing option", "[mask][sharing]") {
  // Pinned from the implementation before MaskSharing existed: seeds keep their masks.
  const auto m = ParameterMask::random(4, 2, 0.5, 0.25, 7);
  CHECK(kept_indices(m.W()) == std::vector<Index>{0, 4, 7, 8, 9, 10, 11, 13, 17, 20, 21, 23});
  CHECK(kept_indices(m.R()) == std::vector<Index>{0, 2, 3, 7, 10, 18, 33, 36, 38, 40, 43, 45});
  CHECK(m == ParameterMask::random(4, 2, 0.5, 0.25, 7, MaskSharing::independent));
  CHECK(InfluenceLayout(ParameterMask::random(64, 8, 0.1, 0.1, 2), true).coupling_nonzeros() == 1127);
}

TEST_CASE("Gate-shared random masks: one pattern in all three gates, at the requested density",
          "[mask][sharing]") {
  for (Index n : {1, 7, 64})
    for (Index d : {1, 5})
      for (double density : {0.0, 0.1, 0.25, 0.5, 1.0}) {
        INFO("n " << n << ", d " << d << ", density " << density);
        const auto m = ParameterMask::random(n, d, density, density, 3, MaskSharing::gate_shared);
        CHECK(gate_blocks_equal(m.W()));
        CHECK(gate_blocks_equal(m.R()));
        CHECK(m.gate_shared());
        const Index connections_R = std::llround(density * double(n * n));
        const Index connections_W = std::llround(density * double(n * d));
        CHECK(m.R().topRows(n).count() == connections_R);
        CHECK(m.W().topRows(n).count() == connections_W);
        CHECK(m.kept_R() == 3 * connections_R);
        CHECK(m.kept_W() == 3 * connections_W);
        // A_t(i, j) exists iff connection j -> i does: the coupling is as sparse as one block.
        CHECK(InfluenceLayout(m, true).coupling_nonzeros() == connections_R);
        // P_kept depends only on the kept counts.
        CHECK(InfluenceLayout(m, true).columns() == m.kept_W() + m.kept_R() + 7 * n);
      }
  CHECK(ParameterMask::dense(4, 2).gate_shared());
  CHECK_FALSE(ParameterMask::random(16, 4, 0.5, 0.5, 1).gate_shared());
  CHECK(std::string(mask_sharing_name(MaskSharing::gate_shared)) == "gate_shared");
  CHECK(std::string(mask_sharing_name(MaskSharing::independent)) == "independent");
}

TEST_CASE("Gate-shared masks couple a fraction d of the unit pairs, independent ones about 1 - (1 - d)^3",
          "[mask][sharing]") {
  const Index n = 64, d = 8;
  for (double density : {0.05, 0.1, 0.25}) {
    INFO("density " << density);
    const auto shared = ParameterMask::random(n, d, density, density, 11, MaskSharing::gate_shared);
    const auto independent = ParameterMask::random(n, d, density, density, 11);
    // Equal weight counts (to rounding of n * n vs 3 n * n), so equal P_kept.
    CHECK(std::abs(double(shared.kept_R() - independent.kept_R())) <= 3.0);
    const double pairs = double(n * n);
    const double fill_shared = double(InfluenceLayout(shared, true).coupling_nonzeros()) / pairs;
    const double fill_independent = double(InfluenceLayout(independent, true).coupling_nonzeros()) / pairs;
    CHECK(fill_shared == Approx(density).margin(0.5 / pairs));
    CHECK(fill_independent == Approx(1.0 - std::pow(1.0 - density, 3)).margin(0.03));
  }
}

TEST_CASE("Gate-shared masks are reproducible per seed", "[mask][sharing]") {
  const auto a = ParameterMask::random(20, 6, 0.3, 0.2, 5, MaskSharing::gate_shared);
  CHECK(a == ParameterMask::random(20, 6, 0.3, 0.2, 5, MaskSharing::gate_shared));
  CHECK_FALSE(a == ParameterMask::random(20, 6, 0.3, 0.2, 6, MaskSharing::gate_shared));
  CHECK_FALSE(a == ParameterMask::random(20, 6, 0.3, 0.2, 5, MaskSharing::independent));
}

TEST_CASE("Gate-shared magnitude masks keep the connections of largest gate-weight norm",
          "[mask][sharing]") {
  auto p = init_torch_like<double>(6, 3, {4, 0.3});
  const auto m = ParameterMask::from_magnitude(p, 0.5, 0.25, MaskSharing::gate_shared);
  CHECK(m.gate_shared());
  CHECK(m.R().topRows(6).count() == 9);  // round(0.25 * 36)
  CHECK(m.W().topRows(6).count() == 9);  // round(0.5 * 18)
  auto norm = [](const Eigen::MatrixXd& w, Index i, Index j) {
    const Index n = w.rows() / 3;
    return std::sqrt(w(i, j) * w(i, j) + w(n + i, j) * w(n + i, j) + w(2 * n + i, j) * w(2 * n + i, j));
  };
  for (const auto* keep : {&m.R(), &m.W()}) {
    const Eigen::MatrixXd& w = keep == &m.R() ? p.R : p.W;
    double smallest_kept = 1e9, largest_pruned = 0;
    for (Index i = 0; i < 6; ++i)
      for (Index j = 0; j < w.cols(); ++j) {
        if ((*keep)(i, j)) smallest_kept = std::min(smallest_kept, norm(w, i, j));
        else largest_pruned = std::max(largest_pruned, norm(w, i, j));
      }
    CHECK(smallest_kept >= largest_pruned);
  }
  // The independent kind is still the default, and unchanged.
  CHECK(ParameterMask::from_magnitude(p, 0.5, 0.25) == ParameterMask::from_magnitude(p, 0.5, 0.25, MaskSharing::independent));
  CHECK(m == ParameterMask::from_magnitude(p, 0.5, 0.25, MaskSharing::gate_shared));
}

TEST_CASE("Mask sharing rejects values outside the enum", "[mask][sharing][errors]") {
  using Catch::Matchers::Contains;
  const auto bad = static_cast<MaskSharing>(7);
  REQUIRE_THROWS_WITH(ParameterMask::random(3, 2, 0.5, 0.5, 1, bad),
                      Contains("ParameterMask::random(): sharing must be MaskSharing::independent or "
                               "MaskSharing::gate_shared, received 7"));
  const auto p = init_torch_like<double>(3, 2);
  REQUIRE_THROWS_WITH(ParameterMask::from_magnitude(p, 0.5, 0.5, bad),
                      Contains("ParameterMask::from_magnitude(): sharing must be"));
  CHECK(std::string(mask_sharing_name(bad)) == "invalid");
}

TEMPLATE_TEST_CASE("RTRL with a gate-shared mask equals BPTT, with fewer coupling entries",
                   "[mask][sharing][rtrl]", float, double) {
  using S = TestType;
  using test::Mat;
  const Index n = 24, d = 4, T = 300;
  const TriangularSurrogate<S> surrogate(S(1.0), S(0.25));
  for (double density : {0.1, 0.3}) {
    INFO("density " << density);
    const auto shared = ParameterMask::random(n, d, density, density, 21, MaskSharing::gate_shared);
    const auto independent = ParameterMask::random(n, d, density, density, 21);
    const EgruCell<S> cell(test::firing_parameters<S>(n, d, 22), CellOptions{true}, surrogate);
    const Mat<S> X = test::random_matrix<S>(T, d, 23);
    const Mat<S> G = test::random_matrix<S>(T, n, 24);

    Model<S> shared_model(cell, shared);
    Bptt<S> bptt(shared_model);
    bptt.forward(X);
    const auto g_ref = bptt.backward(G);
    Rtrl<S> rtrl(shared_model);
    const auto g = test::rtrl_gradient(rtrl, X, G);
    CHECK(test::relative_error(g, g_ref) <= test::Tolerance<S>::gradient);
    CHECK(shared.respected_by(g));
    REQUIRE(g_ref.R.allFinite());
    CHECK(rtrl.layout().coupling_nonzeros() == shared.kept_R() / 3);

    // The same network under an independent mask of the same density: more coupling entries.
    Model<S> independent_model(cell, independent);
    Rtrl<S> other(independent_model);
    test::rtrl_gradient(other, X, G);
    CHECK(other.layout().coupling_nonzeros() > rtrl.layout().coupling_nonzeros());
    CHECK(rtrl.total_work().active_rows > 0);
  }
}

TEST_CASE("Mask sizes whose stacked products overflow are refused", "[mask][errors]") {
  // ParameterMask::dense(2^62, 1) used to wrap 3n to a negative size (undefined behaviour); from
  // Python it returned a corrupt mask whose repr() crashed.
  using Catch::Matchers::Contains;
  const Index huge = Index(1) << 62, big = Index(1) << 31, wide = Index(1) << 40;
  REQUIRE_THROWS_WITH(ParameterMask::dense(huge, 1),
                      Contains("sparse_rtrl::ParameterMask::dense()") && Contains("3 * n_units = 3 * 4611686018427387904"));
  REQUIRE_THROWS_WITH(ParameterMask::dense(big, wide), Contains("3 * n_units * n_units"));
  REQUIRE_THROWS_WITH(ParameterMask::random(huge, 1, 0.5, 0.5),
                      Contains("sparse_rtrl::ParameterMask::random()") && Contains("3 * n_units"));
  REQUIRE_THROWS_AS(ParameterMask::random(big, wide, 0.5, 0.5), std::invalid_argument);
  REQUIRE_THROWS_AS(ParameterMask::random(huge, 1, 0.5, 0.5, 0, MaskSharing::gate_shared), std::invalid_argument);
}
