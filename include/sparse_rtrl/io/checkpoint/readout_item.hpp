/// @file io/checkpoint/readout_item.hpp
/// @brief LinearReadout's entries (torch.nn.Linear's names): weight, bias and their gradients.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint/entries.hpp>
#include <sparse_rtrl/io/checkpoint/item.hpp>
#include <sparse_rtrl/training/readout.hpp>

#include <memory>
#include <string>
#include <utility>

namespace sparse_rtrl {
namespace detail {

template <typename S>
class ReadoutItem : public CheckpointItem {
 public:
  ReadoutItem(std::string name, LinearReadout<S>& readout) : CheckpointItem(std::move(name)), readout_(&readout) {}
  void save(io::NpzWriter& w) const override {
    const std::string& p = name();
    w.add(p + "/weight", readout_->parameters().V);
    w.add(p + "/bias", readout_->parameters().b);
    w.add(p + "/weight_grad", readout_->gradient().V);
    w.add(p + "/bias_grad", readout_->gradient().b);
  }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    const std::string& p = name();
    auto params = std::make_shared<ReadoutParameters<S>>(readout_->outputs(), readout_->units());
    auto grad = std::make_shared<ReadoutParameters<S>>(readout_->outputs(), readout_->units());
    r.read_into(p + "/weight", params->V);
    r.read_into(p + "/bias", params->b);
    r.read_into(p + "/weight_grad", grad->V);
    r.read_into(p + "/bias_grad", grad->b);
    require_finite_entry(r, p + "/weight", params->V);
    require_finite_entry(r, p + "/bias", params->b);
    LinearReadout<S>* readout = readout_;
    return io::make_staged([readout, params, grad]() {
      readout->parameters() = std::move(*params);
      readout->gradient() = std::move(*grad);
    });
  }

 private:
  LinearReadout<S>* readout_;
};

}  // namespace detail

namespace io {

template <typename S>
struct CheckpointTraits<LinearReadout<S>> {
  using Item = detail::ReadoutItem<S>;
};

}  // namespace io
}  // namespace sparse_rtrl
