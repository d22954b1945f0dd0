// Optimizers (SGD with momentum / Nesterov, Adam, AdamW), masks that survive updates, global
// gradient-norm clipping, when to update (every k steps or at the sequence end), and online
// learning end to end: RTRL + readout + cross-entropy + Adam.
#include "test_support.hpp"

#include <random>

using namespace sparse_rtrl;
using test::Mat;
using test::Vec;

namespace {

/// V = [0.5, -1.0] (a weight: decayed), b = [0.25] (a bias: never decayed); gradients of the
/// three steps of every hand-worked case below.
template <typename S>
ReadoutParameters<S> small_readout() {
  ReadoutParameters<S> p(1, 2);
  p.V << S(0.5), S(-1.0);
  p.b << S(0.25);
  return p;
}

template <typename S>
ReadoutParameters<S> small_gradient(int step) {
  const double g[3][3] = {{0.1, -0.2, 0.3}, {-0.05, 0.4, 0.1}, {0.2, 0.0, -0.3}};
  ReadoutParameters<S> p(1, 2);
  p.V << S(g[step][0]), S(g[step][1]);
  p.b << S(g[step][2]);
  return p;
}

/// Runs three steps and compares (V0, V1, b) after each with the expected rows.
template <typename S, typename Optimizer>
void check_three_steps(Optimizer& opt, const double (&expected)[3][3]) {
  const double tol = std::is_same<S, float>::value ? 2e-6 : 1e-14;
  auto p = small_readout<S>();
  for (int t = 0; t < 3; ++t) {
    opt.step(p, small_gradient<S>(t));
    CAPTURE(t);
    CHECK(std::abs(double(p.V(0, 0)) - expected[t][0]) <= tol);
    CHECK(std::abs(double(p.V(0, 1)) - expected[t][1]) <= tol);
    CHECK(std::abs(double(p.b(0)) - expected[t][2]) <= tol);
  }
  CHECK(opt.steps() == 3);
}

}  // namespace

// Expected values: torch.optim's update rules written out independently in plain Python (double
// precision) in tests/data/optimizer_reference.py, not produced by the code under test. The first
// rows can be checked by hand: plain SGD 0.5 - 0.1 * 0.1 = 0.49; Adam's first step moves every
// entry by lr * sign(g) (m_hat / sqrt(v_hat) = g / |g|), up to eps.
TEMPLATE_TEST_CASE("SGD matches torch.optim.SGD's rule worked out independently", "[optimizer][sgd]", float, double) {
  using S = TestType;
  SECTION("plain") {
    Sgd<S> sgd(SgdOptions<S>{S(0.1)});
    const double expected[3][3] = {{0.49, -0.98, 0.22}, {0.495, -1.02, 0.21}, {0.475, -1.02, 0.24}};
    check_three_steps<S>(sgd, expected);
  }
  SECTION("momentum and L2 weight decay (on V only)") {
    Sgd<S> sgd(SgdOptions<S>{S(0.1), S(0.9), false, S(0.01)});
    const double expected[3][3] = {{0.4895, -0.979, 0.22},
                                   {0.4845605, -0.9991209999999999, 0.183},
                                   {0.4596303895, -1.016230779, 0.1797}};
    check_three_steps<S>(sgd, expected);
  }
  SECTION("Nesterov momentum") {
    Sgd<S> sgd(SgdOptions<S>{S(0.1), S(0.9), true});
    const double expected[3][3] = {{0.481, -0.962, 0.193}, {0.4824, -1.0218, 0.1497}, {0.44116, -1.03962, 0.17673}};
    check_three_steps<S>(sgd, expected);
  }
}

