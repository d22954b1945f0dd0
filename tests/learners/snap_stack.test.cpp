// SnAp-n for stacks (snap.hpp): patterns on the stack's graph, checked against BPTT at a covering
// order, against a plain dense "exact update, then project" implementation written here for every
// order and cross-layer scheme, against per-layer RTRL references for the two layer-local
// schemes, and on a tiny stack whose patterns can be counted by hand.
#include "test_support.hpp"

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

using namespace sparse_rtrl;
using test::Mat;
using test::Vec;

namespace {

/// A stack with the given sizes and modes; W and R masked at the given density; upper layers'
/// input weights scaled so that they fire on the sparse events of the layer below.
template <typename S>
Model<S> random_stack(const std::vector<Index>& sizes, const std::vector<bool>& events, Index d, double density,
                      std::uint64_t seed) {
  std::vector<EgruCell<S>> cells;
  std::vector<ParameterMask> masks;
  Index inputs = d;
  for (std::size_t k = 0; k < sizes.size(); ++k) {
    auto p = test::firing_parameters<S>(sizes[k], inputs, seed + 10 * k);
    if (k > 0) p.W *= S(2);
    cells.emplace_back(p, CellOptions{events[k]}, TriangularSurrogate<S>(S(1), S(0.5)));
    masks.push_back(ParameterMask::random(sizes[k], inputs, density, density, seed + 10 * k + 1));
    inputs = sizes[k];
  }
  return Model<S>(cells, masks);
}

/// Which rows (of the stack) each unit's parameters keep, computed here from the masks alone:
/// hop distances by Floyd-Warshall on a dense matrix, independent of the learner's search.
struct Pattern {
  Index N = 0;
  std::vector<Index> layer_of, offset;
  Mat<double> keep, carry;  ///< N x N: (owner, row) kept / carried to the next step
};

template <typename S>
Pattern reference_pattern(const Model<S>& model, int order, SnapCrossLayer scheme) {
  Pattern p;
  const Index L = model.layers();
  for (Index k = 0; k < L; ++k) {
    p.offset.push_back(p.N);
    for (Index i = 0; i < model.units(k); ++i) p.layer_of.push_back(k);
    p.N += model.units(k);
  }
  const Index N = p.N;
  const double inf = 1e9;
  Mat<double> recurrent = Mat<double>::Zero(N, N), upward = Mat<double>::Zero(N, N);  // (from, to)
  for (Index k = 0; k < L; ++k) {
    const Index n = model.units(k);
    const auto& mask = model.mask(k);
    for (Index i = 0; i < n; ++i) {
      for (Index j = 0; j < n; ++j)
        if (mask.R()(i, j) || mask.R()(n + i, j) || mask.R()(2 * n + i, j)) recurrent(p.offset[k] + j, p.offset[k] + i) = 1;
      if (k > 0)
        for (Index j = 0; j < model.units(k - 1); ++j)
          if (mask.W()(i, j) || mask.W()(n + i, j) || mask.W()(2 * n + i, j)) upward(p.offset[k - 1] + j, p.offset[k] + i) = 1;
    }
  }
  const bool cross_hops = scheme == SnapCrossLayer::graph;
  Mat<double> dist = Mat<double>::Constant(N, N, inf);
  for (Index a = 0; a < N; ++a) {
    dist(a, a) = 0;
    for (Index b = 0; b < N; ++b)
      if (recurrent(a, b) != 0 || (cross_hops && upward(a, b) != 0)) dist(a, b) = std::min(dist(a, b), 1.0);
  }
  for (Index m = 0; m < N; ++m)
    for (Index a = 0; a < N; ++a)
      for (Index b = 0; b < N; ++b) dist(a, b) = std::min(dist(a, b), dist(a, m) + dist(m, b));
  p.keep = Mat<double>::Zero(N, N);
  for (Index a = 0; a < N; ++a)
    for (Index b = 0; b < N; ++b) p.keep(a, b) = dist(a, b) <= double(order) - 1.0 ? 1.0 : 0.0;
  p.carry = p.keep;
  if (scheme == SnapCrossLayer::same_step)
    for (Index a = 0; a < N; ++a)
      for (Index b = 0; b < N; ++b)  // rows ascend by layer: one pass closes the cone upward
        if (p.keep(a, b) == 0)
          for (Index c = 0; c < b; ++c)
            if (p.keep(a, c) != 0 && upward(c, b) != 0) p.keep(a, b) = 1;
  return p;
}

/// Plain stacked RTRL over every parameter of every layer (pruned weights included: they are
/// zero, and their gradient entries are zeroed at the end), with dense n_k x P_all blocks M^k and
/// the projection of snap.hpp: before a layer's update its entries outside `carry` are zeroed,
/// after it those outside `keep`. Parameter order per layer: W (row-major), R (row-major), bW,
/// bR, theta. Written for clarity, from model.md's equations only.
template <typename S>
class DenseProjectedRtrl {
 public:
  DenseProjectedRtrl(const Model<S>& model, const Pattern& pattern) : model_(model), pattern_(pattern) {
    const Index L = model.layers();
    for (Index k = 0; k < L; ++k) {
      const Index n = model.units(k), d = model.cell(k).inputs();
      offset_.push_back(P_);
      P_ += 3 * n * d + 3 * n * n + 7 * n;
    }
    for (Index k = 0; k < L; ++k) {
      const Index n = model.units(k);
      M_.push_back(Mat<S>::Zero(n, P_));
      keep_.push_back(Mat<S>::Zero(n, P_));
      carry_.push_back(Mat<S>::Zero(n, P_));
      c_.push_back(Vec<S>::Zero(n));
      cache_.emplace_back();
      cache_.back().resize(n, model.cell(k).inputs());
    }
    for (Index m = 0; m < L; ++m)
      for (Index col = 0; col < P_of(m); ++col) {
        const Index owner = pattern.offset[std::size_t(m)] + owner_unit(m, col);
        for (Index k = 0; k < L; ++k)
          for (Index i = 0; i < model.units(k); ++i) {
            const Index row = pattern.offset[std::size_t(k)] + i;
            keep_[std::size_t(k)](i, offset_[std::size_t(m)] + col) = S(pattern.keep(owner, row));
            carry_[std::size_t(k)](i, offset_[std::size_t(m)] + col) = S(pattern.carry(owner, row));
          }
      }
    grad_ = Vec<S>::Zero(P_);
  }

