// Exact sparse RTRL: skipping silent rows and pruned columns changes no gradient, and the skipped
// work is really skipped (work counters checked against an independent count).
#include "test_support.hpp"

using namespace sparse_rtrl;
using test::Mat;

namespace {

enum class Activity { all_silent, low, medium, all_active };

const char* name(Activity a) {
  switch (a) {
    case Activity::all_silent: return "all silent";
    case Activity::low: return "low";
    case Activity::medium: return "medium";
    default: return "all active";
  }
}

template <typename S>
EgruParameters<S> network(Index n, Index d, Activity activity, std::uint64_t seed) {
  auto p = test::firing_parameters<S>(n, d, seed);
  switch (activity) {
    case Activity::all_silent: p.theta.setConstant(S(10)); break;   // never fires, |c - theta| > 8
    case Activity::low: p.theta.array() += S(0.25); break;
    case Activity::medium: break;
    // theta = -1.5 always fires: by induction c > -1 (h = c + 1.5 > 0 and g > -1), and c stays
    // bounded because z < 1. Then s = 1 + c psi >= 1 - 0.35 > 0 for eps <= 1: every row active.
    case Activity::all_active: p.theta.setConstant(S(-1.5)); break;
  }
  return p;
}

/// Rows and coupling entries an exact sparse step must use, counted from BPTT's caches.
template <typename S>
std::uint64_t expected_propagation_fma(const Bptt<S>& bptt, const InfluenceLayout& layout) {
  std::uint64_t fma = 0;
  const Index n = layout.units();
  for (Index t = 0; t < bptt.length(); ++t) {
    const auto& k = bptt.step_cache(t);
    std::uint64_t nnz = 0;
    for (Index i = 0; i < n; ++i)
      for (Index p = layout.coupling_row_ptr()[i]; p < layout.coupling_row_ptr()[i + 1]; ++p)
        nnz += k.s_prev(layout.coupling_cols()[p]) != S(0);
    fma += (nnz + std::uint64_t(n)) * std::uint64_t(layout.columns());
  }
  return fma;
}

}  // namespace

TEMPLATE_TEST_CASE("Sparse RTRL == dense RTRL == BPTT over 1000 steps, all densities and activities",
                   "[rtrl][sparse]", float, double) {
  using S = TestType;
  const Index n = 16, d = 4, T = 1000;
  const auto tol = test::Tolerance<S>::gradient;
  std::uint64_t seed = 500;
  for (double density : {1.0, 0.5, 0.1})
    for (Activity activity : {Activity::all_silent, Activity::low, Activity::medium, Activity::all_active})
      for (auto sg : {std::pair<S, S>{S(1.0), S(0.1)}, std::pair<S, S>{S(0.7), S(1.0)}}) {
        ++seed;
        INFO("density " << density << ", activity " << name(activity) << ", surrogate (" << sg.first << ", " << sg.second << ")");
        const auto mask = ParameterMask::random(n, d, density, density, seed);
        const TriangularSurrogate<S> surrogate(sg.first, sg.second);
        EgruCell<S> cell(network<S>(n, d, activity, seed), CellOptions{true}, surrogate);
        const Mat<S> X = test::random_matrix<S>(T, d, seed + 1);
        const Mat<S> G = test::random_matrix<S>(T, n, seed + 2);

        Model<S> model(cell, mask);
        Bptt<S> bptt(model);
        bptt.forward(X);
        const auto g_ref = bptt.backward(G);

        Rtrl<S> sparse(model);
        const auto g_sparse = test::rtrl_gradient(sparse, X, G);
        // Dense RTRL: every parameter tracked (pruned ones are zero-valued), every row multiplied.
        EgruParameters<S> pruned = cell.parameters();
        mask.apply(pruned);
        Model<S> dense_model(EgruCell<S>(pruned, CellOptions{true}, surrogate));
        Rtrl<S> dense(dense_model, RtrlOptions{false});
        auto g_dense = test::rtrl_gradient(dense, X, G);
        mask.apply(g_dense);

        const auto& work = sparse.total_work();
        CHECK(test::relative_error(g_sparse, g_ref) <= tol);
        CHECK(test::relative_error(g_dense, g_ref) <= tol);
        CHECK(mask.respected_by(g_sparse));
        REQUIRE(g_ref.R.allFinite());

        // Rows were skipped exactly as the activity says.
        CHECK(work.propagation_fma == expected_propagation_fma(bptt, sparse.layout()));
        CHECK(work.dense_propagation_fma == std::uint64_t(T) * std::uint64_t(n * n + n) * std::uint64_t(dense.layout().columns()));
        if (activity == Activity::all_silent) {
          CHECK(work.active_rows == 0);
          CHECK(work.event_units == 0);
          CHECK(work.propagation_fma == std::uint64_t(T * n * sparse.layout().columns()));
        }
        if (activity == Activity::all_active) {
          CHECK(work.active_rows == std::uint64_t(T * n));
          CHECK(work.event_units == std::uint64_t(T * n));
        }
        if (density < 1.0 || activity != Activity::all_active)
          CHECK(work.propagation_fma < work.dense_propagation_fma);
      }
}