TEMPLATE_TEST_CASE("Adam and AdamW match torch's rules worked out independently", "[optimizer][adam]", float, double) {
  using S = TestType;
  SECTION("Adam with L2 weight decay in the gradient") {
    Adam<S> adam(AdamOptions<S>{S(0.01), S(0.9), S(0.999), S(1e-8), S(0.1)});
    const double expected[3][3] = {{0.4900000006666666, -0.9900000003333334, 0.24000000033333332},
                                   {0.4833492006357781, -0.9905429538357655, 0.23128936121571955},
                                   {0.4752235505715115, -0.9895005501155802, 0.23080549151487936}};
    check_three_steps<S>(adam, expected);
    CHECK(adam.first_moment(0).rows() == 1);  // moments are shaped like their tensors
    CHECK(adam.first_moment(0).cols() == 2);
    CHECK(adam.second_moment(1).size() == 1);
  }
  SECTION("AdamW with decoupled weight decay") {
    AdamW<S> adamw(AdamWOptions<S>{S(0.01), S(0.9), S(0.999), S(1e-8), S(0.1)});
    const double expected[3][3] = {{0.4895000009999999, -0.9890000004999999, 0.24000000033333332},
                                   {0.48634713093933907, -0.9916720356541037, 0.23128936121571955},
                                   {0.4792796683031988, -0.9935103543836423, 0.23080549151487936}};
    check_three_steps<S>(adamw, expected);
  }
  SECTION("a LinearReadout steps from its own accumulated gradient") {
    Adam<S> a(AdamOptions<S>{S(0.01)}), b(AdamOptions<S>{S(0.01)});
    LinearReadout<S> readout(small_readout<S>());
    auto p = small_readout<S>();
    readout.gradient() = small_gradient<S>(0);
    a.step(readout);
    b.step(p, small_gradient<S>(0));
    CHECK(readout.parameters().V == p.V);
    CHECK(readout.parameters().b == p.b);
    CHECK(readout.gradient().V == small_gradient<S>(0).V);  // stepping does not zero the gradient
  }
}

TEMPLATE_TEST_CASE("Weight decay shrinks W and R only, never biases or thresholds", "[optimizer]", float, double) {
  using S = TestType;
  const auto p0 = test::firing_parameters<S>(3, 2, 5);
  const EgruParameters<S> zero(3, 2);
  // With a zero gradient Adam's moments stay zero and its update is 0 / (0 + eps) = 0, so only
  // the decoupled decay acts: W_t = W_0 (1 - lr wd)^t. Plain SGD's L2 term gives the same factor.
  AdamW<S> adamw(AdamWOptions<S>{S(0.1), S(0.9), S(0.999), S(1e-8), S(0.5)});
  Sgd<S> sgd(SgdOptions<S>{S(0.1), S(0), false, S(0.5)});
  auto pa = p0, ps = p0;
  for (int t = 0; t < 3; ++t) {
    adamw.step(pa, zero);
    sgd.step(ps, zero);
  }
  const S factor = S(0.95 * 0.95 * 0.95);
  const double tol = std::is_same<S, float>::value ? 1e-6 : 1e-15;
  for (const auto* p : {&pa, &ps}) {
    CHECK(test::relative_error(p->W, Mat<S>(factor * p0.W)) <= tol);
    CHECK(test::relative_error(p->R, Mat<S>(factor * p0.R)) <= tol);
    CHECK(p->bW == p0.bW);
    CHECK(p->bR == p0.bR);
    CHECK(p->theta == p0.theta);
  }
}

TEMPLATE_TEST_CASE("Masked weights and their optimizer state stay exactly zero", "[optimizer][mask]", float, double) {
  using S = TestType;
  const Index n = 6, d = 3;
  const auto mask = ParameterMask::random(n, d, 0.5, 0.3, 9);
  const auto p0 = init_torch_like<S>(n, d, {4, S(0.3)});  // nonzero at masked entries too
  auto masked_zero = [&](const auto& m, const ParameterMask::BoolMatrix& keep) {
    return ((!keep) && (m.array() != S(0))).count() == 0;
  };
  auto run = [&](auto& opt, auto moments_zero) {
    auto p = p0;
    EgruParameters<S> g(n, d);
    for (int t = 0; t < 300; ++t) {
      // Nonzero gradients everywhere, masked entries included: the mask must win.
      g.W = test::random_matrix<S>(3 * n, d, 1000 + std::uint64_t(t));
      g.R = test::random_matrix<S>(3 * n, n, 2000 + std::uint64_t(t));
      g.bW = test::random_matrix<S>(3 * n, 1, 3000 + std::uint64_t(t));
      g.theta = test::random_matrix<S>(n, 1, 4000 + std::uint64_t(t), -0.1, 0.1);
      opt.step(p, g, mask);
      if (!mask.respected_by(p) || !moments_zero(opt)) {
        FAIL("a masked entry became nonzero at step " << t);
      }
    }
    // Kept weights did move, and stay nonzero.
    CHECK((mask.W() && (p.W.array() != p0.W.array())).count() == mask.kept_W());
    CHECK((mask.R() && (p.R.array() != S(0))).count() == mask.kept_R());
    return p;
  };
  SECTION("Adam") {
    Adam<S> adam(AdamOptions<S>{S(0.01)});
    auto p = run(adam, [&](const Adam<S>& a) {
      return masked_zero(a.first_moment(0), mask.W()) && masked_zero(a.first_moment(1), mask.R()) &&
             masked_zero(a.second_moment(0), mask.W()) && masked_zero(a.second_moment(1), mask.R());
    });
    // Revive everything with a zero gradient: moments of the pruned entries are zero, so they
    // do not move (a stale moment would push them).
    adam.step(p, EgruParameters<S>(n, d), ParameterMask::dense(n, d));
    CHECK(mask.respected_by(p));
  }
  SECTION("AdamW with weight decay") {
    AdamW<S> adamw(AdamWOptions<S>{S(0.01), S(0.9), S(0.999), S(1e-8), S(0.1)});
    run(adamw, [&](const AdamW<S>& a) {
      return masked_zero(a.first_moment(0), mask.W()) && masked_zero(a.second_moment(1), mask.R());
    });
  }
  SECTION("SGD with Nesterov momentum and weight decay") {
    Sgd<S> sgd(SgdOptions<S>{S(0.01), S(0.9), true, S(0.01)});
    auto p = run(sgd, [&](const Sgd<S>& o) {
      return masked_zero(o.velocity(0), mask.W()) && masked_zero(o.velocity(1), mask.R());
    });
    sgd.step(p, EgruParameters<S>(n, d), ParameterMask::dense(n, d));
    CHECK(mask.respected_by(p));  // zero velocity: revived weights stay at zero
  }
  SECTION("without the mask, the same steps would write into pruned weights") {
    Adam<S> adam(AdamOptions<S>{S(0.01)});
    auto p = p0;
    mask.apply(p);
    adam.step(p, p0);  // a gradient that is nonzero everywhere
    CHECK_FALSE(mask.respected_by(p));
  }
}