  template <typename X>
  void step(const Eigen::MatrixBase<X>& x) {
    const Index L = model_.layers();
    for (Index k = 0; k < L; ++k) {
      if (k == 0)
        model_.cell(k).forward(c_[0], x, cache_[0]);
      else
        model_.cell(k).forward(c_[std::size_t(k)], cache_[std::size_t(k - 1)].y, cache_[std::size_t(k)]);
    }
    for (Index k = 0; k < L; ++k) {
      const auto& ch = cache_[std::size_t(k)];
      const auto& p = model_.parameters(k);
      const bool events = model_.events(k);
      const Index n = model_.units(k), d = model_.cell(k).inputs(), o = offset_[std::size_t(k)];
      Mat<S> A = Mat<S>::Zero(n, n);
      for (Index i = 0; i < n; ++i)
        for (Index j = 0; j < n; ++j)
          for (Index g = 0; g < 3; ++g) A(i, j) += ch.dc_dq(g * n + i) * p.R(g * n + i, j);
      Mat<S> J = A * ch.s_prev.asDiagonal();
      for (Index i = 0; i < n; ++i) J(i, i) += ch.decay(i);
      Mat<S> next = J * M_[std::size_t(k)].cwiseProduct(carry_[std::size_t(k)]);
      if (k > 0) {
        const auto& below = cache_[std::size_t(k - 1)];
        const Index nb = model_.units(k - 1);
        Mat<S> B = Mat<S>::Zero(n, nb);
        for (Index i = 0; i < n; ++i)
          for (Index j = 0; j < nb; ++j)
            for (Index g = 0; g < 3; ++g) B(i, j) += ch.dc_da(g * n + i) * p.W(g * n + i, j);
        Mat<S> D = below.s.asDiagonal() * M_[std::size_t(k - 1)];
        if (model_.events(k - 1))
          for (Index j = 0; j < nb; ++j)
            D(j, theta_column(k - 1, j)) -= below.c(j) * below.psi(j);
        next += B * D;
      }
      for (Index rr = 0; rr < 3 * n; ++rr) {
        const Index i = rr % n;
        for (Index j = 0; j < d; ++j) next(i, o + rr * d + j) += ch.dc_da(rr) * ch.x(j);
        for (Index j = 0; j < n; ++j) next(i, o + 3 * n * d + rr * n + j) += ch.dc_dq(rr) * ch.y_prev(j);
        next(i, o + 3 * n * d + 3 * n * n + rr) += ch.dc_da(rr);
        next(i, o + 3 * n * d + 3 * n * n + 3 * n + rr) += ch.dc_dq(rr);
      }
      if (events)
        for (Index j = 0; j < n; ++j) {
          next(j, theta_column(k, j)) += ch.z(j) * (p.theta(j) * ch.psi_prev(j) - ch.o_prev(j));
          for (Index i = 0; i < n; ++i) next(i, theta_column(k, j)) -= A(i, j) * ch.c_prev(j) * ch.psi_prev(j);
        }
      M_[std::size_t(k)] = next.cwiseProduct(keep_[std::size_t(k)]);
      c_[std::size_t(k)] = ch.c;
    }
  }

