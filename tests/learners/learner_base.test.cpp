// The learner skeleton (learners/learner_base.hpp): a new learner is its propagation and its
// read-out, nothing else. A test-only learner, dense RTRL of one layer written in plain loops
// (M_t = J_t M_{t-1} + Mbar_t with J_t and M stored dense), gets step(), the read-out front ends,
// gradient(), the checks, counters, StepPhases and checkpoints from the skeleton alone, and must
// agree with BPTT; it joins checkpoints by one CheckpointTraits line.
#include "test_support.hpp"

#include <cstdio>
#include <string>
#include <vector>

using namespace sparse_rtrl;
using test::Mat;
using test::Vec;

namespace toy {

/// The toy's layer: the skeleton's per-layer state plus a dense n x P influence matrix.
template <typename S>
struct DenseLayer : detail::LearnerLayer<S> {
  Mat<S> M;  ///< n x P_kept, column-major (the checkpoint order below is row-major)
  static const char* influence_entry() { return "dense_influence"; }
  std::vector<Index> influence_shape() const { return {M.rows(), M.cols()}; }
  std::size_t influence_values() const { return std::size_t(M.size()); }
  void write_influence(std::size_t first, const S* values, std::size_t count) {
    for (std::size_t e = 0; e < count; ++e) M(Index((first + e) / std::size_t(M.cols())), Index((first + e) % std::size_t(M.cols()))) = values[e];
  }
  template <typename F>
  void for_each_influence_segment(F&& f) const {
    Vec<S> row;
    for (Index i = 0; i < M.rows(); ++i) {
      row = M.row(i).transpose();
      f(row.data(), row.size());
    }
  }
};

/// Dense exact RTRL of a one-layer model on the skeleton: only the hooks are its own.
template <typename S>
class DenseRtrl : public LearnerBase<DenseRtrl<S>, S, TriangularSurrogate<S>, DenseLayer<S>> {
  using Base = LearnerBase<DenseRtrl<S>, S, TriangularSurrogate<S>, DenseLayer<S>>;
  using Layer = DenseLayer<S>;

 public:
  explicit DenseRtrl(typename Base::Model& model) : Base(model) {
    if (model.layers() != 1) throw std::invalid_argument("toy::DenseRtrl: one layer only");
    model.enforce_mask();
    this->shape_layers();
    Layer& l = this->layers_[0];
    l.layout = InfluenceLayout(model.mask(0), l.events);
    l.width = l.layout.columns();
    l.M.setZero(l.n, l.width);
    this->grad_.setZero(l.width);
  }

 private:
  friend Base;
  static constexpr LearnerText text{"toy::DenseRtrl", "gradient(k)", "construct a new toy::DenseRtrl"};
  static bool event_sparse_forward() { return false; }
  static bool flush_subnormals() { return false; }
  void prepare_step(const char* where) {
    if (!this->mask_followed()) throw std::logic_error(std::string(where) + ": masks changed");
    this->require_parameter_shapes(where);
  }
  void propagate_step() {
    Layer& l = this->layers_[0];
    const auto& p = this->model_->parameters(0);
    const auto& c = l.cache;
    const Index n = l.n;
    // J_t = diag(decay) + A_t diag(s_{t-1}), A_t dense from R (model.md "RTRL").
    Mat<S> A(n, n), J = Mat<S>::Zero(n, n);
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j) {
        A(i, j) = detail::coupling_entry(p.R, c, n, i, j);
        J(i, j) = A(i, j) * c.s_prev(j) + (i == j ? c.decay(i) : S(0));
      }
    Mat<S> next = J * l.M;
    for (Index i = 0; i < n; ++i) {
      Vec<S> row = Vec<S>::Zero(l.width);
      detail::add_unit_immediate_jacobian(l.layout, c, i, row.data(), l.layout.unit_begin(i));
      if (l.layout.tracks_theta())
        for (Index j = 0; j < n; ++j) {
          if (j == i) row(l.layout.theta_column(i)) += detail::threshold_reset_entry(c, p.theta, i);
          row(l.layout.theta_column(j)) -= A(i, j) * c.c_prev(j) * c.psi_prev(j);
        }
      next.row(i) += row.transpose();
    }
    l.M = next;
    WorkCounters w = this->step_work(0);
    w.propagation_fma = std::uint64_t(n) * std::uint64_t(n) * std::uint64_t(l.width);
    this->last_layer_[0] = w;
    this->finish_step();
  }
  std::uint64_t read_out(std::size_t k) {
    Layer& l = this->layers_[k];
    this->grad_ += (l.dL_dc.transpose() * l.M).transpose();
    if (l.layout.tracks_theta())
      for (Index j = 0; j < l.n; ++j) this->grad_(l.layout.theta_column(j)) += l.theta_direct(j);
    return std::uint64_t(l.M.size());
  }
  [[noreturn]] void fail_non_finite_gradient(const char* where) const {
    throw std::overflow_error(std::string(where) + ": gradient not finite");
  }
  void clear_influence() { this->layers_[0].M.setZero(); }
  std::vector<Layer> stage_layers(const std::vector<ParameterMask>& masks, bool) const {
    std::vector<Layer> staged = this->layers_;
    staged[0].layout = InfluenceLayout(masks[0], staged[0].events);
    staged[0].width = staged[0].layout.columns();
    staged[0].M.setZero(staged[0].n, staged[0].width);
    staged[0].state.setZero();
    staged[0].cache.set_zero();
    return staged;
  }
  void check_staged_layers(const std::vector<Layer>&, const char*) const {}
};

}  // namespace toy

// The one place the toy learner joins checkpoints: everything else is the shared path.
namespace sparse_rtrl {
namespace io {
template <typename S>
struct CheckpointTraits<toy::DenseRtrl<S>> {
  using Item = detail::LearnerItem<toy::DenseRtrl<S>>;
};
}  // namespace io
}  // namespace sparse_rtrl