TEMPLATE_TEST_CASE("Global gradient-norm clipping over several sets", "[optimizer][clip]", float, double) {
  using S = TestType;
  EgruParameters<S> g(2, 1);
  ReadoutParameters<S> gr(3, 2);
  g.W(0, 0) = S(3);
  gr.V(1, 1) = S(-4);  // global norm 5, split over the two sets
  CHECK(clip_gradient_norm(S(10), g, gr) == S(5));  // below the limit: unchanged
  CHECK(g.W(0, 0) == S(3));
  CHECK(gr.V(1, 1) == S(-4));
  CHECK(clip_gradient_norm(S(1), g, gr) == S(5));  // above: both scaled by 1/5
  CHECK(std::abs(double(g.W(0, 0)) - 0.6) <= 1e-7);
  CHECK(std::abs(double(gr.V(1, 1)) + 0.8) <= 1e-7);
  CHECK(std::abs(double(clip_gradient_norm(S(1), g, gr)) - 1.0) <= 1e-6);
  // One set alone, and a LinearReadout's gradient in place.
  LinearReadout<S> readout(2, 2);
  readout.gradient().b << S(6), S(8);
  CHECK(clip_gradient_norm(S(5), readout.gradient()) == S(10));
  CHECK(std::abs(double(readout.gradient().b(0)) - 3.0) <= 1e-6);
  CHECK(std::abs(double(readout.gradient().b(1)) - 4.0) <= 1e-6);
}

namespace {

/// The loop of optimizer.hpp's comment: a sequence with a cross-entropy loss at every step,
/// parameters updated (plain SGD) after every k steps and at the end. Returns the parameters.
template <typename S>
std::pair<EgruParameters<S>, ReadoutParameters<S>> train_one_sequence(const EgruCell<S>& cell, const LinearReadout<S>& readout0,
                                                                      const Mat<S>& X, const std::vector<Index>& labels,
                                                                      Index k, S lr, Index* updates) {
  const Index n = cell.units(), T = X.rows();
  Model<S> model(cell);  // each run trains its own copy of the cell
  Rtrl<S> rtrl(model);
  LinearReadout<S> readout = readout0;
  Sgd<S> sgd_cell(SgdOptions<S>{lr}), sgd_out(SgdOptions<S>{lr});
  Vec<S> logits(readout.outputs()), dL_dlogits(readout.outputs()), dL_dy(n);
  EgruParameters<S> g;
  for (Index t = 0; t < T; ++t) {
    rtrl.step(X.row(t));
    readout.forward(rtrl.output(), logits);
    softmax_cross_entropy(logits, labels[std::size_t(t)], dL_dlogits);
    readout.backward(rtrl.output(), dL_dlogits, dL_dy);
    rtrl.accumulate_gradient(dL_dy);
    if ((t + 1) % k == 0 || t == T - 1) {
      rtrl.gradient(g);
      sgd_cell.step(rtrl.cell().parameters(), g, rtrl.mask());
      sgd_out.step(readout);
      rtrl.zero_gradient();
      readout.zero_gradient();
    }
  }
  *updates = sgd_cell.steps();
  CHECK(sgd_out.steps() == *updates);
  return {rtrl.cell().parameters(), readout.parameters()};
}

}  // namespace