  template <typename G>
  void accumulate_gradient_at(Index k, const Eigen::MatrixBase<G>& dL_dy) {
    const auto& ch = cache_[std::size_t(k)];
    const Vec<S> dL_dc = dL_dy.transpose().cwiseProduct(ch.s);
    grad_ += M_[std::size_t(k)].transpose() * dL_dc;
    if (model_.events(k))
      for (Index j = 0; j < model_.units(k); ++j) grad_(theta_column(k, j)) -= dL_dy(j) * ch.c(j) * ch.psi(j);
  }

  const Vec<S>& output(Index k) const { return cache_[std::size_t(k)].y; }

  EgruParameters<S> gradient(Index k) const {
    const Index n = model_.units(k), d = model_.cell(k).inputs(), o = offset_[std::size_t(k)];
    EgruParameters<S> g(n, d);
    for (Index rr = 0; rr < 3 * n; ++rr) {
      for (Index j = 0; j < d; ++j) g.W(rr, j) = grad_(o + rr * d + j);
      for (Index j = 0; j < n; ++j) g.R(rr, j) = grad_(o + 3 * n * d + rr * n + j);
      g.bW(rr) = grad_(o + 3 * n * d + 3 * n * n + rr);
      g.bR(rr) = grad_(o + 3 * n * d + 3 * n * n + 3 * n + rr);
    }
    for (Index j = 0; j < n; ++j) g.theta(j) = grad_(theta_column(k, j));
    model_.mask(k).apply(g);
    return g;
  }

 private:
  Index P_of(Index m) const {
    const Index n = model_.units(m), d = model_.cell(m).inputs();
    return 3 * n * d + 3 * n * n + 7 * n;
  }
  Index theta_column(Index k, Index j) const {
    const Index n = model_.units(k), d = model_.cell(k).inputs();
    return offset_[std::size_t(k)] + 3 * n * d + 3 * n * n + 6 * n + j;
  }
  /// The unit a parameter column of layer m feeds (theta_j: unit j).
  Index owner_unit(Index m, Index col) const {
    const Index n = model_.units(m), d = model_.cell(m).inputs();
    if (col < 3 * n * d) return (col / d) % n;
    col -= 3 * n * d;
    if (col < 3 * n * n) return (col / n) % n;
    col -= 3 * n * n;
    if (col < 6 * n) return col % n;
    return col - 6 * n;
  }

  const Model<S>& model_;
  const Pattern& pattern_;
  Index P_ = 0;
  std::vector<Index> offset_;
  std::vector<Mat<S>> M_, keep_, carry_;
  std::vector<Vec<S>> c_;
  std::vector<EgruStepCache<S>> cache_;
  Vec<S> grad_;
};

template <typename S>
std::vector<Mat<S>> losses(const std::vector<Index>& sizes, Index T, std::uint64_t seed) {
  std::vector<Mat<S>> G;
  for (std::size_t k = 0; k < sizes.size(); ++k) G.push_back(test::random_matrix<S>(T, sizes[k], seed + k));
  return G;
}

/// Runs a stacked learner over X with a loss G[k] on every layer k (rows of zeros: no loss).
template <typename Learner, typename S>
void run(Learner& learner, const Mat<S>& X, const std::vector<Mat<S>>& G) {
  for (Index t = 0; t < X.rows(); ++t) {
    learner.step(X.row(t));
    for (Index k = 0; k < Index(G.size()); ++k)
      if (G[std::size_t(k)].size() > 0) learner.accumulate_gradient_at(k, G[std::size_t(k)].row(t));
  }
}

double total_relative_error(const std::vector<EgruParameters<double>>& g, const std::vector<EgruParameters<double>>& ref) {
  double diff = 0, norm = 0;
  for (std::size_t k = 0; k < g.size(); ++k) {
    for (const auto& pair : {std::make_pair(&g[k].W, &ref[k].W), std::make_pair(&g[k].R, &ref[k].R)}) {
      diff += (*pair.first - *pair.second).squaredNorm();
      norm += pair.second->squaredNorm();
    }
    for (const auto& pair : {std::make_pair(&g[k].bW, &ref[k].bW), std::make_pair(&g[k].bR, &ref[k].bR),
                             std::make_pair(&g[k].theta, &ref[k].theta)}) {
      diff += (*pair.first - *pair.second).squaredNorm();
      norm += pair.second->squaredNorm();
    }
  }
  return std::sqrt(diff / norm);
}

}  // namespace

