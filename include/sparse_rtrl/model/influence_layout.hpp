/// @file model/influence_layout.hpp
/// @brief The map from tracked parameters to columns of the influence matrix M (n x P_kept).
///
/// Columns are ordered unit-major: every kept parameter that feeds unit i (its W and R rows in
/// the three gate blocks and its four biases) occupies one contiguous range, so the immediate
/// Jacobian Mbar_t, whose column for such a parameter is nonzero only in row i (model.md, "RTRL"),
/// touches one contiguous segment of row i. Within unit i the order is, per gate r, z, g:
/// kept W entries (by input index), kept R entries (by presynaptic unit), bW, bR. The n
/// threshold columns come last (events mode only: thresholds do nothing in GRU mode).
/// Pruned weights have no column at all.
///
/// In model/, not learners/: the layout follows from a ParameterMask alone, and the detail kernels
/// (detail/immediate_jacobian.hpp) read it, so it sits on the floor they may include.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/model/egru_parameters.hpp>
#include <sparse_rtrl/model/parameter_mask.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <string>
#include <vector>

namespace sparse_rtrl {

/// @brief Column map of the influence matrix, built from a ParameterMask.
class InfluenceLayout {
 public:
  InfluenceLayout() = default;

  /// @param track_theta true in events mode (threshold columns exist).
  InfluenceLayout(const ParameterMask& mask, bool track_theta)
      : n_(mask.units()), d_(mask.inputs()), track_theta_(track_theta) {
    const Index rows = 3 * n_;
    w_ptr_.assign(std::size_t(rows + 1), 0);
    r_ptr_.assign(std::size_t(rows + 1), 0);
    for (Index rr = 0; rr < rows; ++rr) {
      for (Index k = 0; k < d_; ++k)
        if (mask.W()(rr, k)) w_idx_.push_back(k);
      for (Index j = 0; j < n_; ++j)
        if (mask.R()(rr, j)) r_idx_.push_back(j);
      w_ptr_[std::size_t(rr + 1)] = Index(w_idx_.size());
      r_ptr_[std::size_t(rr + 1)] = Index(r_idx_.size());
    }
    group_begin_.assign(std::size_t(rows + 1), 0);
    Index col = 0;
    for (Index i = 0; i < n_; ++i)
      for (int gate = 0; gate < 3; ++gate) {
        const Index rr = gate * n_ + i;
        group_begin_[std::size_t(3 * i + gate)] = col;
        col += w_count(rr) + r_count(rr) + 2;
      }
    group_begin_[std::size_t(rows)] = col;
    theta_begin_ = col;
    columns_ = col + (track_theta_ ? n_ : 0);

    // Kept recurrent weights by presynaptic unit j: their stacked rows (ascending) and columns.
    rsrc_ptr_.assign(std::size_t(n_ + 1), 0);
    for (Index j : r_idx_) ++rsrc_ptr_[std::size_t(j + 1)];
    for (Index j = 0; j < n_; ++j) rsrc_ptr_[std::size_t(j + 1)] += rsrc_ptr_[std::size_t(j)];
    rsrc_row_.resize(r_idx_.size());
    rsrc_column_.resize(r_idx_.size());
    {
      std::vector<Index> next(rsrc_ptr_.begin(), rsrc_ptr_.end() - 1);
      for (Index rr = 0; rr < rows; ++rr)
        for (Index e = 0; e < r_count(rr); ++e) {
          const Index q = next[std::size_t(r_inputs(rr)[e])]++;
          rsrc_row_[std::size_t(q)] = rr;
          rsrc_column_[std::size_t(q)] = group_begin(rr % n_, int(rr / n_)) + w_count(rr) + e;
        }
    }

    // Coupling pattern: A_t[i, j] can be nonzero iff some gate keeps R[gate*n + i, j].
    a_ptr_.assign(std::size_t(n_ + 1), 0);
    for (Index i = 0; i < n_; ++i) {
      for (Index j = 0; j < n_; ++j)
        if (mask.R()(i, j) || mask.R()(n_ + i, j) || mask.R()(2 * n_ + i, j)) a_idx_.push_back(j);
      a_ptr_[std::size_t(i + 1)] = Index(a_idx_.size());
    }
    // The same pattern compressed by source column, each entry naming its target row and its
    // position in the row-compressed order (rows ascending within a column).
    at_ptr_.assign(std::size_t(n_ + 1), 0);
    for (Index j : a_idx_) ++at_ptr_[std::size_t(j + 1)];
    for (Index j = 0; j < n_; ++j) at_ptr_[std::size_t(j + 1)] += at_ptr_[std::size_t(j)];
    at_rows_.resize(a_idx_.size());
    at_entry_.resize(a_idx_.size());
    std::vector<Index> next(at_ptr_.begin(), at_ptr_.end() - 1);
    for (Index i = 0; i < n_; ++i)
      for (Index p = a_ptr_[std::size_t(i)]; p < a_ptr_[std::size_t(i + 1)]; ++p) {
        const Index q = next[std::size_t(a_idx_[std::size_t(p)])]++;
        at_rows_[std::size_t(q)] = i;
        at_entry_[std::size_t(q)] = p;
      }
  }

