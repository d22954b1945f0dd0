/// @file detail/immediate_jacobian.hpp
/// @brief Pieces of one RTRL step shared by the exact learner and SnAp: the coupling
///        A_t = dc_t/dy_{t-1} and the immediate Jacobian Mbar_t (model.md, "RTRL").
#pragma once
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#error "sparse_rtrl/detail/* is internal: include <sparse_rtrl/sparse_rtrl.hpp> instead."
#endif

#include <sparse_rtrl/model/egru_cell.hpp>
#include <sparse_rtrl/model/influence_layout.hpp>
#include <sparse_rtrl/detail/multiply_add.hpp>

#include <algorithm>
#include <limits>

namespace sparse_rtrl {
namespace detail {

/// A_t[i, j] = dr_i R_r[i, j] + dz_i R_z[i, j] + dg_i r_i R_g[i, j]: the reset gate multiplies
/// R_g y after the product, so its coefficient carries r_i (cache.dc_dq holds all three).
template <typename Scalar, typename RMatrix>
inline Scalar coupling_entry(const RMatrix& R, const EgruStepCache<Scalar>& cache, Index n, Index i, Index j) {
  return cache.dc_dq(i) * R(i, j) + cache.dc_dq(n + i) * R(n + i, j) + cache.dc_dq(2 * n + i) * R(2 * n + i, j);
}

/// m += a * b for an entry of a row (multiply_add()); a proxy entry (ScaledRow) does its own
/// addition of the rounded product.
template <typename Scalar>
inline void add_product(Scalar& m, Scalar a, Scalar b) {
  m = multiply_add(a, b, m);
}
template <typename Entry, typename Scalar>
inline void add_product(const Entry& m, Scalar a, Scalar b) {
  m += a * b;
}

/// Adds Mbar_t's entries for the weights and biases feeding `unit` to `row`, where row[first]
/// is column layout.unit_begin(unit) of the row holding dc_{t, unit}/d(.) (a pointer, or an
/// influence row seen through its panels): those columns have no other nonzero. Recurrent
/// weights from silent presynaptic units (y_{t-1, j} = 0) are skipped; with @p recurrent false
/// they are all left out (a learner that adds them by presynaptic unit instead,
/// add_recurrent_immediate_jacobian()). Only the entries whose index into `row` lies in
/// [lo, hi) are written (a column shard's window).
template <typename Scalar, typename Row>
inline void add_unit_immediate_jacobian(const InfluenceLayout& layout, const EgruStepCache<Scalar>& cache,
                                        Index unit, const Row& row, Index first, Index lo = 0,
                                        Index hi = std::numeric_limits<Index>::max(), bool recurrent = true) {
  const Index n = layout.units();
  const Index begin = layout.unit_begin(unit);
  // The part [from, to) of the entries [0, count) at row[col + e] that lies in [lo, hi).
  const auto clip = [lo, hi](Index col, Index count, Index& from, Index& to) {
    from = std::min(count, std::max<Index>(0, lo - col));
    to = std::max(from, std::min(count, hi - col));
  };
  Index from, to;
  for (int gate = 0; gate < 3; ++gate) {
    const Index rr = gate * n + unit;
    const Scalar ca = cache.dc_da(rr);
    const Scalar cq = cache.dc_dq(rr);
    Index col = first + (layout.group_begin(unit, gate) - begin);
    const Index nw = layout.w_count(rr);
    const Index* wk = layout.w_inputs(rr);
    clip(col, nw, from, to);
    for (Index e = from; e < to; ++e) add_product(row[col + e], ca, cache.x(wk[e]));
    col += nw;
    const Index nr = layout.r_count(rr);
    if (recurrent) {
      const Index* rj = layout.r_inputs(rr);
      clip(col, nr, from, to);
      for (Index e = from; e < to; ++e) {
        const Scalar y = cache.y_prev(rj[e]);
        if (y != Scalar(0)) add_product(row[col + e], cq, y);
      }
    }
    col += nr;
    if (col >= lo && col < hi) row[col] += ca;              // bW
    if (col + 1 >= lo && col + 1 < hi) row[col + 1] += cq;  // bR
  }
}

/// The recurrent weights' part of Mbar_t, by presynaptic unit: for every j with y_{t-1, j} != 0,
/// dc_unit/dR(rr, j) = dc/dq(rr) y_{t-1, j} (rr = gate * n + unit) added to entry (unit, column)
/// through add(unit, column, dc/dq(rr), y_{t-1, j}), columns as the layout numbers them. The
/// same additions as add_unit_immediate_jacobian() makes, but visiting only the weights of
/// active units (with events, a few percent of them) instead of testing every one.
template <typename Scalar, typename Add>
inline void add_recurrent_immediate_jacobian(const InfluenceLayout& layout, const EgruStepCache<Scalar>& cache,
                                             Add&& add) {
  const Index n = layout.units();
  const auto& ptr = layout.recurrent_ptr();
  const auto& rows = layout.recurrent_rows();
  const auto& columns = layout.recurrent_columns();
  for (Index j = 0; j < n; ++j) {
    const Scalar y = cache.y_prev(j);
    if (y == Scalar(0)) continue;
    for (Index q = ptr[std::size_t(j)]; q < ptr[std::size_t(j + 1)]; ++q) {
      const Index rr = rows[std::size_t(q)];
      add(rr % n, columns[std::size_t(q)], cache.dc_dq(rr), y);
    }
  }
}

/// A row seen as `factor` times its additions: `ScaledRow{g, f}[c] += v` adds f * v to g[c].
/// With add_unit_immediate_jacobian() it adds f * Mbar_t[unit, :] to a gradient or a product
/// v^T Mbar_t (UORO: f = nu_unit = +-1, exact).
template <typename Scalar>
struct ScaledRow {
  struct Entry {
    Scalar* at;
    Scalar factor;
    void operator+=(Scalar v) const { *at += factor * v; }
  };
  Scalar* data;
  Scalar factor;
  Entry operator[](Index column) const { return Entry{data + column, factor}; }
};

/// Diagonal part of Mbar_t for theta_i: theta acts on c_t through the soft reset
/// h = c - o theta, dh/dtheta = theta psi - o (the off-diagonal part is -A_t[:, i] c psi).
template <typename Scalar, typename Theta>
inline Scalar threshold_reset_entry(const EgruStepCache<Scalar>& cache, const Theta& theta, Index i) {
  return cache.z(i) * (theta(i) * cache.psi_prev(i) - cache.o_prev(i));
}

}  // namespace detail
}  // namespace sparse_rtrl