TEMPLATE_TEST_CASE("SnAp-n on a stack at a covering order equals BPTT, with a loss on every layer", "[snap][stack]", float,
                   double) {
  using S = TestType;
  const Index d = 4, T = 60;
  struct Case {
    std::vector<Index> sizes;
    std::vector<bool> events;
    std::uint64_t seed;  ///< chosen so that every events layer both fires and stays silent (asserted)
  };
  const std::vector<Case> cases = {{{9}, {true}, 201},
                                   {{10, 7}, {true, true}, 202},
                                   {{8, 11, 6}, {true, true, true}, 204},
                                   {{9, 6}, {false, false}, 205},
                                   {{10, 7}, {true, false}, 206}};
  for (const auto& c : cases) {
    const Index L = Index(c.sizes.size());
    INFO("L = " << L << ", layer 0 events = " << c.events[0] << ", top events = " << c.events.back());
    Model<S> model = random_stack<S>(c.sizes, c.events, d, 0.4, c.seed);
    const Mat<S> X = test::random_matrix<S>(T, d, 7);
    const auto G = losses<S>(c.sizes, T, 20);
    Bptt<S> bptt(model);
    bptt.forward(X);
    const auto expected = bptt.backward(G);

    Snap<S> probe(model, 1);
    const int covering = probe.covering_order();
    INFO("covering order " << covering);
    REQUIRE(covering >= 2);
    if (L > 1) {
      // One order less leaves some row out (the pattern is not yet closed).
      Snap<S> short_by_one(model, covering - 1);
      Snap<S> covering_snap(model, covering);
      CHECK(short_by_one.kept_entries() < covering_snap.kept_entries());
    }
    for (int order : {covering, std::numeric_limits<int>::max()}) {
      INFO("order " << order);
      Snap<S> snap(model, order);
      REQUIRE(snap.layers() == L);
      std::vector<Index> fired(std::size_t(L), 0), silent(std::size_t(L), 0);
      for (Index t = 0; t < T; ++t) {
        snap.step(X.row(t));
        for (Index k = 0; k < L; ++k) {
          CHECK(test::relative_error(snap.output(k).transpose(), bptt.outputs(k).row(t)) <= test::Tolerance<S>::gradient);
          snap.accumulate_gradient_at(k, G[std::size_t(k)].row(t));
          fired[std::size_t(k)] += Index((snap.events(k).array() != S(0)).count());
          silent[std::size_t(k)] += Index((snap.events(k).array() == S(0)).count());
        }
      }
      for (Index k = 0; k < L; ++k) {
        INFO("layer " << k);
        if (c.events[std::size_t(k)]) {  // events fire and units stay silent in every events layer
          CHECK(fired[std::size_t(k)] > 0);
          CHECK(silent[std::size_t(k)] > 0);
        }
        const auto g = snap.gradient(k);
        CHECK(test::relative_error(g, expected[std::size_t(k)]) <= test::Tolerance<S>::gradient);
        CHECK(model.mask(k).respected_by(g));
      }
      if (L > 1) CHECK(snap.total_work().cross_layer_fma > 0);
    }
  }
}

