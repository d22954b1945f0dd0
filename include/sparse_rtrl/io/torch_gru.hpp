/// @file io/torch_gru.hpp
/// @brief Weights to and from torch.nn.GRU(num_layers = L), through NumPy's .npz.
///
/// PyTorch side (the two snippets of README.md, "Checkpoints and PyTorch"):
///
///     numpy.savez(path, **{k: v.numpy() for k, v in gru.state_dict().items()})          # torch -> file
///     gru.load_state_dict({k: torch.from_numpy(v) for k, v in numpy.load(path).items()})  # file -> torch
///
/// The state_dict of torch.nn.GRU(input_size = d, hidden_size = n, num_layers = L) holds, per
/// layer k, weight_ih_l{k} (3n, d_k), weight_hh_l{k} (3n, n), bias_ih_l{k} and bias_hh_l{k}
/// (3n), gate order r, z, n (our r, z, g): exactly EgruParameters' W, R, bW, bR (model.md), so
/// nothing is reordered. In GRU mode (CellOptions{false}) the model computes what torch computes;
/// in events mode the same weights drive an EGRU (thresholds are ours to choose).
///
/// Not supported, refused with a message: bidirectional GRUs (*_reverse entries), GRUs without
/// biases (bias=False), compressed files (numpy.savez_compressed). float32 and float64 files
/// load into float and double models (float64 into float rounds to nearest).
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint.hpp>
#include <sparse_rtrl/io/npz.hpp>
#include <sparse_rtrl/model/egru_parameters.hpp>
#include <sparse_rtrl/model/model.hpp>

#include <Eigen/Core>

#include <string>
#include <vector>

