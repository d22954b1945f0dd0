/// @file parameter_mask.hpp
/// @brief Which entries of W and R exist (model.md, "Where the zeros are": pruned weights).
///
/// A masked weight is zero and stays zero; the learners store no influence column for it, so
/// the influence matrix is n x P_kept. Biases and thresholds are never masked.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/random.hpp>
#include <sparse_rtrl/egru_parameters.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <sstream>
#include <type_traits>
#include <vector>

namespace sparse_rtrl {

/// @brief Boolean keep-masks for W (3n x d) and R (3n x n), torch layout.
class ParameterMask {
 public:
  using BoolMatrix = Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic>;

  ParameterMask() = default;

  /// User-given masks (true = kept). Shapes must be 3n x d and 3n x n for the same n.
  ParameterMask(BoolMatrix keep_W, BoolMatrix keep_R) : W_(std::move(keep_W)), R_(std::move(keep_R)) {
    const char* where = "sparse_rtrl::ParameterMask::ParameterMask()";
    const Index n = R_.cols();
    detail::require_positive_size(where, "number of units (keep_R.cols())", n);
    detail::require_positive_size(where, "number of inputs (keep_W.cols())", W_.cols());
    detail::require_shape(where, "keep_R", R_, 3 * n, n);
    detail::require_shape(where, "keep_W", W_, 3 * n, W_.cols());
  }

  /// Everything kept.
  static ParameterMask dense(Index n_units, Index n_inputs) {
    const char* where = "sparse_rtrl::ParameterMask::dense()";
    detail::require_positive_size(where, "n_units", n_units);
    detail::require_positive_size(where, "n_inputs", n_inputs);
    return ParameterMask(BoolMatrix::Constant(3 * n_units, n_inputs, true),
                         BoolMatrix::Constant(3 * n_units, n_units, true));
  }

  /// Keeps round(density * size) entries of each matrix, chosen uniformly at random (seeded).
  static ParameterMask random(Index n_units, Index n_inputs, double density_W, double density_R,
                              std::uint64_t seed = 0) {
    const char* where = "sparse_rtrl::ParameterMask::random()";
    detail::require_positive_size(where, "n_units", n_units);
    detail::require_positive_size(where, "n_inputs", n_inputs);
    require_density(where, "density_W", density_W);
    require_density(where, "density_R", density_R);
    detail::UniformRandom rng(seed);
    return ParameterMask(random_matrix(3 * n_units, n_inputs, density_W, rng),
                         random_matrix(3 * n_units, n_units, density_R, rng));
  }

  /// Keeps the round(density * size) entries of largest magnitude of each matrix (ties: the
  /// lower linear index wins, so the result is deterministic).
  template <typename Scalar>
  static ParameterMask from_magnitude(const EgruParameters<Scalar>& params, double density_W,
                                      double density_R) {
    const char* where = "sparse_rtrl::ParameterMask::from_magnitude()";
    params.validate(where);
    require_density(where, "density_W", density_W);
    require_density(where, "density_R", density_R);
    return ParameterMask(magnitude_matrix(params.W, density_W),
                         magnitude_matrix(params.R, density_R));
  }

  Index units() const { return R_.cols(); }
  Index inputs() const { return W_.cols(); }
  const BoolMatrix& W() const { return W_; }
  const BoolMatrix& R() const { return R_; }
  Index kept_W() const { return W_.count(); }
  Index kept_R() const { return R_.count(); }
  double density_W() const { return W_.size() ? double(kept_W()) / double(W_.size()) : 0.0; }
  double density_R() const { return R_.size() ? double(kept_R()) / double(R_.size()) : 0.0; }
  bool all_kept() const { return W_.all() && R_.all(); }

  /// Zeroes the masked entries of W and R.
  template <typename Scalar>
  void apply(EgruParameters<Scalar>& params) const {
    require_matches(params, "sparse_rtrl::ParameterMask::apply()");
    zero_pruned(W_, params.W);
    zero_pruned(R_, params.R);
  }

  /// True when every masked entry of params is exactly zero.
  template <typename Scalar>
  bool respected_by(const EgruParameters<Scalar>& params) const {
    require_matches(params, "sparse_rtrl::ParameterMask::respected_by()");
    return ((!W_) && (params.W.array() != Scalar(0))).count() == 0 &&
           ((!R_) && (params.R.array() != Scalar(0))).count() == 0;
  }