namespace {

template <typename S>
Model<S> skeleton_model(bool events, double density, std::uint64_t seed) {
  EgruCell<S> cell(test::firing_parameters<S>(6, 3, seed), CellOptions{events});
  return Model<S>(std::move(cell), ParameterMask::random(6, 3, density, density, seed + 1));
}

}  // namespace

TEMPLATE_TEST_CASE("A learner written as its propagation alone on the skeleton agrees with BPTT",
                   "[learner_base]", float, double) {
  using S = TestType;
  for (bool events : {true, false}) {
    for (double density : {1.0, 0.5}) {
      CAPTURE(events, density);
      Model<S> model = skeleton_model<S>(events, density, 301);
      const Index T = 9;
      const Mat<S> X = test::random_matrix<S>(T, 3, 302), G = test::random_matrix<S>(T, 6, 303);
      Bptt<S> bptt(model);
      bptt.forward(X);
      const EgruParameters<S> reference = bptt.backward(G);
      toy::DenseRtrl<S> toy(model);
      for (Index t = 0; t < T; ++t) {
        toy.step(X.row(t));
        toy.accumulate_gradient(G.row(t).transpose());
      }
      CHECK(test::relative_error(toy.gradient(), reference) < test::Tolerance<S>::gradient);
      CHECK(toy.steps() == T);
      CHECK(toy.total_work().steps == std::uint64_t(T));
      CHECK(toy.total_work().readout_fma == std::uint64_t(T * 6 * toy.columns()));
      CHECK(test::same_bits(toy.output(), bptt.outputs().row(T - 1).transpose()));
    }
  }
}

TEMPLATE_TEST_CASE("The skeleton's checks name the learner they guard", "[learner_base][errors]", float, double) {
  using S = TestType;
  using Catch::Matchers::Contains;
  Model<S> model = skeleton_model<S>(true, 1.0, 311);
  toy::DenseRtrl<S> toy(model);
  CHECK_THROWS_WITH(toy.step(Vec<S>::Zero(4)), Contains("toy::DenseRtrl::step()") && Contains("x must be a vector of size 3"));
  CHECK_THROWS_WITH(toy.accumulate_gradient(Vec<S>::Zero(6)),
                    Contains("toy::DenseRtrl::accumulate_gradient()") && Contains("call step() first"));
  CHECK_THROWS_WITH(toy.gradient(3), Contains("toy::DenseRtrl: layer must be in [0, 1), received 3"));
  model.set_mask(ParameterMask::random(6, 3, 0.5, 0.5, 312));
  CHECK_THROWS_WITH(toy.columns(), Contains("toy::DenseRtrl::columns()") && Contains("construct a new toy::DenseRtrl"));
  toy::DenseRtrl<S> moved(std::move(toy));
  CHECK_THROWS_WITH(toy.output(), Contains("used after move"));
}

TEMPLATE_TEST_CASE("A learner on the skeleton is stepped in phases by a driver (StepPhases) with the same bits",
                   "[learner_base]", float, double) {
  using S = TestType;
  Model<S> model = skeleton_model<S>(true, 0.5, 321);
  toy::DenseRtrl<S> whole(model), phased(model);
  const Mat<S> X = test::random_matrix<S>(5, 3, 322), G = test::random_matrix<S>(5, 6, 323);
  for (Index t = 0; t < 5; ++t) {
    whole.step(X.row(t));
    whole.accumulate_gradient(G.row(t).transpose());
    auto phases = phased.phases();
    phases.prepare("driver");
    model.enforce_mask();
    REQUIRE(phases.forward(X.row(t)));
    phases.commit_forward();
    phases.propagate();
    phases.require_stepped("driver");
    phases.accumulate_output_unchecked(G.row(t).transpose());
    phases.require_finite_gradient("driver");
  }
  CHECK(test::same_bits(whole.gradient_columns(), phased.gradient_columns()));
  CHECK(test::same_bits(whole.state(), phased.state()));
  CHECK(whole.total_work().readout_fma == phased.total_work().readout_fma);
}

TEMPLATE_TEST_CASE("A learner on the skeleton joins checkpoints by one CheckpointTraits line and resumes bit for bit",
                   "[learner_base][checkpoint]", float, double) {
  using S = TestType;
  const std::string path = "learner_base_toy_" + std::string(sizeof(S) == 4 ? "f" : "d") + ".npz";
  Model<S> model = skeleton_model<S>(true, 0.5, 331);
  toy::DenseRtrl<S> toy(model);
  const Mat<S> X = test::random_matrix<S>(8, 3, 332), G = test::random_matrix<S>(8, 6, 333);
  for (Index t = 0; t < 4; ++t) {
    toy.step(X.row(t));
    toy.accumulate_gradient(G.row(t).transpose());
  }
  io::Checkpoint().add(model).add("toy", toy).save(path);
  Model<S> other = skeleton_model<S>(true, 0.5, 331);
  toy::DenseRtrl<S> resumed(other);
  io::Checkpoint().add(other).add("toy", resumed).load(path);
  for (Index t = 4; t < 8; ++t) {
    toy.step(X.row(t));
    toy.accumulate_gradient(G.row(t).transpose());
    resumed.step(X.row(t));
    resumed.accumulate_gradient(G.row(t).transpose());
  }
  CHECK(resumed.steps() == 8);
  CHECK(test::same_bits(toy.gradient_columns(), resumed.gradient_columns()));
  CHECK(test::same_bits(toy.state(), resumed.state()));
  CHECK(test::same_bits(toy.stage_state().influence(0), resumed.stage_state().influence(0)));
  std::remove(path.c_str());
}