TEMPLATE_TEST_CASE("Influence storage is n x P_kept scalars", "[rtrl][sparse][memory]", float, double) {
  using S = TestType;
  const Index n = 20, d = 6;
  for (double density : {1.0, 0.5, 0.1}) {
    const auto mask = ParameterMask::random(n, d, density, density, 9);
    Model<S> model(EgruCell<S>(n, d), mask);
    Rtrl<S> rtrl(model);
    const Index kept = mask.kept_W() + mask.kept_R() + 6 * n + n;
    CHECK(rtrl.layout().columns() == kept);
    CHECK(rtrl.influence().rows() == n);
    CHECK(rtrl.influence().cols() == kept);
    CHECK(rtrl.influence_bytes() == sizeof(S) * std::size_t(n * kept));
    CHECK(rtrl.gradient_columns().size() == kept);
    // The kernel's scratch is one panel's active rows per thread, independent of P.
    CHECK(rtrl.scratch_bytes() == std::size_t(rtrl.threads()) * sizeof(S) * std::size_t(detail::propagation_scratch_size<S>(n)));
    CHECK(rtrl.scratch_bytes() <= std::size_t(64 * 1024) + sizeof(S) * std::size_t(n) * 1024);
  }
}

TEMPLATE_TEST_CASE("Pruning mid-sequence drops columns without disturbing the rest", "[rtrl][sparse][mask]", float, double) {
  using S = TestType;
  const Index n = 12, d = 3, T = 400, t0 = 150;
  // Mask A keeps 50%; some of A's kept weights are set to zero, and at t0 the mask B prunes
  // exactly those (plus nothing else), so the network itself never changes and BPTT with mask B
  // is the reference for B's kept weights.
  const auto mask_a = ParameterMask::random(n, d, 0.5, 0.5, 3);
  auto params = network<S>(n, d, Activity::medium, 4);
  mask_a.apply(params);
  const auto mask_b = ParameterMask::random(n, d, 0.5, 0.5, 5);
  ParameterMask::BoolMatrix keep_w = mask_a.W() && mask_b.W(), keep_r = mask_a.R() && mask_b.R();
  const ParameterMask mask_ab(keep_w, keep_r);
  mask_ab.apply(params);  // weights pruned at t0 are already zero: the dynamics do not change
  REQUIRE(mask_ab.kept_R() < mask_a.kept_R());

  EgruCell<S> cell(params, CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.3)));
  const Mat<S> X = test::random_matrix<S>(T, d, 6), G = test::random_matrix<S>(T, n, 7);
  Model<S> model_ab(cell, mask_ab);
  Bptt<S> bptt(model_ab);
  bptt.forward(X);
  const auto g_ref = bptt.backward(G);

  Model<S> model(cell, mask_a);
  Rtrl<S> rtrl(model);
  for (Index t = 0; t < T; ++t) {
    if (t == t0) {
      rtrl.set_mask(mask_ab);
      REQUIRE(rtrl.influence().cols() == rtrl.layout().columns());
      REQUIRE(rtrl.layout().columns() == mask_ab.kept_W() + mask_ab.kept_R() + 7 * n);
    }
    rtrl.step(X.row(t));
    rtrl.accumulate_gradient(G.row(t));
  }
  CHECK(test::relative_error(rtrl.gradient(), g_ref) <= test::Tolerance<S>::gradient);
}

