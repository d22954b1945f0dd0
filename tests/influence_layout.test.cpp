#include "test_support.hpp"

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