TEMPLATE_TEST_CASE("SnAp on a stack equals a plain dense projected RTRL for every order and cross-layer scheme",
                   "[snap][stack]", float, double) {
  using S = TestType;
  const Index d = 3, T = 40;
  const std::vector<Index> sizes = {7, 8, 5};
  Model<S> model = random_stack<S>(sizes, {true, true, true}, d, 0.3, 302);  // every layer fires
  const Mat<S> X = test::random_matrix<S>(T, d, 8);
  const auto G = losses<S>(sizes, T, 30);
  Bptt<S> bptt(model);
  bptt.forward(X);
  const auto expected = bptt.backward(G);
  {
    // The reference itself: with nothing projected away it is exact RTRL, i.e. BPTT.
    Pattern all = reference_pattern(model, std::numeric_limits<int>::max(), SnapCrossLayer::graph);
    all.keep.setOnes();
    all.carry.setOnes();
    DenseProjectedRtrl<S> dense(model, all);
    run(dense, X, G);
    for (Index k = 0; k < 3; ++k) CHECK(test::relative_error(dense.gradient(k), expected[std::size_t(k)]) <= test::Tolerance<S>::gradient);
  }
  for (SnapCrossLayer scheme : {SnapCrossLayer::graph, SnapCrossLayer::none, SnapCrossLayer::same_step})
    for (int order : {1, 2, 3, 50}) {
      INFO("scheme " << int(scheme) << ", order " << order);
      const Pattern pattern = reference_pattern(model, order, scheme);
      Snap<S> snap(model, SnapOptions{order, scheme});
      // The same rows, owner by owner.
      for (Index m = 0; m < 3; ++m)
        for (Index u = 0; u < sizes[std::size_t(m)]; ++u) {
          std::vector<Index> rows;
          for (Index r = 0; r < pattern.N; ++r)
            if (pattern.keep(pattern.offset[std::size_t(m)] + u, r) != 0) rows.push_back(r);
          REQUIRE(snap.kept_rows(m, u) == rows);
        }
      DenseProjectedRtrl<S> dense(model, pattern);
      run(dense, X, G);
      run(snap, X, G);
      double approximation = 0;
      for (Index k = 0; k < 3; ++k) {
        INFO("layer " << k);
        const auto g = snap.gradient(k);
        CHECK(test::relative_error(g, dense.gradient(k)) <= test::Tolerance<S>::gradient);
        approximation = std::max(approximation, test::relative_error(g, expected[std::size_t(k)]));
      }
      // SnAp-1 and -2, and the layer-local schemes with losses on every layer, approximate: the
      // check above is not between two exact results. (Between order 2 and a covering order the
      // rows left out may carry nothing: paths through units that never leave s = 0.)
      if (scheme == SnapCrossLayer::graph && order >= snap.covering_order())
        CHECK(approximation <= test::Tolerance<S>::gradient);
      else if (scheme != SnapCrossLayer::graph || order <= 2)
        CHECK(approximation > 1e-3);
    }
}

TEST_CASE("SnAp-1 on a stack differs from the exact gradient; a top loss trains no lower layer", "[snap][stack]") {
  const Index d = 4, T = 60;
  const std::vector<Index> sizes = {10, 8};
  Model<double> model = random_stack<double>(sizes, {true, true}, d, 0.5, 400);
  const Mat<double> X = test::random_matrix<double>(T, d, 9);
  const Mat<double> G = test::random_matrix<double>(T, sizes.back(), 10);
  Bptt<double> bptt(model);
  bptt.forward(X);
  const auto expected = bptt.backward(std::vector<Mat<double>>{Mat<double>(), G});
  REQUIRE(expected[0].W.norm() > 0);

  std::vector<double> errors;
  for (int order : {1, 2}) {
    Snap<double> snap(model, order);
    for (Index t = 0; t < T; ++t) {
      snap.step(X.row(t));
      snap.accumulate_gradient(G.row(t));  // the top layer
    }
    const std::vector<EgruParameters<double>> g = {snap.gradient(0), snap.gradient(1)};
    errors.push_back(total_relative_error(g, expected));
    INFO("SnAp-" << order << " relative error " << errors.back());
    if (order == 1) {
      // Only the own row is kept: nothing of layer 0's parameters reaches layer 1's rows.
      CHECK(g[0].W.isZero(0));
      CHECK(g[0].R.isZero(0));
      CHECK(g[0].bW.isZero(0));
      CHECK(g[0].theta.isZero(0));
      CHECK(snap.total_work().cross_layer_fma == 0);
      CHECK(test::relative_error(g[1], expected[1]) > 1e-3);
    } else {
      CHECK_FALSE(g[0].W.isZero(0));
      CHECK(snap.total_work().cross_layer_fma > 0);
    }
    CHECK(errors.back() > 1e-3);
    CHECK(errors.back() < 1.0);
  }
  CHECK(errors[1] < errors[0]);
}