namespace sparse_rtrl {
namespace io {

/// @brief Writes the model's torch.nn.GRU tensors only (4 per layer, the model's dtype), so the
/// plain load_state_dict snippet loads them (strict) into a torch.nn.GRU of the same sizes
/// (float64: gru.double() first). Thresholds, masks and modes are not written (a checkpoint
/// has them). Atomic, like every write of this library.
template <typename S, typename Sur>
void save_torch_gru(const std::string& path, const Model<S, Sur>& model, NpzWriterOptions options = {}) {
  NpzWriter w(path, options, "sparse_rtrl::io::save_torch_gru()");
  for (Index k = 0; k < model.layers(); ++k) {
    const std::string s = detail::layer_suffix(k);
    const auto& p = model.parameters(k);
    w.add("weight_ih" + s, p.W);
    w.add("weight_hh" + s, p.R);
    w.add("bias_ih" + s, p.bW);
    w.add("bias_hh" + s, p.bR);
  }
  w.commit();
}

namespace detail_torch {

/// A float32 or float64 array of the given shape, converted to S.
template <typename S>
Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic> read_float(NpzReader& r, const std::string& name,
                                                            const std::vector<std::uint64_t>& shape) {
  const ArrayInfo& info = r.info(name);
  if ((info.dtype != Dtype::float32 && info.dtype != Dtype::float64) || info.shape != shape) {
    r.fail("entry '" + name + "': expected float32 or float64 of shape " + ArrayInfo::shape_string(shape) +
           ", found " + info.describe());
  }
  const Index rows = Index(shape[0]), cols = shape.size() == 2 ? Index(shape[1]) : 1;
  auto read = [&](auto tag) {
    using T = decltype(tag);
    Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> m(rows, cols);
    if (shape.size() == 2) {
      r.read_into(name, m);
    } else {
      Eigen::Matrix<T, Eigen::Dynamic, 1> v(rows);
      r.read_into(name, v);
      m = v;
    }
    detail::require_finite_entry(r, name, m);
    return Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>(m.template cast<S>());
  };
  return info.dtype == Dtype::float32 ? read(float()) : read(double());
}

}  // namespace detail_torch

/// @brief The layers of a torch.nn.GRU state_dict saved with numpy.savez, in our layout, with
/// thresholds 0 (choose your own for events mode). Build a model from them, e.g.
///     std::vector<EgruCell<float>> cells;
///     for (auto& p : io::read_torch_gru<float>(path)) cells.emplace_back(p, CellOptions{false});
///     Model<float> model(cells);
/// Throws std::invalid_argument naming the entry for files that are not such a state_dict.
template <typename S>
std::vector<EgruParameters<S>> read_torch_gru(const std::string& path) {
  NpzReader r(path, "sparse_rtrl::io::read_torch_gru()");
  for (const std::string& name : r.names())
    if (name.size() > 8 && name.compare(name.size() - 8, 8, "_reverse") == 0)
      r.fail("entry '" + name + "': a bidirectional GRU; only unidirectional ones are supported");
  if (!r.contains("weight_ih_l0"))
    r.fail("entry 'weight_ih_l0' is missing: not the state_dict of a torch.nn.GRU");
  std::vector<EgruParameters<S>> layers;
  for (Index k = 0; r.contains("weight_ih" + detail::layer_suffix(k)); ++k) {
    const std::string s = detail::layer_suffix(k);
    const std::string hh = "weight_hh" + s;
    if (!r.contains(hh)) r.fail("entry '" + hh + "' is missing (weight_ih" + s + " is there)");
    const ArrayInfo& info = r.info(hh);
    if (info.shape.size() != 2 || info.shape[1] == 0 || info.shape[0] != 3 * info.shape[1] ||
        info.shape[1] > (std::uint64_t(1) << 31))
      r.fail("entry '" + hh + "': expected the (3n, n) hidden weights of a GRU, found shape " +
             ArrayInfo::shape_string(info.shape) + " (an LSTM has 4n rows, a vanilla RNN n)");
    const Index n = Index(info.shape[1]);
    const ArrayInfo& ih_info = r.info("weight_ih" + s);
    if (ih_info.shape.size() != 2 || ih_info.shape[1] == 0 || ih_info.shape[1] > (std::uint64_t(1) << 31))
      r.fail("entry 'weight_ih" + s + "': expected shape (3n, d), found " + ArrayInfo::shape_string(ih_info.shape));
    const Index d = k == 0 ? Index(ih_info.shape[1]) : layers.back().units();
    for (const char* b : {"bias_ih", "bias_hh"})
      if (!r.contains(b + s))
        r.fail("entry '" + std::string(b) + s +
               "' is missing: GRUs without biases (bias=False) are not supported (save zeros instead)");
    EgruParameters<S> p(n, d);
    p.W = detail_torch::read_float<S>(r, "weight_ih" + s, {std::uint64_t(3 * n), std::uint64_t(d)});
    p.R = detail_torch::read_float<S>(r, hh, {std::uint64_t(3 * n), std::uint64_t(n)});
    p.bW = detail_torch::read_float<S>(r, "bias_ih" + s, {std::uint64_t(3 * n)});
    p.bR = detail_torch::read_float<S>(r, "bias_hh" + s, {std::uint64_t(3 * n)});
    layers.push_back(std::move(p));
  }
  for (const std::string& name : r.names())
    if (name.compare(0, 7, "weight_") == 0 || name.compare(0, 5, "bias_") == 0) {
      const std::size_t l = name.rfind("_l");
      const std::string digits = l == std::string::npos ? "" : name.substr(l + 2);
      if (!digits.empty() && digits.find_first_not_of("0123456789") == std::string::npos &&
          std::stoull(digits.substr(0, 9)) >= layers.size())
        r.fail("entry '" + name + "' belongs to layer " + digits + ", but weight_ih_l" + std::to_string(layers.size()) +
               " is missing");
    }
  r.verify_all();
  return layers;
}

/// @brief Loads a torch.nn.GRU state_dict (saved with numpy.savez) into @p model's weights and
/// biases: the file must have the model's layers and sizes. Thresholds, masks, modes and the
/// surrogate are kept; weights the model's masks prune become zero. All or nothing: any error
/// throws std::invalid_argument and leaves the model unchanged.
template <typename S, typename Sur>
void load_torch_gru(const std::string& path, Model<S, Sur>& model) {
  std::vector<EgruParameters<S>> layers = read_torch_gru<S>(path);
  const std::string where = "sparse_rtrl::io::load_torch_gru(): " + detail::printable(path) + ": ";
  if (Index(layers.size()) != model.layers())
    throw std::invalid_argument(where + "the file has " + std::to_string(layers.size()) + " layers, the model " +
                                std::to_string(model.layers()));
  for (Index k = 0; k < model.layers(); ++k)
    if (!layers[std::size_t(k)].has_shape(model.units(k), model.cell(k).inputs()))
      throw std::invalid_argument(where + "layer " + std::to_string(k) + ": the file has hidden size " +
                                  std::to_string(layers[std::size_t(k)].units()) + " and input size " +
                                  std::to_string(layers[std::size_t(k)].inputs()) + ", the model n = " +
                                  std::to_string(model.units(k)) + ", d = " + std::to_string(model.cell(k).inputs()));
  for (Index k = 0; k < model.layers(); ++k) {  // same shapes: plain copies, nothing can fail
    auto& p = model.parameters(k);
    const auto& q = layers[std::size_t(k)];
    p.W = q.W;
    p.R = q.R;
    p.bW = q.bW;
    p.bR = q.bR;
  }
  model.enforce_mask();
}

}  // namespace io
}  // namespace sparse_rtrl