  Index units() const { return n_; }
  Index inputs() const { return d_; }
  bool tracks_theta() const { return track_theta_; }
  /// P_kept: number of columns of M.
  Index columns() const { return columns_; }
  /// P of the dense model (every weight, biases, thresholds when tracked).
  Index dense_columns() const { return 3 * n_ * d_ + 3 * n_ * n_ + 6 * n_ + (track_theta_ ? n_ : 0); }

  /// First column of the (unit i, gate) group: W entries, R entries, bW, bR.
  Index group_begin(Index unit, int gate) const { return group_begin_[std::size_t(3 * unit + gate)]; }
  /// Columns [unit_begin(i), unit_end(i)) belong to the parameters feeding unit i.
  Index unit_begin(Index unit) const { return group_begin_[std::size_t(3 * unit)]; }
  Index unit_end(Index unit) const { return group_begin_[std::size_t(3 * unit + 3)]; }
  Index theta_column(Index unit) const { return theta_begin_ + unit; }

  /// Kept entries of stacked row rr (gate * n + unit) of W and R.
  Index w_count(Index rr) const { return w_ptr_[std::size_t(rr + 1)] - w_ptr_[std::size_t(rr)]; }
  Index r_count(Index rr) const { return r_ptr_[std::size_t(rr + 1)] - r_ptr_[std::size_t(rr)]; }
  const Index* w_inputs(Index rr) const { return w_idx_.data() + w_ptr_[std::size_t(rr)]; }
  const Index* r_inputs(Index rr) const { return r_idx_.data() + r_ptr_[std::size_t(rr)]; }

  /// The kept recurrent weights R(rr, j) of presynaptic unit j: entries [recurrent_ptr()[j],
  /// recurrent_ptr()[j + 1]) give their stacked rows rr = gate * n + unit (ascending) and their
  /// columns. Lets a learner visit the weights of active units only (y_{t-1, j} != 0).
  const std::vector<Index>& recurrent_ptr() const { return rsrc_ptr_; }
  const std::vector<Index>& recurrent_rows() const { return rsrc_row_; }
  const std::vector<Index>& recurrent_columns() const { return rsrc_column_; }

  /// Sparsity pattern of A_t = dc_t/dy_{t-1}, compressed by target row.
  const std::vector<Index>& coupling_row_ptr() const { return a_ptr_; }
  const std::vector<Index>& coupling_cols() const { return a_idx_; }
  Index coupling_nonzeros() const { return Index(a_idx_.size()); }
  /// The same pattern compressed by source column j: entries [coupling_col_ptr()[j],
  /// coupling_col_ptr()[j + 1]) have target rows coupling_col_rows() (ascending) and positions
  /// coupling_col_entries() in the row-compressed order above. Lets a learner visit only the
  /// columns of active sources (s_{t-1, j} != 0).
  const std::vector<Index>& coupling_col_ptr() const { return at_ptr_; }
  const std::vector<Index>& coupling_col_rows() const { return at_rows_; }
  const std::vector<Index>& coupling_col_entries() const { return at_entry_; }