TEST_CASE("SnAp pattern sizes on a tiny stack counted by hand", "[snap][stack]") {
  // Layer 0: 3 units, one input; R^0 keeps unit 0 -> 1 -> 2 (all three gates). Layer 1: 2 units;
  // W^1 keeps unit 2 of layer 0 -> unit 0 of layer 1, R^1 keeps 0 -> 1. The stack's graph is the
  // chain of rows 0 -> 1 -> 2 -> 3 -> 4. Columns per owner (events mode, theta tracked):
  // row 0: 3 W + 6 biases + theta = 10; rows 1, 2: 3 W + 3 R + 6 + 1 = 13; row 3: 3 W + 6 + 1 = 10;
  // row 4: 3 R + 6 + 1 = 10.
  ParameterMask::BoolMatrix keepR0 = ParameterMask::BoolMatrix::Constant(9, 3, false);
  ParameterMask::BoolMatrix keepW1 = ParameterMask::BoolMatrix::Constant(6, 3, false);
  ParameterMask::BoolMatrix keepR1 = ParameterMask::BoolMatrix::Constant(6, 2, false);
  for (Index g = 0; g < 3; ++g) {
    keepR0(g * 3 + 1, 0) = true;
    keepR0(g * 3 + 2, 1) = true;
    keepW1(g * 2 + 0, 2) = true;
    keepR1(g * 2 + 1, 0) = true;
  }
  std::vector<EgruCell<double>> cells = {EgruCell<double>(test::firing_parameters<double>(3, 1, 500)),
                                         EgruCell<double>(test::firing_parameters<double>(2, 3, 501))};
  std::vector<ParameterMask> masks = {ParameterMask(ParameterMask::BoolMatrix::Constant(9, 1, true), keepR0),
                                      ParameterMask(keepW1, keepR1)};
  Model<double> model(cells, masks);
  const std::vector<Index> width = {10, 13, 13, 10, 10};
  auto entries = [&](const std::vector<Index>& rows_per_owner) {
    Index total = 0;
    for (std::size_t g = 0; g < width.size(); ++g) total += rows_per_owner[g] * width[g];
    return total;
  };
  struct Expected {
    SnapCrossLayer scheme;
    int order;
    std::vector<Index> rows;  ///< |S| per owner row 0..4
    int covering;
  };
  const std::vector<Expected> cases = {
      {SnapCrossLayer::graph, 1, {1, 1, 1, 1, 1}, 5},     // 56 entries: one per column
      {SnapCrossLayer::graph, 2, {2, 2, 2, 2, 1}, 5},     // 102
      {SnapCrossLayer::graph, 4, {4, 4, 3, 2, 1}, 5},     // 161
      {SnapCrossLayer::graph, 5, {5, 4, 3, 2, 1}, 5},     // 171: all reachable rows
      {SnapCrossLayer::none, 1, {1, 1, 1, 1, 1}, 3},      // 56
      {SnapCrossLayer::none, 9, {3, 2, 1, 2, 1}, 3},      // 99: rows of the own layer only
      {SnapCrossLayer::same_step, 1, {1, 1, 2, 1, 1}, 3}, // 69: row 2 also reaches row 3 at once
      {SnapCrossLayer::same_step, 9, {4, 3, 2, 2, 1}, 3}, // 135
  };
  for (const auto& e : cases) {
    INFO("scheme " << int(e.scheme) << ", order " << e.order);
    Snap<double> snap(model, SnapOptions{e.order, e.scheme});
    CHECK(snap.rows() == 5);
    CHECK(snap.row_offset(1) == 3);
    CHECK(snap.columns() == 36 + 20);
    CHECK(snap.column_offset(1) == 36);
    CHECK(snap.kept_entries() == entries(e.rows));
    CHECK(snap.influence_bytes() == sizeof(double) * std::size_t(entries(e.rows)));
    CHECK(snap.covering_order() == e.covering);
    for (Index g = 0; g < 5; ++g) CHECK(Index(snap.kept_rows(g < 3 ? 0 : 1, g < 3 ? g : g - 3).size()) == e.rows[std::size_t(g)]);
  }
  CHECK(Snap<double>(model, 3).kept_rows(0, 0) == std::vector<Index>{0, 1, 2});
  CHECK(Snap<double>(model, 2).kept_rows(0, 2) == std::vector<Index>{2, 3});
  CHECK(Snap<double>(model, SnapOptions{1, SnapCrossLayer::same_step}).kept_rows(0, 2) == std::vector<Index>{2, 3});
  CHECK(Snap<double>(model, SnapOptions{9, SnapCrossLayer::none}).kept_rows(1, 0) == std::vector<Index>{3, 4});

  // SnAp-2 with a loss on the top layer: only unit 2's parameters (the owner whose pattern holds
  // a row of layer 1) get a gradient in layer 0.
  Snap<double> snap2(model, 2);
  const Mat<double> X = test::random_matrix<double>(30, 1, 11);
  for (Index t = 0; t < 30; ++t) {
    snap2.step(X.row(t));
    snap2.accumulate_gradient(Vec<double>::Ones(2));
  }
  const auto g0 = snap2.gradient(0);
  for (Index gate = 0; gate < 3; ++gate) {
    CHECK(g0.bW(gate * 3 + 0) == 0.0);
    CHECK(g0.bW(gate * 3 + 1) == 0.0);
    CHECK(g0.bW(gate * 3 + 2) != 0.0);
  }
}