TEMPLATE_TEST_CASE("Updating at the sequence end applies the exact (BPTT) gradient, every k steps is online", "[optimizer][rtrl]", float, double) {
  using S = TestType;
  const Index n = 6, d = 2, k_out = 3, T = 40;
  const EgruCell<S> cell(test::firing_parameters<S>(n, d, 81), CellOptions{true}, TriangularSurrogate<S>(S(1), S(0.5)));
  const LinearReadout<S> readout0(k_out, n, ReadoutInitOptions{82});
  const Mat<S> X = test::random_matrix<S>(T, d, 83);
  std::vector<Index> labels;
  for (Index t = 0; t < T; ++t) labels.push_back((t * 7 + 1) % k_out);
  const S lr = S(0.05);

  // Reference: BPTT's gradient of the whole sequence's loss, one SGD step at the end.
  Model<S> model(cell);
  Bptt<S> bptt(model);
  const Mat<S> Y = bptt.forward(X);
  LinearReadout<S> readout_ref = readout0;
  Mat<S> G(T, n);
  Vec<S> dL_dlogits(k_out), dL_dy(n);
  for (Index t = 0; t < T; ++t) {
    const Vec<S> y = Y.row(t).transpose();
    softmax_cross_entropy(readout_ref.forward(y), labels[std::size_t(t)], dL_dlogits);
    readout_ref.backward(y, dL_dlogits, dL_dy);
    G.row(t) = dL_dy.transpose();
  }
  const auto g_ref = bptt.backward(G);

  Index updates = 0;
  const auto at_end = train_one_sequence(cell, readout0, X, labels, T, lr, &updates);
  CHECK(updates == 1);
  // The parameter change is -lr * gradient: compare changes, not parameters, so the tolerance
  // applies to the gradient itself.
  const EgruParameters<S>& p0 = cell.parameters();
  EgruParameters<S> step(n, d);
  step.W = (p0.W - at_end.first.W) / lr;
  step.R = (p0.R - at_end.first.R) / lr;
  step.bW = (p0.bW - at_end.first.bW) / lr;
  step.bR = (p0.bR - at_end.first.bR) / lr;
  step.theta = (p0.theta - at_end.first.theta) / lr;
  const double tol = test::Tolerance<S>::gradient;
  CHECK(test::relative_error(step, g_ref) <= tol);
  CHECK(test::relative_error(Mat<S>((readout0.parameters().V - at_end.second.V) / lr), readout_ref.gradient().V) <= tol);

  // Every k steps: one update per k steps (k = 1 is fully online), and the result departs from
  // the single end-of-sequence update because later steps already see updated parameters.
  for (Index k : {1, 4, 7}) {
    const auto online = train_one_sequence(cell, readout0, X, labels, k, lr, &updates);
    CAPTURE(k);
    CHECK(updates == (T + k - 1) / k);
    CHECK(test::relative_error(online.first, at_end.first) > 0);
  }
}