  /// Throws unless the mask has the parameters' n and d.
  template <typename Scalar>
  void require_matches(const EgruParameters<Scalar>& params, const char* where) const {
    if (params.units() != units() || params.inputs() != inputs()) {
      std::ostringstream s;
      s << "mask is for n = " << units() << ", d = " << inputs()
        << " but the parameters have n = " << params.units() << ", d = " << params.inputs();
      detail::fail(where, s.str());
    }
  }

  friend bool operator==(const ParameterMask& a, const ParameterMask& b) {
    return a.W_.rows() == b.W_.rows() && a.W_.cols() == b.W_.cols() &&
           a.R_.rows() == b.R_.rows() && a.R_.cols() == b.R_.cols() && (a.W_ == b.W_).all() &&
           (a.R_ == b.R_).all();
  }

 private:
  // Runs every learner step (Rtrl::step re-applies the mask), so it must be cheap: Eigen's select
  // on a bool array, and a plain `keep ? v : 0` loop, both compile to a data-dependent branch per
  // weight (8% of a sparse step at n = 256, 10% density, mostly mispredictions). ANDing the bits
  // with an all-ones / all-zeros word is branch-free and vectorises, and maps NaN to +0 too.
  template <typename Matrix>
  static void zero_pruned(const BoolMatrix& keep, Matrix& values) {
    static_assert(!BoolMatrix::IsRowMajor && !Matrix::IsRowMajor,
                  "mask and weights must share one storage order");
    using Scalar = typename Matrix::Scalar;
    using Bits = std::conditional_t<sizeof(Scalar) == 4, std::uint32_t, std::uint64_t>;
    static_assert(sizeof(Bits) == sizeof(Scalar), "float or double weights");
    const bool* k = keep.data();
    Scalar* v = values.data();
    for (Index e = 0, size = values.size(); e < size; ++e) {
      Bits bits;
      std::memcpy(&bits, v + e, sizeof bits);
      bits &= Bits(0) - Bits(k[e]);
      std::memcpy(v + e, &bits, sizeof bits);
    }
  }

  static void require_density(const char* where, const char* name, double density) {
    if (!(density >= 0.0 && density <= 1.0)) {
      std::ostringstream s;
      s << name << " must be in [0, 1], received " << density;
      detail::fail(where, s.str());
    }
  }

  static Index kept_count(Index size, double density) {
    return std::min<Index>(size, static_cast<Index>(std::llround(density * double(size))));
  }

  static BoolMatrix random_matrix(Index rows, Index cols, double density,
                                  detail::UniformRandom& rng) {
    const Index size = rows * cols;
    const Index keep = kept_count(size, density);
    std::vector<Index> order(static_cast<std::size_t>(size));
    std::iota(order.begin(), order.end(), Index(0));
    // Partial Fisher-Yates: the first `keep` entries become a uniform random subset.
    for (Index k = 0; k < keep; ++k) {
      const Index pick = k + std::min<Index>(size - k - 1, static_cast<Index>(rng.next() * double(size - k)));
      std::swap(order[std::size_t(k)], order[std::size_t(pick)]);
    }
    BoolMatrix m = BoolMatrix::Constant(rows, cols, false);
    for (Index k = 0; k < keep; ++k) m(order[std::size_t(k)] % rows, order[std::size_t(k)] / rows) = true;
    return m;
  }

  template <typename Matrix>
  static BoolMatrix magnitude_matrix(const Matrix& w, double density) {
    const Index size = w.size();
    const Index keep = kept_count(size, density);
    std::vector<Index> order(static_cast<std::size_t>(size));
    std::iota(order.begin(), order.end(), Index(0));
    std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) {
      return std::abs(w(a % w.rows(), a / w.rows())) > std::abs(w(b % w.rows(), b / w.rows()));
    });
    BoolMatrix m = BoolMatrix::Constant(w.rows(), w.cols(), false);
    for (Index k = 0; k < keep; ++k) m(order[std::size_t(k)] % w.rows(), order[std::size_t(k)] / w.rows()) = true;
    return m;
  }

  BoolMatrix W_;
  BoolMatrix R_;
};

}  // namespace sparse_rtrl
