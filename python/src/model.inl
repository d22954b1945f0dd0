// Bindings of model/: surrogate, parameters (NumPy views), masks, the Model stack with its
// torch.nn.GRU-named state_dict, and Inference.
#include <pybind11/numpy.h>

#include <memory>
#include <sstream>
#include <vector>

namespace sparse_rtrl::python::SPARSE_RTRL_PY_NS {
namespace {

std::string shape_of(Index rows, Index cols) { return detail::shape_string(rows, cols); }
using python::shape_of;

/// Assigns @p value to @p target in place (so NumPy views of target stay valid): same shape only.
void assign_matrix(const char* name, Matrix& target, const py::object& obj) {
  const MatIn value = mat(obj, std::string("EgruParameters.") + name, name);
  if (value.rows() != target.rows() || value.cols() != target.cols())
    fail(std::string("EgruParameters.") + name,
         "must keep its shape " + shape_of(target.rows(), target.cols()) + " (views share its memory), received " +
             shape_of(value.rows(), value.cols()) + "; build a new EgruParameters for other sizes");
  target = value;
}

void assign_vector(const char* owner, const char* name, Vector& target, const py::object& obj) {
  const VecIn value = vec(obj, std::string(owner) + "." + name, name);
  if (value.size() != target.size())
    fail(std::string(owner) + "." + name,
         "must keep its size " + std::to_string(target.size()) + " (views share its memory), received " +
             std::to_string(value.size()));
  target = value;
}

/// One layer's key of a state_dict.
std::string key(const char* stem, Index layer) { return std::string(stem) + "_l" + std::to_string(layer); }

constexpr const char* kStems[] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh", "threshold"};

py::dict state_dict(py::object self) {
  const PyModel& model = self.cast<const PyModel&>();
  py::dict d;
  for (Index k = 0; k < model.layers(); ++k) {
    // The views keep the model alive (base object = the model), as torch's state_dict tensors share storage.
    PyModel& mut = self.cast<PyModel&>();
    Params& p = mut.parameters(k);
    d[py::str(key("weight_ih", k))] = py::cast(p.W, py::return_value_policy::reference_internal, self);
    d[py::str(key("weight_hh", k))] = py::cast(p.R, py::return_value_policy::reference_internal, self);
    d[py::str(key("bias_ih", k))] = py::cast(p.bW, py::return_value_policy::reference_internal, self);
    d[py::str(key("bias_hh", k))] = py::cast(p.bR, py::return_value_policy::reference_internal, self);
    d[py::str(key("threshold", k))] = py::cast(p.theta, py::return_value_policy::reference_internal, self);
  }
  return d;
}

/// Converts one state_dict value to a float64 matrix of the expected shape (vectors: 1-D, or
/// 2-D with one column), refusing other shapes and non-finite values.
Matrix state_value(const std::string& name, const py::handle& value, Index rows, Index cols, bool vector) {
  const auto a = checked_array<Scalar>(value, "Model.load_state_dict()", ("'" + name + "'").c_str());
  const bool ok = vector ? (a.ndim() == 1 && a.shape(0) == rows)
                         : (a.ndim() == 2 && a.shape(0) == rows && a.shape(1) == cols);
  if (!ok) {
    const std::string got = shape_of(a);
    fail("Model.load_state_dict()", "'" + name + "' must have shape " +
                                        (vector ? "(" + std::to_string(rows) + ",)"
                                                : "(" + std::to_string(rows) + ", " + std::to_string(cols) + ")") +
                                        ", received " + got);
  }
  Matrix out(rows, vector ? 1 : cols);
  auto r = a.unchecked();
  for (Index i = 0; i < rows; ++i)
    for (Index j = 0; j < out.cols(); ++j) {
      const Scalar v = vector ? r(i) : r(i, j);
      if (!std::isfinite(v)) {
        std::ostringstream s;
        s << "'" << name << "' must be finite, received " << v << " at (" << i << ", " << j << ")";
        fail("Model.load_state_dict()", s.str());
      }
      out(i, j) = v;
    }
  return out;
}

/// Loads torch.nn.GRU-named parameters; all checked before any is written. Returns
/// (missing_keys, unexpected_keys) as torch does; strict refuses both.
py::tuple load_state_dict(PyModel& model, const py::dict& d, bool strict) {
  ObjectGuard::require_model_idle(&model, "Model.load_state_dict()");
  std::vector<std::string> missing, unexpected;
  struct Pending {
    Index layer;
    int which;
    Matrix value;
  };
  std::vector<Pending> pending;
  std::vector<std::string> known;
  for (Index k = 0; k < model.layers(); ++k) {
    const Params& p = model.parameters(k);
    const Index n = p.units(), d_in = p.inputs();
    for (int which = 0; which < 5; ++which) {
      const std::string name = key(kStems[which], k);
      known.push_back(name);
      if (!d.contains(name)) {
        missing.push_back(name);
        continue;
      }
      const Index rows = which == 4 ? n : 3 * n;
      const Index cols = which == 0 ? d_in : which == 1 ? n : 1;
      pending.push_back({k, which, state_value(name, d[py::str(name)], rows, cols, which >= 2)});
    }
  }
  for (const auto& item : d) {
    const std::string name = py::str(item.first);
    if (std::find(known.begin(), known.end(), name) == known.end()) unexpected.push_back(name);
  }
  if (strict && (!missing.empty() || !unexpected.empty())) {
    std::string msg = "keys must match the model's (" + std::to_string(model.layers()) + " layers:";
    msg += " weight_ih_lK, weight_hh_lK, bias_ih_lK, bias_hh_lK, threshold_lK)";
    if (!missing.empty()) {
      msg += "; missing:";
      for (const auto& k : missing) msg += " " + k;
    }
    if (!unexpected.empty()) {
      msg += "; unexpected:";
      for (const auto& k : unexpected) msg += " " + k;
    }
    fail("Model.load_state_dict()", msg + " (strict=False loads the keys present)");
  }
  for (const Pending& item : pending) {
    Params& p = model.parameters(item.layer);
    switch (item.which) {
      case 0: p.W = item.value; break;
      case 1: p.R = item.value; break;
      case 2: p.bW = item.value.col(0); break;
      case 3: p.bR = item.value.col(0); break;
      default: p.theta = item.value.col(0); break;
    }
  }
  model.enforce_mask();  // values loaded into pruned weights are zeroed
  return py::make_tuple(missing, unexpected);
}

template <typename T>
std::vector<T> per_layer(const py::object& value, std::size_t layers, const char* name) {
  std::vector<T> out;
  if (py::isinstance<py::list>(value) || py::isinstance<py::tuple>(value)) {
    for (const auto& item : value) out.push_back(item.cast<T>());
    if (out.size() != layers)
      fail("Model()", std::string(name) + " must be one value or one per layer (" + std::to_string(layers) +
                          "), received " + std::to_string(out.size()));
  } else {
    out.assign(layers, value.cast<T>());
  }
  return out;
}

std::vector<ParameterMask> masks_of(const py::object& masks, std::size_t layers) {
  if (masks.is_none()) return {};
  if (py::isinstance<ParameterMask>(masks)) {
    if (layers != 1)
      fail("Model()", "one mask for a stack of " + std::to_string(layers) + " layers: pass a list of one mask per layer");
    return {masks.cast<ParameterMask>()};
  }
  std::vector<ParameterMask> out;
  for (const auto& item : masks) out.push_back(item.cast<ParameterMask>());
  return out;
}

std::unique_ptr<PyModel> make_model(const std::vector<Params>& params, const py::object& masks, const py::object& events,
                                    const py::object& surrogate) {
  const std::size_t L = params.size();
  if (L == 0) fail("Model()", "a model needs at least one layer, received 0");
  const std::vector<bool> ev = per_layer<bool>(events, L, "events");
  const std::vector<Surrogate> sur =
      surrogate.is_none() ? std::vector<Surrogate>(L, Surrogate()) : per_layer<Surrogate>(surrogate, L, "surrogate");
  std::vector<PyCell> cells;
  for (std::size_t k = 0; k < L; ++k) cells.emplace_back(params[k], CellOptions{ev[k]}, sur[k]);
  return std::make_unique<PyModel>(std::move(cells), masks_of(masks, L));
}

std::vector<Params> params_of(const py::object& layers) {
  if (py::isinstance<Params>(layers)) return {layers.cast<Params>()};
  std::vector<Params> out;
  for (const auto& item : layers) out.push_back(item.cast<Params>());
  return out;
}

/// Python's layer argument: -1 (the default) is the top layer.
Index top(const PyInference& i, Index layer) { return layer == -1 ? i.layers() - 1 : layer; }

}  // namespace


void bind_model(py::module_& core, py::module_& m) {

  py::class_<Surrogate>(m, "TriangularSurrogate",
                        "psi(v) = gamma * max(0, 1 - |v| / eps), the pseudo-derivative of the event function.")
      .def(py::init<Scalar, Scalar>(), py::arg("gamma") = 0.7, py::arg("eps") = 1.0)
      .def_property_readonly("gamma", &Surrogate::gamma)
      .def_property_readonly("eps", &Surrogate::eps)
      .def_property_readonly("half_width", &Surrogate::half_width)
      .def("pseudo_derivative", &Surrogate::pseudo_derivative, py::arg("v"))
      .def("__repr__", [](const Surrogate& s) {
        std::ostringstream o;
        o << "TriangularSurrogate(gamma=" << s.gamma() << ", eps=" << s.eps() << ")";
        return o.str();
      });

  py::class_<Params>(m, "EgruParameters",
                     "Parameters (or a gradient) of one EGRU layer in torch.nn.GRU layout, gate order (r, z, g): "
                     "W = weight_ih (3n x d), R = weight_hh (3n x n), bW = bias_ih, bR = bias_hh (3n), theta (n). "
                     "The attributes are writable NumPy views; assigning an attribute copies into it (same shape).")
      .def(py::init<Index, Index>(), py::arg("units"), py::arg("inputs"), "All zeros for n units and d inputs.")
      .def(py::init([](const py::object& W, const py::object& R, const py::object& bW, const py::object& bR,
                       const py::object& theta) {
             const char* where = "EgruParameters()";
             Params p;
             p.W = mat(W, where, "W");
             p.R = mat(R, where, "R");
             p.bW = vec(bW, where, "bW");
             p.bR = vec(bR, where, "bR");
             p.theta = vec(theta, where, "theta");
             p.validate("sparse_rtrl.EgruParameters()");
             return p;
           }),
           py::arg("W"), py::arg("R"), py::arg("bW"), py::arg("bR"), py::arg("theta"))
      .def_property(
          "W", py::cpp_function([](Params& p) -> Matrix& { return p.W; }, py::return_value_policy::reference_internal),
          [](Params& p, const py::object& v) { assign_matrix("W", p.W, v); })
      .def_property(
          "R", py::cpp_function([](Params& p) -> Matrix& { return p.R; }, py::return_value_policy::reference_internal),
          [](Params& p, const py::object& v) { assign_matrix("R", p.R, v); })
      .def_property(
          "bW", py::cpp_function([](Params& p) -> Vector& { return p.bW; }, py::return_value_policy::reference_internal),
          [](Params& p, const py::object& v) { assign_vector("EgruParameters", "bW", p.bW, v); })
      .def_property(
          "bR", py::cpp_function([](Params& p) -> Vector& { return p.bR; }, py::return_value_policy::reference_internal),
          [](Params& p, const py::object& v) { assign_vector("EgruParameters", "bR", p.bR, v); })
      .def_property(
          "theta",
          py::cpp_function([](Params& p) -> Vector& { return p.theta; }, py::return_value_policy::reference_internal),
          [](Params& p, const py::object& v) { assign_vector("EgruParameters", "theta", p.theta, v); })
      .def_property_readonly("units", &Params::units)
      .def_property_readonly("inputs", &Params::inputs)
      .def_property_readonly("size", &Params::size)
      .def("copy", [](const Params& p) { return Params(p); }, "An independent copy.")
      .def("__copy__", [](const Params& p) { return Params(p); })
      .def("__deepcopy__", [](const Params& p, py::dict) { return Params(p); }, py::arg("memo"))
      .def("set_zero", &Params::set_zero)
      .def("__iadd__", [](Params& a, const Params& b) -> Params& { return a += b; }, py::return_value_policy::reference)
      .def("__repr__", [](const Params& p) { return "EgruParameters(" + p.shape_string() + ", dtype=" + kDtype + ")"; });

  m.def(
      "init_torch_like",
      [](Index n, Index d, std::uint64_t seed, Scalar threshold) {
        return init_torch_like<Scalar>(n, d, InitOptions<Scalar>{seed, threshold});
      },
      py::arg("units"), py::arg("inputs"), py::arg("seed") = 0, py::arg("threshold") = 0.3,
      "torch.nn.GRU's initialisation (uniform in +-1/sqrt(n), from the library's portable seeded generator: the same "
      "numbers as C++'s init_torch_like), thresholds constant.");

  py::class_<PyModel>(m, "Model",
                      "L >= 1 EGRU layers and their masks, owned once; learners and optimizers reference it. "
                      "Layer k reads layer k-1's event output at the same step (GRU mode: torch.nn.GRU(num_layers=L)).")
      .def(py::init([](const py::object& layers, const py::object& masks, const py::object& events,
                       const py::object& surrogate) { return make_model(params_of(layers), masks, events, surrogate); }),
           py::arg("layers"), py::arg("masks") = py::none(), py::arg("events") = true, py::arg("surrogate") = py::none(),
           "layers: EgruParameters or a list of them (one per layer); masks: None, a ParameterMask or one per layer; "
           "events: bool (False: GRU mode, exactly torch.nn.GRU) or one per layer; surrogate: TriangularSurrogate or "
           "one per layer (default gamma 0.7, eps 1).")
      .def_static(
          "torch_like",
          [](const py::object& units, Index inputs, std::uint64_t seed, Scalar threshold, const py::object& masks,
             const py::object& events, const py::object& surrogate) {
            std::vector<Index> sizes;
            if (py::isinstance<py::int_>(units)) sizes.push_back(units.cast<Index>());
            else
              for (const auto& u : units) sizes.push_back(u.cast<Index>());
            std::vector<Params> params;
            Index d = inputs;
            for (std::size_t k = 0; k < sizes.size(); ++k) {
              params.push_back(init_torch_like<Scalar>(sizes[k], d, InitOptions<Scalar>{seed + k, threshold}));
              d = sizes[k];
            }
            return make_model(params, masks, events, surrogate);
          },
          py::arg("units"), py::arg("inputs"), py::arg("seed") = 0, py::arg("threshold") = 0.3,
          py::arg("masks") = py::none(), py::arg("events") = true, py::arg("surrogate") = py::none(),
          "A model initialised as torch.nn.GRU (init_torch_like); units: n or a list of layer sizes; layer k is "
          "seeded with seed + k.")
      .def_property_readonly("layers", &PyModel::layers)
      .def("units", [](const PyModel& m, py::object layer) { return layer.is_none() ? m.units() : m.units(layer.cast<Index>()); },
           py::arg("layer") = py::none(), "Units of layer k (default: the top layer).")
      .def_property_readonly("inputs", &PyModel::inputs)
      .def("events", &PyModel::events, py::arg("layer") = 0, "Events mode of layer k (False: GRU mode).")
      .def("surrogate", &PyModel::surrogate, py::arg("layer") = 0)
      .def("parameters", [](PyModel& m, Index layer) -> auto& { return m.parameters(layer); }, py::arg("layer") = 0,
           py::return_value_policy::reference_internal,
           "Layer k's parameters: an EgruParameters whose arrays are writable views into the model.")
      .def("mask", [](const PyModel& m, Index layer) { return m.mask(layer); }, py::arg("layer") = 0,
           "A copy of layer k's mask.")
      .def("set_mask",
           [](PyModel& o, const ParameterMask& mask, Index layer) {
             ObjectGuard::require_model_idle(&o, "Model.set_mask()");
             o.set_mask(mask, layer);
           }, py::arg("mask"), py::arg("layer") = 0,
           "Changes which weights of layer k exist; newly pruned weights become zero; learners follow before their "
           "next step.")
      .def_property_readonly("mask_version", &PyModel::mask_version)
      .def("enforce_mask", &PyModel::enforce_mask, "Re-zeroes pruned weights written since (every step does it too).")
      .def("state_dict", &state_dict,
           "{'weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0', 'threshold_l0', ..._l1, ...}: views into "
           "the model, as torch's state_dict (copy them to keep a snapshot). threshold_lK holds layer K's per-unit "
           "thresholds theta (torch.nn.GRU has none).")
      .def("load_state_dict", &load_state_dict, py::arg("state_dict"), py::arg("strict") = true,
           "Copies torch.nn.GRU-named arrays into the model (shapes must match; everything is checked before anything "
           "is written; pruned weights stay zero). strict=False skips missing keys and ignores unexpected ones. "
           "Returns (missing_keys, unexpected_keys).")
      .def("copy", [](const PyModel& m) { return std::make_unique<PyModel>(m); }, "An independent copy (no learners).")
      .def("__copy__", [](const PyModel& m) { return std::make_unique<PyModel>(m); })
      .def("__deepcopy__", [](const PyModel& m, py::dict) { return std::make_unique<PyModel>(m); }, py::arg("memo"))
      .def("__repr__", [](const PyModel& m) {
        std::ostringstream o;
        o << "Model(L=" << m.layers() << ", d=" << m.inputs() << ", n=[";
        for (Index k = 0; k < m.layers(); ++k) o << (k ? ", " : "") << m.units(k);
        o << "], events=[";
        for (Index k = 0; k < m.layers(); ++k) o << (k ? ", " : "") << (m.events(k) ? "True" : "False");
        o << "], dtype=" << kDtype << ")";
        return o.str();
      });

  py::class_<PyInference>(m, "Inference",
                          "Checked forward steps of a model (every layer of a stack, bottom up) for evaluation "
                          "(no influence matrix). References the model (kept alive); reads its current "
                          "parameters at every step. output()/events()/state() are the top layer's; pass "
                          "layer=k for layer k.")
      .def(py::init([](const PyModel& model, bool event_sparse) {
             return std::make_unique<PyInference>(model, InferenceOptions{event_sparse});
           }),
           py::arg("model"), py::arg("event_sparse") = true, py::keep_alive<1, 2>())
      .def(
          "step",
          [](PyInference& i, const py::object& arg) {
            const VecIn x = vec(arg, "Inference.step()", "x");
            const ObjectGuard guard(&i, "Inference.step()", "Inference");
            py::gil_scoped_release nogil;
            i.step(x);
          },
          py::arg("x"))
      .def("reset", [](PyInference& i, const py::object& arg) {
             const auto c0 = opt_vec(arg, "Inference.reset()", "c0");
             c0 ? i.reset(*c0) : i.reset();
           },
           py::arg("c0") = py::none(), "Restart from c_0 = 0, or from c0 (one-layer models only).")
      .def("output", [](const PyInference& i, Index layer) { return Vector(i.output(top(i, layer))); },
           py::arg("layer") = -1, "y_t of the top layer, or of layer `layer` (a copy).")
      .def("events", [](const PyInference& i, Index layer) { return Vector(i.events(top(i, layer))); },
           py::arg("layer") = -1)
      .def("state", [](const PyInference& i, Index layer) { return Vector(i.state(top(i, layer))); },
           py::arg("layer") = -1)
      .def("output_derivative",
           [](const PyInference& i, Index layer) { return Vector(i.output_derivative(top(i, layer))); },
           py::arg("layer") = -1)
      .def_property_readonly("steps", &PyInference::steps)
      .def_property_readonly("layers", &PyInference::layers)
      .def("units", [](const PyInference& i, Index layer) { return i.units(top(i, layer)); }, py::arg("layer") = -1)
      .def_property_readonly("inputs", &PyInference::inputs);

  // The typed methods of the common ParameterMask (module.cpp): overloads per dtype.
  auto mask = py::reinterpret_borrow<py::class_<ParameterMask>>(core.attr("ParameterMask"));
  mask.def_static("from_magnitude", &ParameterMask::from_magnitude<Scalar>, py::arg("params"), py::arg("density_W"),
                  py::arg("density_R"), py::arg("sharing") = MaskSharing::independent)
      .def("apply", &ParameterMask::apply<Scalar>, py::arg("params"), "Zeroes the masked entries of params.")
      .def("respected_by", &ParameterMask::respected_by<Scalar>, py::arg("params"));
}

}  // namespace sparse_rtrl::python::SPARSE_RTRL_PY_NS
