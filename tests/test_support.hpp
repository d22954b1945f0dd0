// Shared helpers of the test suite: tolerances per scalar type, random networks that fire,
// relative errors, and the golden-case loader.
#pragma once

#include <sparse_rtrl/sparse_rtrl.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace test {

using sparse_rtrl::Index;

template <typename S>
using Mat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
template <typename S>
using Vec = Eigen::Matrix<S, Eigen::Dynamic, 1>;

/// Per-type tolerance for "equal to rounding error" (norm-wise relative error).
template <typename S>
struct Tolerance;
template <>
struct Tolerance<double> {
  static constexpr double gradient = 1e-10;
};
template <>
struct Tolerance<float> {
  static constexpr double gradient = 1e-4;
};

template <typename A, typename B>
double relative_error(const Eigen::MatrixBase<A>& value, const Eigen::MatrixBase<B>& reference) {
  const double ref = reference.template cast<double>().norm();
  const double diff = (value.template cast<double>() - reference.template cast<double>()).norm();
  if (ref == 0.0) return diff;
  return diff / ref;
}

/// Norm-wise relative error over all five tensors at once.
template <typename S, typename T>
double relative_error(const sparse_rtrl::EgruParameters<S>& g, const sparse_rtrl::EgruParameters<T>& ref) {
  auto flat = [](const auto& p) {
    Vec<double> v(p.size());
    Index k = 0;
    for (const auto* m : {&p.W, &p.R}) for (Index j = 0; j < m->cols(); ++j) for (Index i = 0; i < m->rows(); ++i) v(k++) = double((*m)(i, j));
    for (const auto* m : {&p.bW, &p.bR, &p.theta}) for (Index i = 0; i < m->size(); ++i) v(k++) = double((*m)(i));
    return v;
  };
  return relative_error(flat(g), flat(ref));
}

/// Deterministic pseudo-random matrix with entries uniform in [lo, hi).
template <typename S>
Mat<S> random_matrix(Index rows, Index cols, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  Mat<S> m(rows, cols);
  for (Index j = 0; j < cols; ++j)
    for (Index i = 0; i < rows; ++i) m(i, j) = S(lo + (hi - lo) * double(rng() >> 11) * (1.0 / 9007199254740992.0));
  return m;
}

/// A network whose units both fire and stay silent: torch-like init, weights scaled up so the
/// state leaves (-0.3, 0.3), thresholds spread in [0.05, 0.6].
template <typename S>
sparse_rtrl::EgruParameters<S> firing_parameters(Index n, Index d, std::uint64_t seed, double gain = 2.5) {
  auto p = sparse_rtrl::init_torch_like<S>(n, d, {seed, S(0.3)});
  p.W *= S(gain) * S(std::sqrt(double(n)) / std::max(1.0, std::sqrt(double(d))));
  p.R *= S(gain);
  p.theta = random_matrix<S>(n, 1, seed + 17, 0.05, 0.6);
  return p;
}

/// Runs RTRL over X with dL/dy_t = G.row(t) and returns the gradient.
template <typename Learner, typename S>
sparse_rtrl::EgruParameters<S> rtrl_gradient(Learner& learner, const Mat<S>& X, const Mat<S>& G) {
  learner.reset();
  learner.zero_gradient();
  for (Index t = 0; t < X.rows(); ++t) {
    learner.step(X.row(t));
    if (G.row(t).squaredNorm() > 0) learner.accumulate_gradient(G.row(t));
  }
  return learner.gradient();
}

/// Reads a whitespace-separated text matrix (one row per line).
inline Mat<double> load_text_matrix(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<std::vector<double>> rows;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream s(line);
    std::vector<double> r;
    double v;
    while (s >> v) r.push_back(v);
    if (!r.empty()) rows.push_back(std::move(r));
  }
  if (rows.empty()) throw std::runtime_error("empty matrix file " + path);
  Mat<double> m(Index(rows.size()), Index(rows[0].size()));
  for (std::size_t i = 0; i < rows.size(); ++i) {
    if (rows[i].size() != rows[0].size()) throw std::runtime_error("ragged matrix file " + path);
    for (std::size_t j = 0; j < rows[i].size(); ++j) m(Index(i), Index(j)) = rows[i][j];
  }
  return m;
}

inline std::string data_dir() { return SPARSE_RTRL_TEST_DATA_DIR; }

/// Same shape and the same bits (NaN equals NaN of the same payload): "unchanged" for a state
/// that a refused call must not touch.
template <typename A, typename B>
bool same_bits(const Eigen::MatrixBase<A>& a, const Eigen::MatrixBase<B>& b) {
  using S = typename A::Scalar;
  const Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> x = a, y = b;
  return x.rows() == y.rows() && x.cols() == y.cols() &&
         (x.size() == 0 || std::memcmp(x.data(), y.data(), sizeof(S) * std::size_t(x.size())) == 0);
}
template <typename S>
bool same_bits(const sparse_rtrl::EgruStepCache<S>& a, const sparse_rtrl::EgruStepCache<S>& b) {
  const auto fa = sparse_rtrl::detail::cache_field_list(a), fb = sparse_rtrl::detail::cache_field_list(b);
  for (std::size_t k = 0; k < fa.size(); ++k)
    if (!same_bits(*fa[k].second, *fb[k].second)) return false;
  return true;
}

/// A stack of EGRU layers of the given sizes over d inputs, every layer firing
/// (firing_parameters), W of the layers above doubled so events reach them, triangular surrogate
/// (gamma 1, eps 0.5), random masks of the given density per layer: the model of the column-shard
/// and MPI tests.
template <typename S>
sparse_rtrl::Model<S> masked_stack(const std::vector<sparse_rtrl::Index>& sizes, sparse_rtrl::Index d, bool events,
                                   std::uint64_t seed, double density) {
  using namespace sparse_rtrl;
  std::vector<EgruCell<S>> cells;
  std::vector<ParameterMask> masks;
  Index inputs = d;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    auto p = firing_parameters<S>(sizes[k], inputs, seed + 10 * k);
    if (k > 0) p.W *= S(2);
    cells.emplace_back(p, CellOptions{events}, TriangularSurrogate<S>(S(1), S(0.5)));
    masks.push_back(ParameterMask::random(sizes[k], inputs, density, density, seed + 10 * k + 1));
    inputs = sizes[k];
  }
  return Model<S>(cells, masks);
}

}  // namespace test
