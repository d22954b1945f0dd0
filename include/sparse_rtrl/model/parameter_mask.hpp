/// @file parameter_mask.hpp
/// @brief Which entries of W and R exist (model.md, "Where the zeros are": pruned weights).
///
/// A masked weight is zero and stays zero; the learners store no influence column for it, so
/// the influence matrix is n x P_kept. Biases and thresholds are never masked.
///
/// Gate sharing: the coupling A_t = dc_t/dy_{t-1} has an entry (i, j) when ANY of R's three gate
/// blocks keeps R(gate * n + i, j). Three blocks drawn independently at density d therefore
/// couple a fraction 1 - (1 - d)^3 of the pairs (0.271 at d = 0.1), while one pattern shared by
/// the blocks couples exactly d, for the same number of kept weights (model.md, "Gate-shared
/// masks"). RTRL's propagation does one multiply-add per coupling entry (of an active source
/// unit) per column of M.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/random.hpp>
#include <sparse_rtrl/model/egru_parameters.hpp>

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

/// @brief How a mask's pattern relates across the three gate blocks (r, z, g) of W and R.
enum class MaskSharing {
  /// Each of the 3n rows' entries is kept or pruned on its own (each stacked matrix as a whole
  /// keeps round(density * size) entries).
  independent,
  /// One pattern per matrix, shared by the three gate blocks: connection j -> i (R) or input
  /// k -> unit i (W) exists in all three gates or in none; round(density * n * n) (R) and
  /// round(density * n * d) (W) connections, i.e. three times as many kept weights.
  gate_shared,
};

