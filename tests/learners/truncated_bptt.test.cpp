// Truncated BPTT (learners/truncated_bptt.hpp): with k >= T it is BPTT (both forms, float and
// double, events and GRU mode, masks, stacks with losses on every layer); with k < T each form
// equals an independent reference, Bptt run on the window of inputs from the carried states.
#include "test_support.hpp"

#include <cstdio>
#include <string>
#include <vector>

using namespace sparse_rtrl;
using test::Mat;
using test::Vec;

namespace {


/// Bptt's gradient of the losses G (one T x n_k matrix per layer, 0 x 0 for none) over the
/// inputs X from the initial states c0, in the learner's column layout (all layers).
template <typename S, typename Learner>
Vec<S> tbptt_reference_columns(Model<S>& model, const Learner& learner, const Mat<S>& X,
                               const std::vector<Vec<S>>& c0, const std::vector<Mat<S>>& G) {
  Bptt<S> bptt(model);
  bptt.forward(X, c0);
  const auto grads = bptt.backward(G);
  Vec<S> columns = Vec<S>::Zero(learner.columns());
  for (Index k = 0; k < model.layers(); ++k) {
    Vec<S> part(learner.layout(k).columns());
    learner.layout(k).gather(grads[std::size_t(k)], part);
    columns.segment(learner.column_offset(k), part.size()) = part;
  }
  return columns;
}

}  // namespace

TEMPLATE_TEST_CASE("Truncated BPTT with k >= T equals BPTT, both forms, stacks, masks, losses on every layer",
                   "[truncated_bptt]", float, double) {
  using S = TestType;
  const Index d = 4, T = 23;
  const std::vector<std::vector<Index>> stacks = {{9}, {10, 7}, {8, 11, 6}};
  for (const auto& sizes : stacks)
    for (bool events : {true, false})
      for (double density : {1.0, 0.6})
        for (TruncationForm form : {TruncationForm::every_step, TruncationForm::every_k_steps})
          for (Index k : {T, T + 5}) {
            const Index L = Index(sizes.size());
            INFO("L = " << L << ", events = " << events << ", density = " << density << ", form = " << int(form)
                        << ", k = " << k);
            Model<S> model = test::masked_stack<S>(sizes, d, events, 400 + std::uint64_t(L), density);
            const Mat<S> X = test::random_matrix<S>(T, d, 401);
            std::vector<Mat<S>> G;
            for (Index m = 0; m < L; ++m)
              G.push_back(test::random_matrix<S>(T, sizes[std::size_t(m)], 410 + std::uint64_t(m)));
            Bptt<S> bptt(model);
            bptt.forward(X);
            const auto expected = bptt.backward(G);
            TruncatedBptt<S> tbptt(model, {k, form});
            for (Index t = 0; t < T; ++t) {
              tbptt.step(X.row(t));
              CHECK(test::same_bits(tbptt.output(), bptt.outputs().row(t).transpose()));
              for (Index m = 0; m < L; ++m) tbptt.accumulate_gradient_at(m, G[std::size_t(m)].row(t));
            }
            if (form == TruncationForm::every_k_steps) {
              // k = T: the block ended at the last step; k > T: not yet, nothing back-propagated.
              CHECK(tbptt.gradient_columns().isZero() == (k > T));
              tbptt.flush();
            }
            for (Index m = 0; m < L; ++m) {
              INFO("layer " << m);
              const auto g = tbptt.gradient(m);
              CHECK(test::relative_error(g, expected[std::size_t(m)]) <= test::Tolerance<S>::gradient);
              CHECK(model.mask(m).respected_by(g));
            }
            if (L > 1 && form == TruncationForm::every_step) CHECK(tbptt.total_work().readout_fma > 0);
          }
}

TEMPLATE_TEST_CASE("Truncated BPTT with k >= T and a loss on the events equals BPTT", "[truncated_bptt]", float, double) {
  using S = TestType;
  const Index T = 17;
  Model<S> model = test::masked_stack<S>({8}, 3, true, 420, 0.7);
  const Mat<S> X = test::random_matrix<S>(T, 3, 421), G = test::random_matrix<S>(T, 8, 422),
               GO = test::random_matrix<S>(T, 8, 423);
  Bptt<S> bptt(model);
  bptt.forward(X);
  const auto expected = bptt.backward(G, GO);
  TruncatedBptt<S> tbptt(model, {T, TruncationForm::every_step});
  for (Index t = 0; t < T; ++t) {
    tbptt.step(X.row(t));
    tbptt.accumulate_gradient(G.row(t).transpose(), GO.row(t).transpose());
  }
  CHECK(test::relative_error(tbptt.gradient(), expected) <= test::Tolerance<S>::gradient);
}