TEMPLATE_TEST_CASE("Online learning: an EGRU recalls the sign of the input 3 steps ago", "[optimizer][online]", float, double) {
  // Fully online (update after every step) exact sparse RTRL, readout, cross-entropy and Adam.
  // Inputs are random +-1; the target at step t is the class of sign(x_{t-3}). Chance level is
  // log 2 = 0.69; the loss averaged over the last 200 steps must fall far below the first 200.
  using S = TestType;
  const Index n = 8, d = 1, delay = 3, T = 12000;
  auto p = init_torch_like<S>(n, d, {5, S(0.3)});
  p.W *= S(3);  // a stronger input drive makes units cross the threshold from the start
  p.R *= S(2);
  Model<S> model(EgruCell<S>(p, CellOptions{true}));
  Rtrl<S> rtrl(model);
  LinearReadout<S> readout(2, n, ReadoutInitOptions{6});
  Adam<S> adam_cell(AdamOptions<S>{S(0.003)}), adam_out(AdamOptions<S>{S(0.003)});
  std::mt19937_64 rng(7);
  std::vector<S> inputs;
  std::vector<double> losses;
  Vec<S> x(1), logits(2), dL_dlogits(2), dL_dy(n);
  EgruParameters<S> g;
  Index events = 0;
  for (Index t = 0; t < T; ++t) {
    x(0) = (rng() & 1) ? S(1) : S(-1);
    inputs.push_back(x(0));
    rtrl.step(x);
    events += (rtrl.events().array() != S(0)).count();
    if (t < delay) continue;
    readout.forward(rtrl.output(), logits);
    losses.push_back(double(softmax_cross_entropy(logits, inputs[std::size_t(t - delay)] > 0 ? 1 : 0, dL_dlogits)));
    readout.backward(rtrl.output(), dL_dlogits, dL_dy);
    rtrl.accumulate_gradient(dL_dy);
    rtrl.gradient(g);
    adam_cell.step(rtrl.cell().parameters(), g, rtrl.mask());
    adam_out.step(readout);
    rtrl.zero_gradient();
    readout.zero_gradient();
  }
  auto mean = [&](std::size_t from, std::size_t to) {
    double s = 0;
    for (std::size_t i = from; i < to; ++i) s += losses[i];
    return s / double(to - from);
  };
  const double first = mean(0, 200), last = mean(losses.size() - 200, losses.size());
  const double event_rate = double(events) / double(n * T);
  CAPTURE(first, last, event_rate);
  CHECK(first > 0.6);
  CHECK(last < 0.25 * first);
  // It is an event network: units fire, but not all of them all the time.
  CHECK(event_rate > 0.1);
  CHECK(event_rate < 0.9);
}

TEST_CASE("Optimizers reject bad options with std::invalid_argument naming the option", "[optimizer][errors]") {
  using Catch::Matchers::Contains;
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_WITH(Sgd<double>(SgdOptions<double>{0.0}),
                      Contains("sparse_rtrl::Sgd::Sgd()") && Contains("options.learning_rate must be > 0 and finite, received 0"));
  REQUIRE_THROWS_WITH(Sgd<double>(SgdOptions<double>{nan}), Contains("learning_rate") && Contains("received nan"));
  REQUIRE_THROWS_WITH(Sgd<double>(SgdOptions<double>{0.1, 1.0}), Contains("options.momentum must be in [0, 1), received 1"));
  REQUIRE_THROWS_WITH(Sgd<double>(SgdOptions<double>{0.1, -0.5}), Contains("options.momentum must be in [0, 1), received -0.5"));
  REQUIRE_THROWS_WITH(Sgd<double>(SgdOptions<double>{0.1, 0.0, true}),
                      Contains("options.momentum must be > 0 when options.nesterov is true, received 0"));
  REQUIRE_THROWS_WITH(Sgd<double>(SgdOptions<double>{0.1, 0.5, false, -1.0}),
                      Contains("options.weight_decay must be >= 0 and finite, received -1"));
  REQUIRE_THROWS_WITH(Adam<double>(AdamOptions<double>{inf}),
                      Contains("sparse_rtrl::Adam::Adam()") && Contains("options.learning_rate must be > 0 and finite, received inf"));
  REQUIRE_THROWS_WITH(Adam<double>(AdamOptions<double>{1e-3, 1.0}), Contains("options.beta1 must be in [0, 1), received 1"));
  REQUIRE_THROWS_WITH(Adam<double>(AdamOptions<double>{1e-3, 0.9, -0.1}), Contains("options.beta2 must be in [0, 1), received -0.1"));
  REQUIRE_THROWS_WITH(Adam<double>(AdamOptions<double>{1e-3, 0.9, 0.999, 0.0}), Contains("options.eps must be > 0 and finite, received 0"));
  REQUIRE_THROWS_WITH(AdamW<float>(AdamWOptions<float>{1e-3f, 0.9f, 0.999f, 1e-8f, -0.01f}),
                      Contains("sparse_rtrl::AdamW::AdamW()") && Contains("options.weight_decay must be >= 0 and finite, received -0.01"));
  Adam<double> adam;
  REQUIRE_THROWS_WITH(adam.set_learning_rate(-1), Contains("sparse_rtrl::Adam::set_learning_rate()") && Contains("received -1"));
  Sgd<double> sgd;
  REQUIRE_THROWS_WITH(sgd.set_learning_rate(0), Contains("sparse_rtrl::Sgd::set_learning_rate()"));
  sgd.set_learning_rate(0.5);
  CHECK(sgd.learning_rate() == 0.5);
  REQUIRE_THROWS_AS(adam.first_moment(0), std::out_of_range);  // no state before the first step
  REQUIRE_THROWS_WITH(sgd.velocity(0), Contains("no state before the first step()"));
}