TEMPLATE_TEST_CASE("SnAp's layer-local schemes at a covering order are per-layer RTRL", "[snap][stack]", float, double) {
  // none: each layer learns exactly from its own loss; same_step: each step's loss is also
  // back-propagated down the stack at that step (spatial back-propagation). References: one-layer
  // Rtrl learners, one per layer, fed the layer below's output.
  using S = TestType;
  const Index d = 3, T = 50;
  const std::vector<Index> sizes = {9, 7, 6};
  Model<S> model = random_stack<S>(sizes, {true, true, true}, d, 0.5, 600);
  const Mat<S> X = test::random_matrix<S>(T, d, 12);
  const auto G = losses<S>(sizes, T, 40);
  for (SnapCrossLayer scheme : {SnapCrossLayer::none, SnapCrossLayer::same_step}) {
    INFO("scheme " << int(scheme));
    std::vector<Model<S>> single;
    single.reserve(3);  // learners reference these: no reallocation
    for (Index k = 0; k < 3; ++k) single.emplace_back(model.cell(k), model.mask(k));
    std::vector<Rtrl<S>> reference;
    for (Index k = 0; k < 3; ++k) reference.emplace_back(single[std::size_t(k)]);
    Snap<S> snap(model, SnapOptions{std::numeric_limits<int>::max(), scheme});
    for (Index t = 0; t < T; ++t) {
      snap.step(X.row(t));
      for (Index k = 0; k < 3; ++k) reference[std::size_t(k)].step(k == 0 ? Vec<S>(X.row(t).transpose()) : reference[std::size_t(k - 1)].output());
      std::vector<Vec<S>> dL_dy(3);
      for (Index k = 2; k >= 0; --k) {
        dL_dy[std::size_t(k)] = G[std::size_t(k)].row(t).transpose();
        if (scheme == SnapCrossLayer::same_step && k < 2) {
          // dL/dy^k_t += W^{k+1 T} (dc^{k+1}/da * dL/dc^{k+1}_t): the same step's path only.
          const auto& up = reference[std::size_t(k + 1)].last_step_cache();
          const Index n = sizes[std::size_t(k + 1)];
          Vec<S> e_a(3 * n);
          for (Index rr = 0; rr < 3 * n; ++rr) e_a(rr) = up.dc_da(rr) * dL_dy[std::size_t(k + 1)](rr % n) * up.s(rr % n);
          dL_dy[std::size_t(k)] += model.parameters(k + 1).W.transpose() * e_a;
        }
      }
      for (Index k = 0; k < 3; ++k) {
        snap.accumulate_gradient_at(k, G[std::size_t(k)].row(t));
        reference[std::size_t(k)].accumulate_gradient(dL_dy[std::size_t(k)]);
      }
    }
    for (Index k = 0; k < 3; ++k) {
      INFO("layer " << k);
      CHECK(test::relative_error(snap.gradient(k), reference[std::size_t(k)].gradient()) <= test::Tolerance<S>::gradient);
    }
  }
}

TEMPLATE_TEST_CASE("SnAp on a stack: losses on outputs and events, as Rtrl", "[snap][stack]", float, double) {
  using S = TestType;
  const std::vector<Index> sizes = {8, 6};
  Model<S> model = random_stack<S>(sizes, {true, true}, 3, 0.6, 700);
  Rtrl<S> rtrl(model);
  Snap<S> snap(model, std::numeric_limits<int>::max());
  const Mat<S> X = test::random_matrix<S>(30, 3, 13);
  for (Index t = 0; t < 30; ++t) {
    rtrl.step(X.row(t));
    snap.step(X.row(t));
    const Vec<S> gy0 = test::random_matrix<S>(8, 1, 100 + std::uint64_t(t)), go0 = test::random_matrix<S>(8, 1, 200 + std::uint64_t(t));
    const Vec<S> gy1 = test::random_matrix<S>(6, 1, 300 + std::uint64_t(t)), go1 = test::random_matrix<S>(6, 1, 400 + std::uint64_t(t));
    rtrl.accumulate_gradient_at(0, gy0, go0);
    snap.accumulate_gradient_at(0, gy0, go0);
    rtrl.accumulate_gradient(gy1, go1);
    snap.accumulate_gradient(gy1, go1);
  }
  REQUIRE(snap.columns() == rtrl.columns());
  CHECK(test::relative_error(snap.gradient_columns(), rtrl.gradient_columns()) <= test::Tolerance<S>::gradient);
  for (Index k = 0; k < 2; ++k) {
    CHECK(test::relative_error(snap.gradient(k), rtrl.gradient(k)) <= test::Tolerance<S>::gradient);
    CHECK(snap.column_offset(k) == rtrl.column_offset(k));
    CHECK(snap.total_work(k).steps == 30);
    CHECK(snap.total_work(k).units == 30 * std::uint64_t(sizes[std::size_t(k)]));
    CHECK(snap.total_work(k).readout_fma > 0);
  }
  CHECK(snap.total_work(1).cross_layer_fma > 0);
  CHECK(snap.total_work(0).cross_layer_fma == 0);
  CHECK(snap.total_work().propagation_fma == snap.total_work(0).propagation_fma + snap.total_work(1).propagation_fma);
  CHECK(snap.total_work().steps == 30);
  EgruParameters<S> out;
  snap.gradient(1, out);
  CHECK(out.W == snap.gradient(1).W);
}