TEST_CASE("A revived weight's gradient is exact for a weight that exists from revival on", "[rtrl][sparse][mask]") {
  // GRU mode (no event discontinuities) so finite differences apply.
  const Index n = 6, d = 2, T = 60, t0 = 25;
  const auto mask_before = ParameterMask::random(n, d, 1.0, 0.5, 11);
  ParameterMask::BoolMatrix keep_r = mask_before.R();
  Index rr = -1, j = -1;
  for (Index a = 0; a < 3 * n && rr < 0; ++a)
    for (Index b = 0; b < n; ++b)
      if (!keep_r(a, b)) {
        rr = a;
        j = b;
        break;
      }
  REQUIRE(rr >= 0);
  keep_r(rr, j) = true;
  const ParameterMask mask_after(mask_before.W(), keep_r);
  const auto params = init_torch_like<double>(n, d, {12, 0.3});
  const Mat<double> X = test::random_matrix<double>(T, d, 13), G = test::random_matrix<double>(T, n, 14);

  // Loss when the revived weight takes value w from step t0 on (0 before, as pruned).
  auto loss = [&](double w, Rtrl<double>* learner) {
    Model<double> local_model(EgruCell<double>(params, CellOptions{false}), mask_before);
    Rtrl<double> local(local_model);
    Rtrl<double>& r = learner ? *learner : local;
    double L = 0;
    for (Index t = 0; t < T; ++t) {
      if (t == t0) {
        r.set_mask(mask_after);
        r.cell().parameters().R(rr, j) = w;
      }
      r.step(X.row(t));
      L += G.row(t).dot(r.output());
      r.accumulate_gradient(G.row(t));
    }
    return L;
  };
  Model<double> model(EgruCell<double>(params, CellOptions{false}), mask_before);
  Rtrl<double> rtrl(model);
  loss(0.0, &rtrl);
  const double g = rtrl.gradient().R(rr, j);
  const double h = 1e-6;
  const double fd = (loss(h, nullptr) - loss(-h, nullptr)) / (2 * h);
  REQUIRE(std::abs(fd) > 1e-6);
  CHECK(std::abs(g - fd) / std::abs(fd) <= 1e-6);
}

TEST_CASE("set_mask rejects a mask of another shape", "[rtrl][mask][errors]") {
  Model<double> model(EgruCell<double>(4, 2));
  Rtrl<double> rtrl(model);
  REQUIRE_THROWS_WITH(rtrl.set_mask(ParameterMask::dense(4, 3)), Catch::Matchers::Contains("sparse_rtrl::Rtrl::set_mask()"));
  REQUIRE(rtrl.layout().columns() == 3 * 4 * 2 + 3 * 16 + 7 * 4);
}

TEMPLATE_TEST_CASE("Sparse RTRL on a network large enough for the threaded kernel path", "[rtrl][sparse][threads]", float, double) {
  // (nnz + n) * P is about 2e7 multiply-adds per step: above the kernel's parallel threshold,
  // so with threads > 1 the column-split path runs.
  using S = TestType;
  const Index n = 64, d = 8, T = 60;
  const auto mask = ParameterMask::random(n, d, 0.5, 0.5, 21);
  EgruCell<S> cell(network<S>(n, d, Activity::medium, 22), CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.3)));
  const Mat<S> X = test::random_matrix<S>(T, d, 23), G = test::random_matrix<S>(T, n, 24);
  Model<S> model(cell, mask);
  Bptt<S> bptt(model);
  bptt.forward(X);
  const auto g_ref = bptt.backward(G);
  for (int threads : {1, 2, 3}) {
    RtrlOptions options;
    options.threads = threads;
    Rtrl<S> rtrl(model, options);
    const auto g = test::rtrl_gradient(rtrl, X, G);
    REQUIRE(double(rtrl.last_step_work().propagation_fma) > detail::kParallelMinFma);
    CHECK(test::relative_error(g, g_ref) <= test::Tolerance<S>::gradient);
  }
}