TEST_CASE("Optimizer steps reject bad input and leave parameters and state unchanged", "[optimizer][errors]") {
  using Catch::Matchers::Contains;
  const auto p0 = init_torch_like<double>(3, 2, {1, 0.3});
  auto p = p0;
  Adam<double> adam;
  EgruParameters<double> g(3, 2);
  g.W.resize(9, 3);
  REQUIRE_THROWS_WITH(adam.step(p, g),
                      Contains("sparse_rtrl::Adam::step()") && Contains("grad.W must be 9 x 2 like params.W, received 9 x 3"));
  g = EgruParameters<double>(3, 2);
  g.theta(1) = std::numeric_limits<double>::quiet_NaN();
  REQUIRE_THROWS_WITH(adam.step(p, g), Contains("grad.theta must be finite, received nan at (1, 0)"));
  g.theta(1) = 0;
  REQUIRE_THROWS_WITH(adam.step(p, g, ParameterMask::dense(4, 2)), Contains("mask is for n = 4, d = 2 but the parameters have n = 3, d = 2"));
  auto bad = p0;
  bad.R(0, 0) = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_WITH(adam.step(bad, g), Contains("R must be finite"));
  CHECK(adam.steps() == 0);
  CHECK(test::relative_error(p, p0) == 0);

  // One optimizer, one parameter set.
  adam.step(p, g);
  ReadoutParameters<double> r(2, 3), gr(2, 3);
  REQUIRE_THROWS_WITH(adam.step(r, gr), Contains("this optimizer holds the state of EgruParameters, received ReadoutParameters"));
  auto other = init_torch_like<double>(4, 2);
  REQUIRE_THROWS_WITH(adam.step(other, EgruParameters<double>(4, 2)),
                      Contains("this optimizer's state is for W of shape 9 x 2, received 12 x 2") && Contains("reset()"));
  CHECK(adam.steps() == 1);
  adam.reset();
  adam.step(other, EgruParameters<double>(4, 2));  // after reset() any set is fine
  CHECK(adam.steps() == 1);

  Sgd<double> sgd;
  gr.V.resize(3, 2);
  REQUIRE_THROWS_WITH(sgd.step(r, gr), Contains("sparse_rtrl::Sgd::step()") && Contains("grad.V must be 2 x 3 like params.V, received 3 x 2"));

  // Clipping.
  ReadoutParameters<double> c(1, 2);
  c.V << 3, 4;
  REQUIRE_THROWS_WITH(clip_gradient_norm(0.0, c), Contains("sparse_rtrl::clip_gradient_norm()") && Contains("max_norm must be > 0 and finite, received 0"));
  REQUIRE_THROWS_WITH(clip_gradient_norm(std::numeric_limits<double>::quiet_NaN(), c), Contains("received nan"));
  EgruParameters<double> gn(2, 1);
  gn.bR(2) = std::numeric_limits<double>::infinity();
  REQUIRE_THROWS_WITH(clip_gradient_norm(1.0, c, gn), Contains("grad.bR must be finite, received inf"));
  CHECK(c.V(0, 1) == 4.0);  // untouched
}

TEMPLATE_TEST_CASE("Clipping a gradient whose squared norm overflows scales it instead of zeroing it",
                   "[optimizer][clip]", float, double) {
  // Issue 20, item 12: with one entry 1e200 (double) the sum of squares was inf and the scale 0.
  using S = TestType;
  // float: the squares are summed in double and never overflowed; the largest norm a float holds.
  const S huge = std::is_same<S, double>::value ? S(1e200) : std::numeric_limits<S>::max() / S(4);
  EgruParameters<S> g(2, 1);
  g.W(0, 0) = huge;
  g.R(1, 1) = S(1);
  ReadoutParameters<S> gr(1, 2);
  gr.V(0, 0) = -huge;
  const S norm = clip_gradient_norm(S(1), g, gr);
  CHECK(std::isfinite(norm));
  CHECK(std::abs(double(norm) / (std::sqrt(2.0) * double(huge)) - 1.0) <= 1e-6);
  CHECK(std::abs(double(g.W(0, 0)) - std::sqrt(0.5)) <= 1e-6);
  CHECK(std::abs(double(gr.V(0, 0)) + std::sqrt(0.5)) <= 1e-6);
  CHECK(g.R(1, 1) > S(0));  // scaled, not zeroed (it may underflow to a tiny value in float)
  CHECK(g.W.allFinite());
  CHECK(g.R.allFinite());
  // A norm beyond the largest double cannot be returned: inf, and every entry still finite.
  if (std::is_same<S, double>::value) {
    EgruParameters<S> h(2, 1);
    h.W.setConstant(std::numeric_limits<S>::max());
    CHECK(std::isinf(clip_gradient_norm(S(1), h)));
    CHECK(h.W.allFinite());
  }
}

