// One dtype's part of sparse_rtrl/io (see io.cpp for the Checkpoint class): the objects of this
// dtype a Checkpoint takes, load_model, save_torch_gru, load_torch_gru, read_torch_gru. A model's
// file holds its dtype: a float32 model writes float32 arrays, as the C++ Model<float> does.
#include <sparse_rtrl/io/torch_gru.hpp>

namespace sparse_rtrl::python::SPARSE_RTRL_PY_NS {

bool checkpoint_add(PyCheckpoint& c, const py::object& obj, const std::optional<std::string>& name) {
  if (py::isinstance<PyModel>(obj)) {
    if (name) fail("Checkpoint.add()", "the model takes no name (its entries are torch.nn.GRU's)");
    c.raw().add(obj.cast<PyModel&>());
    c.note_model(&obj.cast<PyModel&>());
    return true;
  }
  const bool ours = py::isinstance<PyRtrl>(obj) || py::isinstance<PyStreams>(obj) || py::isinstance<PySnap>(obj) ||
                    py::isinstance<PyTbptt>(obj) || py::isinstance<PyUoro>(obj) ||
                    py::isinstance<Sgd<Scalar>>(obj) || py::isinstance<Adam<Scalar>>(obj) ||
                    py::isinstance<AdamW<Scalar>>(obj) || py::isinstance<Readout>(obj);
  if (!ours) return false;
  if (!name) fail("Checkpoint.add()", "every object but the model needs a name");
  const std::string& n = *name;
  if (py::isinstance<PyRtrl>(obj)) {
    c.raw().add(n, obj.cast<PyRtrl&>());
    c.note_learner(&obj.cast<PyRtrl&>(), "Rtrl");
  } else if (py::isinstance<PyStreams>(obj)) {
    c.raw().add(n, obj.cast<PyStreams&>());
    c.note_learner(&obj.cast<PyStreams&>(), "RtrlStreams");
  } else if (py::isinstance<PySnap>(obj)) {
    c.raw().add(n, obj.cast<PySnap&>());
    c.note_learner(&obj.cast<PySnap&>(), "Snap");
  } else if (py::isinstance<PyTbptt>(obj)) {
    c.raw().add(n, obj.cast<PyTbptt&>());
    c.note_learner(&obj.cast<PyTbptt&>(), "TruncatedBptt");
  } else if (py::isinstance<PyUoro>(obj)) {
    c.raw().add(n, obj.cast<PyUoro&>());
    c.note_learner(&obj.cast<PyUoro&>(), "Uoro");
  } else if (py::isinstance<Sgd<Scalar>>(obj)) {
    c.raw().add(n, obj.cast<Sgd<Scalar>&>());
  } else if (py::isinstance<Adam<Scalar>>(obj)) {
    c.raw().add(n, obj.cast<Adam<Scalar>&>());
  } else if (py::isinstance<AdamW<Scalar>>(obj)) {
    c.raw().add(n, obj.cast<AdamW<Scalar>&>());
  } else {
    c.raw().add(n, obj.cast<Readout&>());
  }
  return true;
}

void bind_io_typed(py::module_& /*core*/, py::module_& m) {
  m.def(
      "load_model",
      [](const std::string& path) {
        std::unique_ptr<PyModel> model;
        PyCheckpoint::os_errors([&] { model = std::make_unique<PyModel>(io::load_model<Scalar, Surrogate>(path)); });
        return model;
      },
      py::arg("path"),
      "A new Model (layers, masks, modes, surrogates) built from a checkpoint's model entries (files of this dtype). "
      "Releases the GIL.");
  m.def(
      "save_torch_gru",
      [](const std::string& path, const PyModel& model, bool sync) {
        PyCheckpoint::os_errors([&] { io::save_torch_gru(path, model, io::NpzWriterOptions{false, sync}); });
      },
      py::arg("path"), py::arg("model"), py::kw_only(), py::arg("sync") = true,
      "Writes the model's torch.nn.GRU tensors only (weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}, "
      "the model's dtype): {k: torch.from_numpy(v) for k, v in numpy.load(path).items()} loads strictly into a "
      "torch.nn.GRU of the same sizes and dtype. Atomic; releases the GIL.");
  m.def(
      "load_torch_gru",
      [](const std::string& path, PyModel& model) {
        PyCheckpoint::os_errors([&] { io::load_torch_gru(path, model); });
      },
      py::arg("path"), py::arg("model"),
      "Loads a torch.nn.GRU state_dict saved with numpy.savez (float32 or float64) into the model's parameters "
      "(sizes must match; thresholds, masks and modes are kept; weights the masks prune become zero). Raises "
      "ValueError and changes nothing on a bad file. Releases the GIL.");
  m.def(
      "read_torch_gru",
      [](const std::string& path) {
        std::vector<Params> layers;
        PyCheckpoint::os_errors([&] { layers = io::read_torch_gru<Scalar>(path); });
        return layers;
      },
      py::arg("path"), "The EgruParameters of every layer of a torch.nn.GRU .npz file (thresholds zero).");
}

}  // namespace sparse_rtrl::python::SPARSE_RTRL_PY_NS