/// "independent" or "gate_shared" (for printing); "invalid" for any other value.
inline const char* mask_sharing_name(MaskSharing sharing) {
  switch (sharing) {
    case MaskSharing::independent: return "independent";
    case MaskSharing::gate_shared: return "gate_shared";
  }
  return "invalid";
}

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
    detail::require_layer_sizes(where, n_units, n_inputs);
    return ParameterMask(BoolMatrix::Constant(3 * n_units, n_inputs, true),
                         BoolMatrix::Constant(3 * n_units, n_units, true));
  }

  /// Random keep-masks, chosen uniformly (seeded; the same arguments give the same mask).
  /// independent (default): round(density * size) entries of each stacked matrix (3n x d, 3n x n).
  /// gate_shared: round(density * n * d) input and round(density * n * n) recurrent connections,
  /// each kept in all three gate blocks (see MaskSharing); the coupling A_t then has exactly
  /// kept_R() / 3 entries instead of about 1 - (1 - density_R)^3 of n * n.
  static ParameterMask random(Index n_units, Index n_inputs, double density_W, double density_R,
                              std::uint64_t seed = 0, MaskSharing sharing = MaskSharing::independent) {
    const char* where = "sparse_rtrl::ParameterMask::random()";
    detail::require_positive_size(where, "n_units", n_units);
    detail::require_positive_size(where, "n_inputs", n_inputs);
    detail::require_layer_sizes(where, n_units, n_inputs);
    require_density(where, "density_W", density_W);
    require_density(where, "density_R", density_R);
    require_sharing(where, sharing);
    detail::UniformRandom rng(seed);
    if (sharing == MaskSharing::gate_shared) {
      BoolMatrix keep_W = stack_gates(random_matrix(n_units, n_inputs, density_W, rng));
      BoolMatrix keep_R = stack_gates(random_matrix(n_units, n_units, density_R, rng));
      return ParameterMask(std::move(keep_W), std::move(keep_R));
    }
    return ParameterMask(random_matrix(3 * n_units, n_inputs, density_W, rng),
                         random_matrix(3 * n_units, n_units, density_R, rng));
  }

  /// Magnitude keep-masks (ties: the lower column-major index wins, so the result is deterministic).
  /// independent (default): the round(density * size) entries of largest |w| of each matrix.
  /// gate_shared: the round(density * n * d) input and round(density * n * n) recurrent
  /// connections of largest norm over their three gate weights, sqrt(w_r^2 + w_z^2 + w_g^2),
  /// each kept in all three gate blocks.
  template <typename Scalar>
  static ParameterMask from_magnitude(const EgruParameters<Scalar>& params, double density_W,
                                      double density_R, MaskSharing sharing = MaskSharing::independent) {
    const char* where = "sparse_rtrl::ParameterMask::from_magnitude()";
    params.validate(where);
    require_density(where, "density_W", density_W);
    require_density(where, "density_R", density_R);
    require_sharing(where, sharing);
    if (sharing == MaskSharing::gate_shared)
      return ParameterMask(stack_gates(magnitude_matrix(gate_norms(params.W), density_W)),
                           stack_gates(magnitude_matrix(gate_norms(params.R), density_R)));
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
  /// True when the three gate blocks of W have one pattern and those of R have one pattern
  /// (every gate_shared mask, and the dense one).
  bool gate_shared() const { return blocks_equal(W_) && blocks_equal(R_); }

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
    return pruned_all_zero(W_, params.W) && pruned_all_zero(R_, params.R);
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
  /// The mask's bools as bytes (0 or 1): GCC 12 vectorises neither loop below over `bool` (its
  /// conversion to an integer is "not supported" by the vectoriser) but does over unsigned char,
  /// which may alias any object. Both loops are also kept out of line (SPARSE_RTRL_NOINLINE):
  /// inlined into a learner's step they were compiled as scalar loops. Measured on a 2-core AMD
  /// EPYC (Zen 5), n = 256, d = 32, 10% density: Model::enforce_mask(), which runs before every
  /// learner step, took 0.102 ms (6% of the bench_rtrl step), now 0.0085 ms (AVX-512; 0.014 ms
  /// with AVX2).
  static const unsigned char* keep_bytes(const BoolMatrix& keep) {
    static_assert(sizeof(bool) == 1, "a bool is one byte holding 0 or 1");
    return reinterpret_cast<const unsigned char*>(keep.data());
  }

  template <typename Matrix>
  SPARSE_RTRL_NOINLINE static void zero_pruned(const BoolMatrix& keep, Matrix& values) {
    static_assert(!BoolMatrix::IsRowMajor && !Matrix::IsRowMajor,
                  "mask and weights must share one storage order");
    using Scalar = typename Matrix::Scalar;
    using Bits = std::conditional_t<sizeof(Scalar) == 4, std::uint32_t, std::uint64_t>;
    static_assert(sizeof(Bits) == sizeof(Scalar), "float or double weights");
    const unsigned char* k = keep_bytes(keep);
    Scalar* v = values.data();
    for (Index e = 0, size = values.size(); e < size; ++e) {
      Bits bits;
      std::memcpy(&bits, v + e, sizeof bits);
      bits &= Bits(0) - Bits(k[e]);
      std::memcpy(v + e, &bits, sizeof bits);
    }
  }

  /// True when every pruned entry is +0 or -0; branch-free like zero_pruned (it runs before
  /// every learner step, Model::enforce_mask()) and read-only.
  template <typename Matrix>
  SPARSE_RTRL_NOINLINE static bool pruned_all_zero(const BoolMatrix& keep, const Matrix& values) {
    static_assert(!BoolMatrix::IsRowMajor && !Matrix::IsRowMajor,
                  "mask and weights must share one storage order");
    using Scalar = typename Matrix::Scalar;
    using Bits = std::conditional_t<sizeof(Scalar) == 4, std::uint32_t, std::uint64_t>;
    constexpr Bits kMagnitude = ~Bits(0) >> 1;  // every bit but the sign
    const unsigned char* k = keep_bytes(keep);
    const Scalar* v = values.data();
    Bits seen = 0;
    for (Index e = 0, size = values.size(); e < size; ++e) {
      Bits bits;
      std::memcpy(&bits, v + e, sizeof bits);
      seen |= bits & kMagnitude & (Bits(k[e]) - Bits(1));
    }
    return seen == 0;
  }

  static void require_density(const char* where, const char* name, double density) {
    if (!(density >= 0.0 && density <= 1.0)) {
      std::ostringstream s;
      s << name << " must be in [0, 1], received " << density;
      detail::fail(where, s.str());
    }
  }

  static void require_sharing(const char* where, MaskSharing sharing) {
    if (sharing != MaskSharing::independent && sharing != MaskSharing::gate_shared) {
      std::ostringstream s;
      s << "sharing must be MaskSharing::independent or MaskSharing::gate_shared, received "
        << static_cast<int>(sharing);
      detail::fail(where, s.str());
    }
  }

  /// The n-row pattern repeated for the gates r, z, g.
  static BoolMatrix stack_gates(const BoolMatrix& block) {
    const Index n = block.rows();
    BoolMatrix m(3 * n, block.cols());
    m.topRows(n) = block;
    m.middleRows(n, n) = block;
    m.bottomRows(n) = block;
    return m;
  }

  static bool blocks_equal(const BoolMatrix& m) {
    const Index n = m.rows() / 3;
    return (m.topRows(n) == m.middleRows(n, n)).all() && (m.topRows(n) == m.bottomRows(n)).all();
  }

  /// n x cols matrix of each connection's norm over its three gate weights (in double).
  template <typename Matrix>
  static Eigen::MatrixXd gate_norms(const Matrix& w) {
    const Index n = w.rows() / 3;
    const Eigen::MatrixXd v = w.template cast<double>();
    return (v.topRows(n).array().square() + v.middleRows(n, n).array().square() +
            v.bottomRows(n).array().square())
        .sqrt()
        .matrix();
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