TEMPLATE_TEST_CASE("An optimizer refuses an update that would make a parameter non-finite, changing nothing",
                   "[optimizer][errors]", float, double) {
  // Issue 20, item 13: Adam(lr = 1e308) and Sgd(lr = 1e300) wrote inf/NaN into the model.
  using S = TestType;
  using Catch::Matchers::Contains;
  const S big = std::numeric_limits<S>::max() / S(4);
  Model<S> model(EgruCell<S>(init_torch_like<S>(3, 2, {1, 0.3})));
  const EgruParameters<S> p0 = model.parameters();
  EgruParameters<S> g(3, 2);
  g.R.setConstant(S(1));
  Sgd<S> sgd(SgdOptions<S>{big});
  g.R(2, 1) = S(8);  // lr * 8 overflows
  REQUIRE_THROWS_WITH(sgd.step(model, g), Contains("sparse_rtrl::Sgd::step()") && Contains("R(2, 1) non-finite") &&
                                              Contains("nothing was changed"));
  CHECK(test::relative_error(model.parameters(), p0) == 0);
  CHECK(sgd.steps() == 0);
  CHECK(sgd.state_tensors() == 0);
  // Adam: lr / (1 - beta1^t) overflows for lr near the largest value (Adam(lr = 1e308)).
  Adam<S> adam(AdamOptions<S>{S(1e-3)});
  adam.step(model, g);
  REQUIRE(adam.steps() == 1);
  const EgruParameters<S> p1 = model.parameters();
  const auto m1 = Mat<S>(adam.first_moment(1)), v1 = Mat<S>(adam.second_moment(1));
  adam.set_learning_rate(std::numeric_limits<S>::max() / S(2));
  REQUIRE_THROWS_WITH(adam.step(model, g), Contains("sparse_rtrl::Adam::step()") && Contains("non-finite"));
  CHECK(test::relative_error(model.parameters(), p1) == 0);
  CHECK(adam.steps() == 1);
  CHECK(Mat<S>(adam.first_moment(1)) == m1);
  CHECK(Mat<S>(adam.second_moment(1)) == v1);
  Adam<S> fresh(AdamOptions<S>{std::numeric_limits<S>::max() / S(2)});
  REQUIRE_THROWS_AS(fresh.step(model, g), std::invalid_argument);
  CHECK(fresh.state_tensors() == 0);  // no state created by a refused first step
  CHECK(test::relative_error(model.parameters(), p1) == 0);
  // With the layer named on a stack's layer step.
  Model<S> stack({EgruCell<S>(init_torch_like<S>(3, 2, {1, 0.3})), EgruCell<S>(init_torch_like<S>(2, 3, {2, 0.3}))});
  Sgd<S> per_layer(SgdOptions<S>{big});
  EgruParameters<S> g1(2, 3);
  g1.theta(1) = S(8);
  REQUIRE_THROWS_WITH(per_layer.step(stack, g1, 1), Contains("theta(1, 0) non-finite") && Contains("(layer 1)"));
  // A gradient whose square overflows makes Adam's second moment inf: refused too.
  if (std::is_same<S, double>::value) {
    Adam<S> adam2;
    EgruParameters<S> g2(3, 2);
    g2.bW(0) = S(1e200);
    REQUIRE_THROWS_WITH(adam2.step(model, g2), Contains("the second moment of bW(0, 0) non-finite"));
    CHECK(adam2.steps() == 0);
  }
}

TEST_CASE("Optimizer restore_state refuses step counts above 2^53", "[optimizer][checkpoint][errors]") {
  // Issue 20, item 14: a count near INT64_MAX overflowed at the next step.
  using Catch::Matchers::Contains;
  Adam<double> adam;
  EgruParameters<double> p = init_torch_like<double>(2, 1), g(2, 1);
  adam.step(p, g);
  std::vector<Mat<double>> first, second;
  for (Index k = 0; k < 5; ++k) {
    first.push_back(adam.first_moment(k));
    second.push_back(adam.second_moment(k));
  }
  REQUIRE_THROWS_WITH(adam.restore_state("EgruParameters", first, second, std::numeric_limits<Index>::max()),
                      Contains("steps must be in [0, 2^53"));
  CHECK(adam.steps() == 1);
  adam.restore_state("EgruParameters", first, second, Index(1) << 53);
  CHECK(adam.steps() == (Index(1) << 53));
}