TEST_CASE("SnAp on a stack: errors name what was expected and received", "[snap][stack][errors]") {
  using Catch::Matchers::Contains;
  Model<double> model = random_stack<double>({5, 4}, {true, true}, 3, 0.8, 800);
  REQUIRE_THROWS_WITH(Snap<double>(model, 0), Contains("order must be >= 1, received 0"));
  REQUIRE_THROWS_WITH(Snap<double>(model, SnapOptions{-3, SnapCrossLayer::none}), Contains("received -3"));
  REQUIRE_THROWS_AS(Snap<double>(model, SnapOptions{1, SnapCrossLayer(7)}), std::invalid_argument);
  Snap<double> snap(model, 2);
  REQUIRE_THROWS_WITH(snap.accumulate_gradient(Vec<double>::Zero(4)), Contains("call step() first"));
  REQUIRE_THROWS_WITH(snap.step(Vec<double>::Zero(4)), Contains("x must be a vector of size 3, received 4 x 1"));
  Vec<double> x = Vec<double>::Zero(3);
  x(1) = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_WITH(snap.step(x), Contains("x must be finite"));
  snap.step(Vec<double>::Constant(3, 0.5));
  REQUIRE_THROWS_WITH(snap.accumulate_gradient(Vec<double>::Zero(5)),
                      Contains("dL_dy must be a vector of size 4, received 5 x 1"));
  REQUIRE_THROWS_WITH(snap.accumulate_gradient_at(0, Vec<double>::Zero(4)),
                      Contains("dL_dy must be a vector of size 5, received 4 x 1"));
  Vec<double> g = Vec<double>::Zero(4);
  g(2) = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_WITH(snap.accumulate_gradient(g), Contains("dL_dy must be finite"));
  REQUIRE_THROWS_WITH(snap.accumulate_gradient(Vec<double>::Zero(4), Vec<double>::Zero(3)),
                      Contains("dL_do must be a vector of size 4, received 3 x 1"));
  REQUIRE_THROWS_AS(snap.accumulate_gradient_at(2, Vec<double>::Zero(4)), std::out_of_range);
  REQUIRE_THROWS_WITH(snap.gradient(), Contains("stack of 2 layers"));
  REQUIRE_THROWS_WITH(snap.kept_rows(0), Contains("stack of 2 layers"));
  REQUIRE_THROWS_AS(snap.gradient(2), std::out_of_range);
  REQUIRE_THROWS_AS(snap.kept_rows(1, 4), std::out_of_range);
  // A parameter made non-finite through the model: named, and the state is kept.
  const Vec<double> before = snap.state(0);
  model.parameters(1).bW(0) = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_AS(snap.step(Vec<double>::Constant(3, 0.5)), std::invalid_argument);
  CHECK(snap.state(0) == before);
  // The refused step changed nothing (issue 20, item 9): the last successful step takes a loss.
  snap.accumulate_gradient(Vec<double>::Zero(4));
  model.parameters(1).bW(0) = 0.0;
  // A mask change is not followed: refused until a new Snap is built.
  model.set_mask(ParameterMask::random(4, 5, 0.5, 0.5, 9), 1);
  REQUIRE_THROWS_AS(snap.step(Vec<double>::Constant(3, 0.5)), std::logic_error);
  Snap<double> rebuilt(model, 2);
  rebuilt.step(Vec<double>::Constant(3, 0.5));
}