TEMPLATE_TEST_CASE("Truncated BPTT every step: each loss's gradient is BPTT of that loss through the last k steps",
                   "[truncated_bptt]", float, double) {
  using S = TestType;
  const Index d = 3, T = 19;
  for (const std::vector<Index>& sizes : {std::vector<Index>{9}, std::vector<Index>{8, 6}})
    for (bool events : {true, false})
      for (Index k : {1, 4, 7}) {
        const Index L = Index(sizes.size());
        INFO("L = " << L << ", events = " << events << ", k = " << k);
        Model<S> model = test::masked_stack<S>(sizes, d, events, 430 + std::uint64_t(L), 0.7);
        const Mat<S> X = test::random_matrix<S>(T, d, 431);
        const Mat<S> G = test::random_matrix<S>(T, sizes.back(), 432);
        TruncatedBptt<S> tbptt(model, {k, TruncationForm::every_step});
        // states[t][m]: c^m_t as carried (t = 0: zero)
        std::vector<std::vector<Vec<S>>> states(1);
        for (Index m = 0; m < L; ++m) states[0].push_back(Vec<S>::Zero(sizes[std::size_t(m)]));
        double worst = 0;
        for (Index t = 1; t <= T; ++t) {
          tbptt.step(X.row(t - 1));
          states.emplace_back();
          for (Index m = 0; m < L; ++m) states.back().push_back(tbptt.state(m));
          const Vec<S> before = tbptt.gradient_columns();
          tbptt.accumulate_gradient(G.row(t - 1).transpose());
          const Vec<S> increment = tbptt.gradient_columns() - before;
          // Independent reference: Bptt over x_{t-w+1..t} from the carried c_{t-w}, the loss at the last step.
          const Index w = std::min(k, t);
          std::vector<Mat<S>> Gw(static_cast<std::size_t>(L));
          Gw.back() = Mat<S>::Zero(w, sizes.back());
          Gw.back().row(w - 1) = G.row(t - 1);
          const Vec<S> reference =
              tbptt_reference_columns<S>(model, tbptt, X.middleRows(t - w, w), states[std::size_t(t - w)], Gw);
          worst = std::max(worst, test::relative_error(increment, reference));
        }
        CHECK(worst <= test::Tolerance<S>::gradient);
      }
}

TEMPLATE_TEST_CASE("Truncated BPTT every k steps: at a block's end, BPTT of the block's losses through the block only",
                   "[truncated_bptt]", float, double) {
  using S = TestType;
  const Index d = 3, T = 22, k = 5;
  for (const std::vector<Index>& sizes : {std::vector<Index>{9}, std::vector<Index>{8, 6}}) {
    const Index L = Index(sizes.size());
    INFO("L = " << L);
    Model<S> model = test::masked_stack<S>(sizes, d, true, 440 + std::uint64_t(L), 0.7);
    const Mat<S> X = test::random_matrix<S>(T, d, 441);
    std::vector<Mat<S>> G;
    for (Index m = 0; m < L; ++m) G.push_back(test::random_matrix<S>(T, sizes[std::size_t(m)], 442 + std::uint64_t(m)));
    TruncatedBptt<S> tbptt(model, {k, TruncationForm::every_k_steps});
    std::vector<Vec<S>> block_start;
    for (Index m = 0; m < L; ++m) block_start.push_back(Vec<S>::Zero(sizes[std::size_t(m)]));
    Vec<S> last = Vec<S>::Zero(tbptt.columns());
    double worst = 0;
    int blocks = 0;
    for (Index t = 1; t <= T; ++t) {
      tbptt.step(X.row(t - 1));
      for (Index m = 0; m < L; ++m) tbptt.accumulate_gradient_at(m, G[std::size_t(m)].row(t - 1));
      const bool end = t % k == 0 || t == T;
      if (t == T && t % k != 0) tbptt.flush();
      CHECK(tbptt.block_complete() == (t % k == 0));
      if (!end) {
        CHECK(test::same_bits(tbptt.gradient_columns(), last));  // losses kept until the block ends
        continue;
      }
      const Index w = (t - 1) % k + 1, first = t - w;
      std::vector<Mat<S>> Gw;
      for (Index m = 0; m < L; ++m) Gw.push_back(G[std::size_t(m)].middleRows(first, w));
      const Vec<S> reference = tbptt_reference_columns<S>(model, tbptt, X.middleRows(first, w), block_start, Gw);
      worst = std::max(worst, test::relative_error(Vec<S>(tbptt.gradient_columns() - last), reference));
      last = tbptt.gradient_columns();
      for (Index m = 0; m < L; ++m) block_start[std::size_t(m)] = tbptt.state(m);
      ++blocks;
    }
    CHECK(blocks == 5);
    CHECK(worst <= test::Tolerance<S>::gradient);
  }
}