TEMPLATE_TEST_CASE("update(model, learner) and update(readout) apply the accumulated gradient and zero it",
                   "[optimizer][update]", float, double) {
  // Issue 19, item 3: an online loop that forgot zero_gradient() re-applied every earlier gradient
  // at each update and silently stopped learning; update() consumes what it applies.
  using S = TestType;
  using Catch::Matchers::Contains;
  const Index n = 5, d = 2, T = 6;
  const Mat<S> X = test::random_matrix<S>(T, d, 81), G = test::random_matrix<S>(T, n, 82);
  const ParameterMask mask = ParameterMask::random(n, d, 0.8, 0.6, 83);
  // Two identical runs: one with step() + zero_gradient() by hand, one with update().
  Model<S> by_hand(EgruCell<S>(test::firing_parameters<S>(n, d, 84)), mask);
  Model<S> consumed = by_hand;
  Rtrl<S> rtrl_a(by_hand), rtrl_b(consumed);
  Adam<S> adam_a, adam_b;
  LinearReadout<S> readout_a(2, n), readout_b(2, n);
  Sgd<S> sgd_a, sgd_b;
  EgruParameters<S> g;
  Vec<S> dL_dy(n);
  for (Index t = 0; t < T; ++t) {
    rtrl_a.step(X.row(t));
    rtrl_b.step(X.row(t));
    const Vec<S> y_a = rtrl_a.output(), y_b = rtrl_b.output();
    readout_a.backward(y_a, Vec<S>::Constant(2, S(0.5)), dL_dy);
    rtrl_a.accumulate_gradient(G.row(t).transpose() + dL_dy);
    readout_b.backward(y_b, Vec<S>::Constant(2, S(0.5)), dL_dy);
    rtrl_b.accumulate_gradient(G.row(t).transpose() + dL_dy);
    rtrl_a.gradient(g);
    adam_a.step(by_hand, g);
    rtrl_a.zero_gradient();
    sgd_a.step(readout_a);
    readout_a.zero_gradient();
    adam_b.update(consumed, rtrl_b);
    sgd_b.update(readout_b);
    CHECK(rtrl_b.gradient_columns().isZero(0));
    CHECK(readout_b.gradient().V.isZero(0));
    CHECK(readout_b.gradient().b.isZero(0));
  }
  CHECK(test::same_bits(consumed.parameters().R, by_hand.parameters().R));
  CHECK(test::same_bits(consumed.parameters().W, by_hand.parameters().W));
  CHECK(test::same_bits(consumed.parameters().theta, by_hand.parameters().theta));
  CHECK(test::same_bits(readout_b.parameters().V, readout_a.parameters().V));
  CHECK(mask.respected_by(consumed.parameters()));

  // A learner of another model, and a stack, are refused with nothing changed.
  rtrl_b.step(X.row(0));
  rtrl_b.accumulate_gradient(G.row(0));
  const Vec<S> pending = rtrl_b.gradient_columns();
  const EgruParameters<S> params_before = consumed.parameters();
  CHECK_THROWS_WITH(adam_b.update(by_hand, rtrl_b), Contains("sparse_rtrl::Adam::update()") &&
                                                        Contains("bound to another model"));
  CHECK(test::same_bits(rtrl_b.gradient_columns(), pending));
  CHECK(test::same_bits(consumed.parameters().R, params_before.R));
  Model<S> stack({EgruCell<S>(test::firing_parameters<S>(4, d, 85)), EgruCell<S>(test::firing_parameters<S>(3, 4, 86))});
  Rtrl<S> rtrl_stack(stack);
  Sgd<S> sgd_stack;
  CHECK_THROWS_WITH(sgd_stack.update(stack, rtrl_stack), Contains("sparse_rtrl::Sgd::update()") &&
                                                             Contains("one optimizer per layer"));
  // An update that would make a parameter non-finite is refused, and the gradient stays.
  Sgd<S> huge(SgdOptions<S>{std::numeric_limits<S>::max()});
  rtrl_b.accumulate_gradient(G.row(1) * S(1e3));
  const Vec<S> pending2 = rtrl_b.gradient_columns();
  CHECK_THROWS_AS(huge.update(consumed, rtrl_b), std::invalid_argument);
  CHECK(test::same_bits(rtrl_b.gradient_columns(), pending2));
}