  /// Column of W(rr, k), or -1 when pruned.
  Index column_of_W(Index rr, Index k) const {
    const Index* b = w_inputs(rr);
    const Index* e = b + w_count(rr);
    const Index* p = std::lower_bound(b, e, k);
    return (p != e && *p == k) ? group_begin(rr % n_, int(rr / n_)) + (p - b) : -1;
  }
  /// Column of R(rr, j), or -1 when pruned.
  Index column_of_R(Index rr, Index j) const {
    const Index* b = r_inputs(rr);
    const Index* e = b + r_count(rr);
    const Index* p = std::lower_bound(b, e, j);
    return (p != e && *p == j) ? group_begin(rr % n_, int(rr / n_)) + w_count(rr) + (p - b) : -1;
  }
  Index column_of_bW(Index rr) const {
    return group_begin(rr % n_, int(rr / n_)) + w_count(rr) + r_count(rr);
  }
  Index column_of_bR(Index rr) const { return column_of_bW(rr) + 1; }

  /// The parameter that owns column @p column, as text ("R[17, 4]", "bW[5]", "theta[3]"), for
  /// error messages (a linear search: not for hot paths). "?" outside [0, columns()).
  std::string parameter_name(Index column) const {
    if (column < 0 || column >= columns_) return "?";
    if (column >= theta_begin_) return "theta[" + std::to_string(column - theta_begin_) + "]";
    for (Index rr = 0; rr < 3 * n_; ++rr) {
      Index c = column - group_begin(rr % n_, int(rr / n_));
      if (c < 0 || c >= w_count(rr) + r_count(rr) + 2) continue;
      const std::string row = std::to_string(rr);
      if (c < w_count(rr)) return "W[" + row + ", " + std::to_string(w_inputs(rr)[c]) + "]";
      c -= w_count(rr);
      if (c < r_count(rr)) return "R[" + row + ", " + std::to_string(r_inputs(rr)[c]) + "]";
      return (c == r_count(rr) ? "bW[" : "bR[") + row + "]";
    }
    return "?";
  }

  /// Writes per-column values (size P_kept) into parameter layout; pruned entries (and theta in
  /// GRU mode) become zero. `out` is reshaped to (n, d) when any of its five tensors has another
  /// shape (allocates only then).
  template <typename Vec, typename Scalar>
  void scatter(const Eigen::MatrixBase<Vec>& columns, EgruParameters<Scalar>& out) const {
    if (!out.has_shape(n_, d_)) out = EgruParameters<Scalar>(n_, d_);
    out.set_zero();
    for (Index rr = 0; rr < 3 * n_; ++rr) {
      Index col = group_begin(rr % n_, int(rr / n_));
      for (Index e = 0; e < w_count(rr); ++e) out.W(rr, w_inputs(rr)[e]) = columns(col++);
      for (Index e = 0; e < r_count(rr); ++e) out.R(rr, r_inputs(rr)[e]) = columns(col++);
      out.bW(rr) = columns(col++);
      out.bR(rr) = columns(col++);
    }
    if (track_theta_)
      for (Index j = 0; j < n_; ++j) out.theta(j) = columns(theta_begin_ + j);
  }

  /// Reads parameter-layout values into per-column order (the inverse of scatter on kept entries).
  template <typename Scalar, typename Vec>
  void gather(const EgruParameters<Scalar>& in, Eigen::MatrixBase<Vec>& columns) const {
    for (Index rr = 0; rr < 3 * n_; ++rr) {
      Index col = group_begin(rr % n_, int(rr / n_));
      for (Index e = 0; e < w_count(rr); ++e) columns(col++) = in.W(rr, w_inputs(rr)[e]);
      for (Index e = 0; e < r_count(rr); ++e) columns(col++) = in.R(rr, r_inputs(rr)[e]);
      columns(col++) = in.bW(rr);
      columns(col++) = in.bR(rr);
    }
    if (track_theta_)
      for (Index j = 0; j < n_; ++j) columns(theta_begin_ + j) = in.theta(j);
  }

 private:
  Index n_ = 0, d_ = 0;
  bool track_theta_ = false;
  Index columns_ = 0, theta_begin_ = 0;
  std::vector<Index> w_ptr_, w_idx_, r_ptr_, r_idx_;
  std::vector<Index> group_begin_;
  std::vector<Index> a_ptr_, a_idx_;
  std::vector<Index> at_ptr_, at_rows_, at_entry_;
  std::vector<Index> rsrc_ptr_, rsrc_row_, rsrc_column_;
};

}  // namespace sparse_rtrl
