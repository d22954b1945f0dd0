// Bindings of training/: LinearReadout, losses, Sgd/Adam/AdamW, clip_gradient_norm, MagnitudePruner,
// ActivityRegularizer.
#include <optional>
#include <sstream>
#include <vector>

namespace sparse_rtrl::python::SPARSE_RTRL_PY_NS {
namespace {

void assign_readout(const char* name, Matrix& target, const py::object& obj) {
  const MatIn value = mat(obj, std::string("ReadoutParameters.") + name, name);
  if (value.rows() != target.rows() || value.cols() != target.cols())
    fail(std::string("ReadoutParameters.") + name,
         "must keep its shape " + detail::shape_string(target.rows(), target.cols()) +
             " (views share its memory), received " + detail::shape_string(value.rows(), value.cols()));
  target = value;
}

constexpr std::size_t kMaxClipSets = 4;

/// clip_gradient_norm over a run-time list: builds the C++ call's argument pack one set at a time.
template <typename... Sets>
Scalar clip_sets(Scalar max_norm, const std::vector<py::object>& sets, std::size_t i, Sets&... chosen) {
  if constexpr (sizeof...(Sets) == kMaxClipSets) {
    return clip_gradient_norm(max_norm, chosen...);
  } else {
    if (i == sets.size()) {
      if constexpr (sizeof...(Sets) == 0) {
        fail("clip_gradient_norm()", "needs at least one gradient set");
      } else {
        return clip_gradient_norm(max_norm, chosen...);
      }
    }
    if (py::isinstance<Params>(sets[i])) return clip_sets(max_norm, sets, i + 1, chosen..., sets[i].cast<Params&>());
    if (py::isinstance<ReadoutParams>(sets[i]))
      return clip_sets(max_norm, sets, i + 1, chosen..., sets[i].cast<ReadoutParams&>());
    fail("clip_gradient_norm()", "gradient set " + std::to_string(i) +
                                     " must be EgruParameters or ReadoutParameters, received " +
                                     std::string(py::str(py::type::of(sets[i]).attr("__name__"))));
  }
}

/// Opt::update(model, learner), refused while a learner of the model steps on another thread.
template <typename Opt, typename Learner>
void update(Opt& o, PyModel& model, Learner& learner) {
  ObjectGuard::require_model_idle(&model, "optimizer update()");
  o.update(model, learner);
}

/// step() and update() overloads and state accessors shared by the three optimizers.
template <typename Opt>
void bind_optimizer_steps(py::class_<Opt>& c, const char* kind) {
  c.def(
       "step",
       [](Opt& o, PyModel& model, const Params& grad, Index layer) {
         ObjectGuard::require_model_idle(&model, "optimizer step()");
         o.step(model.parameters(layer), grad, model.mask(layer));
       },
       py::arg("model"), py::arg("grad"), py::arg("layer") = 0,
       "One update of layer k of a Model from grad, keeping its pruned weights (and their state) at zero. One "
       "optimizer holds the state of one parameter set: use one per layer.")
      .def(
          "step",
          [](Opt& o, Params& params, const Params& grad, const std::optional<ParameterMask>& mask) {
            if (mask) o.step(params, grad, *mask);
            else o.step(params, grad);
          },
          py::arg("params"), py::arg("grad"), py::arg("mask") = py::none())
      .def("step", [](Opt& o, ReadoutParams& params, const ReadoutParams& grad) { o.step(params, grad); },
           py::arg("params"), py::arg("grad"))
      .def("step", [](Opt& o, Readout& readout) { o.step(readout); }, py::arg("readout"),
           "Updates a readout from its accumulated gradient (does not zero it).")
      .def("update", [](Opt& o, PyModel& model, PyRtrl& learner) { update(o, model, learner); }, py::arg("model"),
           py::arg("learner"),
           "One online update that consumes the gradient it applies: step(model, learner.gradient()), then "
           "learner.zero_gradient() (one-layer models; Rtrl, Snap, RtrlStreams, TruncatedBptt or Uoro of this model).")
      .def("update", [](Opt& o, PyModel& model, PySnap& learner) { update(o, model, learner); }, py::arg("model"),
           py::arg("learner"))
      .def("update", [](Opt& o, PyModel& model, PyStreams& learner) { update(o, model, learner); },
           py::arg("model"), py::arg("learner"))
      .def("update", [](Opt& o, PyModel& model, PyTbptt& learner) { update(o, model, learner); },
           py::arg("model"), py::arg("learner"))
      .def("update", [](Opt& o, PyModel& model, PyUoro& learner) { update(o, model, learner); }, py::arg("model"),
           py::arg("learner"))
      .def("update", [](Opt& o, Readout& readout) { o.update(readout); }, py::arg("readout"),
           "step(readout), then readout.zero_gradient().")
      .def_property("learning_rate", &Opt::learning_rate, &Opt::set_learning_rate)
      .def_property_readonly("steps", &Opt::steps)
      .def("reset", &Opt::reset, "Forgets the state (moments, step count).");
  mismatch_overload(c, "step", kind, "the model, parameters and gradients it updates");
  mismatch_overload(c, "update", kind, "the model, learner or readout it updates");
}

}  // namespace

void bind_training(py::module_& core, py::module_& m) {


  py::class_<ReadoutParams>(m, "ReadoutParameters",
                            "Parameters (or gradient) of a linear readout: V (k x n), b (k); writable NumPy views.")
      .def(py::init<Index, Index>(), py::arg("outputs"), py::arg("units"))
      .def(py::init([](const py::object& V, const py::object& b) {
             ReadoutParams p;
             p.V = mat(V, "ReadoutParameters()", "V");
             p.b = vec(b, "ReadoutParameters()", "b");
             p.validate("sparse_rtrl.ReadoutParameters()");
             return p;
           }),
           py::arg("V"), py::arg("b"))
      .def_property(
          "V", py::cpp_function([](ReadoutParams& p) -> Matrix& { return p.V; }, py::return_value_policy::reference_internal),
          [](ReadoutParams& p, const py::object& v) { assign_readout("V", p.V, v); })
      .def_property(
          "b", py::cpp_function([](ReadoutParams& p) -> Vector& { return p.b; }, py::return_value_policy::reference_internal),
          [](ReadoutParams& p, const py::object& obj) {
            const VecIn v = vec(obj, "ReadoutParameters.b", "b");
            if (v.size() != p.b.size())
              fail("ReadoutParameters.b", "must keep its size " + std::to_string(p.b.size()) + ", received " +
                                              std::to_string(v.size()));
            p.b = v;
          })
      .def_property_readonly("outputs", &ReadoutParams::outputs)
      .def_property_readonly("units", &ReadoutParams::units)
      .def("copy", [](const ReadoutParams& p) { return ReadoutParams(p); })
      .def("set_zero", &ReadoutParams::set_zero);

  py::class_<Readout>(m, "LinearReadout",
                      "logits = V y + b with its own gradient accumulator; backward() returns dL/dy for "
                      "Rtrl.accumulate_gradient().")
      .def(py::init([](Index outputs, Index units, std::uint64_t seed) {
             return Readout(outputs, units, ReadoutInitOptions{seed});
           }),
           py::arg("outputs"), py::arg("units"), py::arg("seed") = 0,
           "V uniform in +-1/sqrt(n) (seeded), b = 0.")
      .def(py::init<ReadoutParams>(), py::arg("params"))
      .def_property_readonly("outputs", &Readout::outputs)
      .def_property_readonly("units", &Readout::units)
      .def("parameters", py::overload_cast<>(&Readout::parameters), py::return_value_policy::reference_internal,
           "ReadoutParameters (views into the readout); a method, as Model.parameters() and C++.")
      .def("gradient", py::overload_cast<>(&Readout::gradient), py::return_value_policy::reference_internal,
           "Accumulated gradient (views).")
      .def("zero_gradient", &Readout::zero_gradient)
      .def("forward", [](const Readout& r, const py::object& y) { return r.forward(vec(y, "LinearReadout.forward()", "y")); }, py::arg("y"))
      .def("backward", [](Readout& r, const py::object& y, const py::object& g) {
             return r.backward(vec(y, "LinearReadout.backward()", "y"), vec(g, "LinearReadout.backward()", "dL_dlogits"));
           },
           py::arg("y"), py::arg("dL_dlogits"), "Accumulates dV, db and returns dL/dy = V^T dL_dlogits.");

  m.def(
      "softmax_cross_entropy",
      [](const py::object& logits, Index target) {
        const auto r = softmax_cross_entropy(vec(logits, "softmax_cross_entropy()", "logits"), target);
        return py::make_tuple(r.loss, r.gradient);
      },
      py::arg("logits"), py::arg("target"), "(L, dL/dlogits) of softmax cross-entropy against class target.");
  m.def(
      "mean_squared_error",
      [](const py::object& prediction, const py::object& target) {
        const auto r = mean_squared_error(vec(prediction, "mean_squared_error()", "prediction"),
                                          vec(target, "mean_squared_error()", "target"));
        return py::make_tuple(r.loss, r.gradient);
      },
      py::arg("prediction"), py::arg("target"), "(L, dL/dprediction) of (1/k) sum (p - u)^2.");

  py::class_<Sgd<Scalar>> sgd(m, "Sgd", "SGD with optional (Nesterov) momentum, torch.optim.SGD's rule.");
  sgd.def(py::init([](Scalar lr, Scalar momentum, bool nesterov, Scalar weight_decay) {
            return Sgd<Scalar>(SgdOptions<Scalar>{lr, momentum, nesterov, weight_decay});
          }),
          py::arg("learning_rate") = 0.01, py::arg("momentum") = 0.0, py::arg("nesterov") = false,
          py::arg("weight_decay") = 0.0)
      .def("velocity", [](const Sgd<Scalar>& o, Index t) { return Matrix(o.velocity(t)); }, py::arg("tensor"),
           "Momentum buffer of tensor t (W, R, bW, bR, theta or V, b), a copy.");
  bind_optimizer_steps(sgd, "Sgd");

  py::class_<Adam<Scalar>> adam(m, "Adam", "Adam, torch.optim.Adam's rule (weight decay as an L2 term).");
  adam.def(py::init([](Scalar lr, Scalar beta1, Scalar beta2, Scalar eps, Scalar weight_decay) {
             return Adam<Scalar>(AdamOptions<Scalar>{lr, beta1, beta2, eps, weight_decay});
           }),
           py::arg("learning_rate") = 1e-3, py::arg("beta1") = 0.9, py::arg("beta2") = 0.999, py::arg("eps") = 1e-8,
           py::arg("weight_decay") = 0.0)
      .def("first_moment", [](const Adam<Scalar>& o, Index t) { return Matrix(o.first_moment(t)); }, py::arg("tensor"))
      .def("second_moment", [](const Adam<Scalar>& o, Index t) { return Matrix(o.second_moment(t)); }, py::arg("tensor"));
  bind_optimizer_steps(adam, "Adam");

  py::class_<AdamW<Scalar>> adamw(m, "AdamW", "AdamW, torch.optim.AdamW's rule (decoupled weight decay).");
  adamw.def(py::init([](Scalar lr, Scalar beta1, Scalar beta2, Scalar eps, Scalar weight_decay) {
              return AdamW<Scalar>(AdamWOptions<Scalar>{lr, beta1, beta2, eps, weight_decay});
            }),
            py::arg("learning_rate") = 1e-3, py::arg("beta1") = 0.9, py::arg("beta2") = 0.999, py::arg("eps") = 1e-8,
            py::arg("weight_decay") = 0.01)
      .def("first_moment", [](const AdamW<Scalar>& o, Index t) { return Matrix(o.first_moment(t)); }, py::arg("tensor"))
      .def("second_moment", [](const AdamW<Scalar>& o, Index t) { return Matrix(o.second_moment(t)); },
           py::arg("tensor"));
  bind_optimizer_steps(adamw, "AdamW");

  m.def(
      "clip_gradient_norm",
      [](Scalar max_norm, py::args sets) {
        std::vector<py::object> list;
        for (const auto& s : sets) list.push_back(py::reinterpret_borrow<py::object>(s));
        if (list.size() > kMaxClipSets)
          fail("clip_gradient_norm()", "takes at most " + std::to_string(kMaxClipSets) + " gradient sets, received " +
                                           std::to_string(list.size()));
        return clip_sets(max_norm, list, 0);
      },
      py::arg("max_norm"),
      "clip_gradient_norm(max_norm, grad, ...): scales every set (EgruParameters, ReadoutParameters; up to 4) in place "
      "by max_norm / norm when their global norm exceeds max_norm; returns the norm before clipping.");

  py::class_<ActivityRegularizer<Scalar>>(m, "ActivityRegularizer",
                                          "L = strength (rate_t - target)^2 on the events o_t; its gradient dL/do goes "
                                          "to accumulate_gradient(dL_dy, dL_do).")
      .def(py::init<Scalar, Scalar>(), py::arg("target_rate"), py::arg("strength"))
      .def_property_readonly("target_rate", &ActivityRegularizer<Scalar>::target_rate)
      .def_property_readonly("strength", &ActivityRegularizer<Scalar>::strength)
      .def("loss", [](const ActivityRegularizer<Scalar>& a, const py::object& o) {
             return a.loss(vec(o, "ActivityRegularizer.loss()", "o"));
           }, py::arg("o"))
      .def(
          "gradient",
          [](const ActivityRegularizer<Scalar>& a, const py::object& arg) {
            const VecIn o = vec(arg, "ActivityRegularizer.gradient()", "o");
            Vector g(o.size());
            a.gradient(o, g);
            return g;
          },
          py::arg("o"), "dL/do for the events o.");

  // The typed methods of the common MagnitudePruner (module.cpp): overloads per dtype.
  auto pruner = py::reinterpret_borrow<py::class_<MagnitudePruner>>(core.attr("MagnitudePruner"));
  pruner
      .def("next_mask", &MagnitudePruner::next_mask<Scalar>, py::arg("current"), py::arg("params"))
      .def(
          "prune",
          [](MagnitudePruner& p, PyModel& model, Index layer) {
            ObjectGuard::require_model_idle(&model, "MagnitudePruner.prune()");
            model.set_mask(p.next_mask(model.mask(layer), model.parameters(layer)), layer);
            return model.mask(layer);
          },
          py::arg("model"), py::arg("layer") = 0,
          "One event on layer k of a Model; its learners follow before their next step. Returns the new mask.")
      .def(
          "prune",
          [](MagnitudePruner& p, PyRtrl& rtrl, Index layer) {
            ObjectGuard::require_model_idle(&rtrl.model(), "MagnitudePruner.prune()");
            rtrl.set_mask(p.next_mask(rtrl.mask(layer), rtrl.model().parameters(layer)), layer);
            return rtrl.mask(layer);
          },
          py::arg("learner"), py::arg("layer") = 0, "One event through Rtrl.set_mask (re-lays its columns now).")
      .def(
          "prune",
          [](MagnitudePruner& p, PyStreams& streams, Index layer) {
            ObjectGuard::require_model_idle(&streams.model(), "MagnitudePruner.prune()");
            streams.set_mask(p.next_mask(streams.model().mask(layer), streams.model().parameters(layer)), layer);
            return streams.model().mask(layer);
          },
          py::arg("learner"), py::arg("layer") = 0, "One event through RtrlStreams.set_mask.");
}

}  // namespace sparse_rtrl::python::SPARSE_RTRL_PY_NS
