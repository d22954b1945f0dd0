#include "test_support.hpp"

// The old path forwards to model/influence_layout.hpp: users' includes of it must keep compiling.
#include <sparse_rtrl/learners/influence_layout.hpp>

#include <set>

using namespace sparse_rtrl;

TEST_CASE("Influence layout: unit-major contiguous columns, one per kept parameter", "[layout]") {
  const Index n = 7, d = 4;
  const auto mask = ParameterMask::random(n, d, 0.6, 0.3, 5);
  const InfluenceLayout L(mask, true);
  CHECK(L.columns() == mask.kept_W() + mask.kept_R() + 6 * n + n);
  CHECK(L.dense_columns() == 3 * n * d + 3 * n * n + 7 * n);
  std::set<Index> seen;
  for (Index rr = 0; rr < 3 * n; ++rr) {
    const Index unit = rr % n;
    auto in_unit = [&](Index col) { return col >= L.unit_begin(unit) && col < L.unit_end(unit); };
    for (Index k = 0; k < d; ++k) {
      const Index col = L.column_of_W(rr, k);
      CHECK((col >= 0) == mask.W()(rr, k));
      if (col >= 0) {
        CHECK(in_unit(col));
        CHECK(seen.insert(col).second);
      }
    }
    for (Index j = 0; j < n; ++j) {
      const Index col = L.column_of_R(rr, j);
      CHECK((col >= 0) == mask.R()(rr, j));
      if (col >= 0) {
        CHECK(in_unit(col));
        CHECK(seen.insert(col).second);
      }
    }
    CHECK(in_unit(L.column_of_bW(rr)));
    CHECK(seen.insert(L.column_of_bW(rr)).second);
    CHECK(seen.insert(L.column_of_bR(rr)).second);
  }
  for (Index j = 0; j < n; ++j) CHECK(seen.insert(L.theta_column(j)).second);
  CHECK(Index(seen.size()) == L.columns());
  CHECK(*seen.rbegin() == L.columns() - 1);

  // Coupling pattern = union of the three gate masks.
  for (Index i = 0; i < n; ++i) {
    std::set<Index> cols(L.coupling_cols().begin() + L.coupling_row_ptr()[i], L.coupling_cols().begin() + L.coupling_row_ptr()[i + 1]);
    for (Index j = 0; j < n; ++j)
      CHECK(cols.count(j) == Index(mask.R()(i, j) || mask.R()(n + i, j) || mask.R()(2 * n + i, j)));
  }

  // The same pattern by source column: every row-compressed entry once, rows ascending within
  // a column, each naming its row-compressed position.
  {
    const auto& cp = L.coupling_col_ptr();
    const auto& rows = L.coupling_col_rows();
    const auto& entries = L.coupling_col_entries();
    REQUIRE(Index(cp.size()) == n + 1);
    CHECK(cp.front() == 0);
    CHECK(cp.back() == L.coupling_nonzeros());
    std::set<Index> positions;
    for (Index j = 0; j < n; ++j)
      for (Index q = cp[std::size_t(j)]; q < cp[std::size_t(j + 1)]; ++q) {
        const Index i = rows[std::size_t(q)], p = entries[std::size_t(q)];
        if (q > cp[std::size_t(j)]) CHECK(rows[std::size_t(q - 1)] < i);
        CHECK(p >= L.coupling_row_ptr()[std::size_t(i)]);
        CHECK(p < L.coupling_row_ptr()[std::size_t(i + 1)]);
        CHECK(L.coupling_cols()[std::size_t(p)] == j);
        CHECK(positions.insert(p).second);
      }
    CHECK(Index(positions.size()) == L.coupling_nonzeros());
  }

  // Kept recurrent weights by presynaptic unit: each kept R(rr, j) once, under j, with the
  // column column_of_R gives it, stacked rows ascending.
  {
    const auto& ptr = L.recurrent_ptr();
    REQUIRE(Index(ptr.size()) == n + 1);
    Index kept = 0;
    for (Index rr = 0; rr < 3 * n; ++rr) kept += L.r_count(rr);
    CHECK(ptr.back() == kept);
    for (Index j = 0; j < n; ++j)
      for (Index q = ptr[std::size_t(j)]; q < ptr[std::size_t(j + 1)]; ++q) {
        const Index rr = L.recurrent_rows()[std::size_t(q)];
        if (q > ptr[std::size_t(j)]) CHECK(L.recurrent_rows()[std::size_t(q - 1)] < rr);
        CHECK(mask.R()(rr, j));
        CHECK(L.recurrent_columns()[std::size_t(q)] == L.column_of_R(rr, j));
      }
  }

  // scatter and gather are inverse on kept entries.
  auto p = init_torch_like<double>(n, d, {1, 0.3});
  mask.apply(p);
  Eigen::VectorXd flat(L.columns());
  L.gather(p, flat);
  EgruParameters<double> back;
  L.scatter(flat, back);
  CHECK(back.W == p.W);
  CHECK(back.R == p.R);
  CHECK(back.theta == p.theta);
  CHECK(InfluenceLayout(mask, false).columns() == L.columns() - n);
}

TEMPLATE_TEST_CASE("gradient(out) reshapes an out whose shapes differ in any of the five tensors", "[layout][rtrl][snap]", float, double) {
  using S = TestType;
  const Index n = 5, d = 3;
  const auto mask = ParameterMask::random(n, d, 0.7, 0.5, 8);
  EgruCell<S> cell(test::firing_parameters<S>(n, d, 9));
  Model<S> model(cell, mask);
  Rtrl<S> rtrl(model);
  Snap<S> snap(model, 2);
  const test::Mat<S> X = test::random_matrix<S>(6, d, 10);
  for (Index t = 0; t < X.rows(); ++t) {
    rtrl.step(X.row(t));
    rtrl.accumulate_gradient(test::Vec<S>::Ones(n));
    snap.step(X.row(t));
    snap.accumulate_gradient(test::Vec<S>::Ones(n));
  }
  const EgruParameters<S> ref = rtrl.gradient();
  // Each tensor emptied, and each given a wrong row count with the others intact.
  for (int which = 0; which < 10; ++which) {
    INFO("case " << which);
    EgruParameters<S> out(n, d);
    switch (which) {
      case 0: out.W.resize(0, 0); break;
      case 1: out.R.resize(0, 0); break;
      case 2: out.bW.resize(0); break;
      case 3: out.bR.resize(0); break;
      case 4: out.theta.resize(0); break;
      case 5: out.W.resize(2, d); break;
      case 6: out.R.resize(3 * n - 1, n); break;
      case 7: out.bW.resize(3 * n - 1); break;
      case 8: out.bR.resize(1); break;
      default: out.theta.resize(n - 1); break;
    }
    rtrl.gradient(out);
    CHECK(out.W == ref.W);
    CHECK(out.R == ref.R);
    CHECK(out.bW == ref.bW);
    CHECK(out.bR == ref.bR);
    CHECK(out.theta == ref.theta);
    // The layout's scatter itself (Snap::gradient uses it too).
    EgruParameters<S> from_snap(n, d);
    if (which == 2) from_snap.bW.resize(0);
    snap.layout().scatter(test::Vec<S>::Ones(snap.layout().columns()), from_snap);
    CHECK(from_snap.bW.size() == 3 * n);
  }
  CHECK(snap.gradient().theta.size() == n);
}