TEMPLATE_TEST_CASE("Truncated BPTT: reset() ends a block, a loss-free block end is back-propagated at the next step",
                   "[truncated_bptt]", float, double) {
  using S = TestType;
  Model<S> model = test::masked_stack<S>({7}, 3, true, 450, 0.8);
  const Mat<S> X = test::random_matrix<S>(12, 3, 451), G = test::random_matrix<S>(12, 7, 452);
  // Losses at steps 1 and 2 of a block of 3, none at step 3: back-propagated when step 4 begins.
  TruncatedBptt<S> a(model, {3, TruncationForm::every_k_steps});
  for (Index t = 0; t < 3; ++t) {
    a.step(X.row(t));
    if (t < 2) a.accumulate_gradient(G.row(t).transpose());
  }
  CHECK(a.gradient_columns().isZero());
  a.step(X.row(3));
  const Vec<S> after_next = a.gradient_columns();
  CHECK(!after_next.isZero());
  TruncatedBptt<S> b(model, {3, TruncationForm::every_k_steps});
  for (Index t = 0; t < 3; ++t) {
    b.step(X.row(t));
    if (t < 2) b.accumulate_gradient(G.row(t).transpose());
  }
  b.reset();  // the sequence ends: its last block's losses are back-propagated, the gradient kept
  CHECK(test::same_bits(b.gradient_columns(), after_next));
  CHECK(b.steps() == 0);
}

TEMPLATE_TEST_CASE("Truncated BPTT refuses bad input with std::invalid_argument", "[truncated_bptt][errors]", float,
                   double) {
  using S = TestType;
  using Catch::Matchers::Contains;
  Model<S> model = test::masked_stack<S>({6}, 3, true, 460, 1.0);
  CHECK_THROWS_MATCHES(TruncatedBptt<S>(model, {0, TruncationForm::every_step}), std::invalid_argument,
                       Catch::Matchers::Message(
                           "sparse_rtrl::TruncatedBptt::TruncatedBptt(): options.k (the steps back-propagated "
                           "through) must be >= 1, received 0"));
  CHECK_THROWS_AS(TruncatedBptt<S>(model, {-3, TruncationForm::every_k_steps}), std::invalid_argument);
  CHECK_THROWS_AS(TruncatedBptt<S>(model, {2, TruncationForm(7)}), std::invalid_argument);
  TruncatedBptt<S> tbptt(model, {3, TruncationForm::every_step});
  CHECK_THROWS_WITH(tbptt.step(Vec<S>::Zero(4)),
                    Contains("sparse_rtrl::TruncatedBptt::step()") && Contains("x must be a vector of size 3"));
  CHECK_THROWS_AS(tbptt.accumulate_gradient(Vec<S>::Zero(6)), std::logic_error);  // before any step
  tbptt.step(Vec<S>::Ones(3));
  CHECK_THROWS_AS(tbptt.accumulate_gradient(Vec<S>::Zero(5)), std::invalid_argument);
  Vec<S> nan = Vec<S>::Zero(6);
  nan(2) = std::numeric_limits<S>::quiet_NaN();
  CHECK_THROWS_AS(tbptt.accumulate_gradient(nan), std::invalid_argument);
  CHECK(tbptt.gradient_columns().isZero());
  model.set_mask(ParameterMask::random(6, 3, 0.5, 0.5, 461));
  CHECK_THROWS_WITH(tbptt.step(Vec<S>::Ones(3)), Contains("construct a new TruncatedBptt"));
}

TEMPLATE_TEST_CASE("Truncated BPTT resumes bit for bit from a checkpoint, mid-block", "[truncated_bptt][checkpoint]",
                   float, double) {
  using S = TestType;
  const std::string path = "truncated_bptt_resume_" + std::string(sizeof(S) == 4 ? "f" : "d") + ".npz";
  for (TruncationForm form : {TruncationForm::every_step, TruncationForm::every_k_steps}) {
    Model<S> model = test::masked_stack<S>({7, 5}, 3, true, 470, 0.7);
    const Mat<S> X = test::random_matrix<S>(14, 3, 471), G = test::random_matrix<S>(14, 5, 472);
    TruncatedBptt<S> live(model, {4, form});
    for (Index t = 0; t < 6; ++t) {
      live.step(X.row(t));
      live.accumulate_gradient(G.row(t).transpose());
    }
    io::Checkpoint().add(model).add("tbptt", live).save(path);
    Model<S> other = test::masked_stack<S>({7, 5}, 3, true, 470, 0.7);
    TruncatedBptt<S> resumed(other, {4, form});
    io::Checkpoint().add(other).add("tbptt", resumed).load(path);
    TruncatedBptt<S> wrong_k(other, {5, form});
    CHECK_THROWS_WITH(io::Checkpoint().add(other).add("tbptt", wrong_k).load(path), Catch::Matchers::Contains("tbptt/k"));
    for (Index t = 6; t < 14; ++t) {
      live.step(X.row(t));
      live.accumulate_gradient(G.row(t).transpose());
      resumed.step(X.row(t));
      resumed.accumulate_gradient(G.row(t).transpose());
    }
    live.flush();
    resumed.flush();
    CHECK(!live.gradient_columns().isZero());
    CHECK(test::same_bits(live.gradient_columns(), resumed.gradient_columns()));
    CHECK(test::same_bits(live.state(0), resumed.state(0)));
  }
  std::remove(path.c_str());
}
