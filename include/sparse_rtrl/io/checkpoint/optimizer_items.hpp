/// @file io/checkpoint/optimizer_items.hpp
/// @brief Sgd's, Adam's and AdamW's entries: options, step count and moments per tensor.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint/entries.hpp>
#include <sparse_rtrl/io/checkpoint/item.hpp>
#include <sparse_rtrl/training/optimizer.hpp>

#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace sparse_rtrl {
namespace detail {

/// The entry names of an optimizer's tensors for a parameter set code (1 Egru, 2 Readout).
inline std::vector<std::pair<std::string, bool>> optimizer_tensors(std::int64_t set) {
  if (set == 1) return {{"W", true}, {"R", true}, {"bW", false}, {"bR", false}, {"theta", false}};
  if (set == 2) return {{"V", true}, {"b", false}};
  return {};
}

template <typename S, typename Optimizer>
void save_optimizer_state(io::NpzWriter& w, const std::string& p, const Optimizer& opt, const char* first_name,
                          const char* second_name) {
  const std::string set = opt.parameter_set();
  const std::int64_t code = set.empty() ? 0 : (set == "EgruParameters" ? 1 : 2);
  w.add_scalar(p + "/steps", std::int64_t(opt.steps()));
  w.add_scalar(p + "/parameter_set", code);
  const auto tensors = optimizer_tensors(code);
  for (std::size_t k = 0; k < tensors.size(); ++k) {
    const auto save_moment = [&](const std::string& which, const auto& m) {
      const std::string name = p + "/" + which + "/" + tensors[k].first;
      if (tensors[k].second)
        w.add(name, m);
      else
        w.add(name, Eigen::Matrix<S, Eigen::Dynamic, 1>(Eigen::Map<const Eigen::Matrix<S, Eigen::Dynamic, 1>>(
                        m.data(), m.size())));
    };
    if constexpr (std::is_same<Optimizer, Sgd<S>>::value) {
      save_moment(first_name, opt.velocity(Index(k)));
      (void)second_name;
    } else {
      save_moment(first_name, opt.first_moment(Index(k)));
      save_moment(second_name, opt.second_moment(Index(k)));
    }
  }
}

/// Reads moments saved by save_optimizer_state() into @p staged (a new optimizer object).
template <typename S, typename Optimizer>
void load_optimizer_state(io::NpzReader& r, const std::string& p, Optimizer& staged, const char* first_name,
                          const char* second_name) {
  using Matrix = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic>;
  const std::int64_t steps = read_count(r, p + "/steps", 0, sparse_rtrl::detail::kMaxStepCount);
  const std::int64_t code = read_count(r, p + "/parameter_set", 0, 2);
  std::vector<Matrix> first, second;
  for (const auto& t : optimizer_tensors(code)) {
    for (const char* which : {first_name, second_name}) {
      if (!which) continue;
      const std::string name = p + "/" + which + "/" + t.first;
      const io::ArrayInfo& info = r.info(name);
      const std::size_t ndim = t.second ? 2 : 1;
      if (info.dtype != io::dtype_of<S>::value || info.shape.size() != ndim)
        r.fail("entry '" + name + "': expected a " + std::to_string(ndim) + "-D array of " +
               io::dtype_descr(io::dtype_of<S>::value) + ", found " + info.describe());
      const Index rows = Index(info.shape[0]), cols = ndim == 2 ? Index(info.shape[1]) : 1;
      Matrix m(rows, cols);
      if (ndim == 2) {
        r.read_into(name, m);
      } else {
        Eigen::Matrix<S, Eigen::Dynamic, 1> v(rows);
        r.read_into(name, v);
        m = v;
      }
      require_finite_entry(r, name, m);
      (which == first_name ? first : second).push_back(std::move(m));
    }
  }
  const std::string set = code == 0 ? "" : (code == 1 ? "EgruParameters" : "ReadoutParameters");
  try {
    staged.restore_state(set, first, second, Index(steps));
  } catch (const std::invalid_argument& e) {
    r.fail("optimizer '" + p + "': " + e.what());
  }
}

template <typename S>
class SgdItem : public CheckpointItem {
 public:
  SgdItem(std::string name, Sgd<S>& opt) : CheckpointItem(std::move(name)), opt_(&opt) {}
  void save(io::NpzWriter& w) const override {
    const std::string& p = name();
    const auto& o = opt_->options();
    w.add_scalar(p + "/type", std::int64_t(1));
    w.add_scalar(p + "/learning_rate", o.learning_rate);
    w.add_scalar(p + "/momentum", o.momentum);
    w.add_scalar(p + "/nesterov", o.nesterov);
    w.add_scalar(p + "/weight_decay", o.weight_decay);
    save_optimizer_state<S>(w, p, *opt_, "velocity", nullptr);
  }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    const std::string& p = name();
    read_expected(r, p + "/type", 1, "Sgd; 2 is Adam, 3 AdamW");
    SgdOptions<S> o;
    o.learning_rate = r.read_scalar<S>(p + "/learning_rate");
    o.momentum = r.read_scalar<S>(p + "/momentum");
    o.nesterov = r.read_scalar<bool>(p + "/nesterov");
    o.weight_decay = r.read_scalar<S>(p + "/weight_decay");
    auto st = std::make_shared<Sgd<S>>(construct(r, o));
    load_optimizer_state<S>(r, p, *st, "velocity", nullptr);
    Sgd<S>* opt = opt_;
    return io::make_staged([opt, st]() { *opt = std::move(*st); });
  }

 private:
  Sgd<S> construct(io::NpzReader& r, const SgdOptions<S>& o) const {
    try {
      return Sgd<S>(o);
    } catch (const std::invalid_argument& e) {
      r.fail("optimizer '" + name() + "': " + e.what());
    }
  }
  Sgd<S>* opt_;
};

template <typename S, bool Decoupled>
class AdamItem : public CheckpointItem {
 public:
  using Opt = AdamType<S, Decoupled>;
  AdamItem(std::string name, Opt& opt) : CheckpointItem(std::move(name)), opt_(&opt) {}
  void save(io::NpzWriter& w) const override {
    const std::string& p = name();
    const auto& o = opt_->options();
    w.add_scalar(p + "/type", std::int64_t(Decoupled ? 3 : 2));
    w.add_scalar(p + "/learning_rate", o.learning_rate);
    w.add_scalar(p + "/beta1", o.beta1);
    w.add_scalar(p + "/beta2", o.beta2);
    w.add_scalar(p + "/eps", o.eps);
    w.add_scalar(p + "/weight_decay", o.weight_decay);
    save_optimizer_state<S>(w, p, *opt_, "first_moment", "second_moment");
  }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    const std::string& p = name();
    read_expected(r, p + "/type", Decoupled ? 3 : 2, Decoupled ? "AdamW; 1 is Sgd, 2 Adam" : "Adam; 1 is Sgd, 3 AdamW");
    typename Opt::Options o;
    o.learning_rate = r.read_scalar<S>(p + "/learning_rate");
    o.beta1 = r.read_scalar<S>(p + "/beta1");
    o.beta2 = r.read_scalar<S>(p + "/beta2");
    o.eps = r.read_scalar<S>(p + "/eps");
    o.weight_decay = r.read_scalar<S>(p + "/weight_decay");
    auto st = std::make_shared<Opt>(construct(r, o));
    load_optimizer_state<S>(r, p, *st, "first_moment", "second_moment");
    Opt* opt = opt_;
    return io::make_staged([opt, st]() { *opt = std::move(*st); });
  }

 private:
  Opt construct(io::NpzReader& r, const typename Opt::Options& o) const {
    try {
      return Opt(o);
    } catch (const std::invalid_argument& e) {
      r.fail("optimizer '" + name() + "': " + e.what());
    }
  }
  Opt* opt_;
};

}  // namespace detail

namespace io {

template <typename S>
struct CheckpointTraits<Sgd<S>> {
  using Item = detail::SgdItem<S>;
};

/// Adam and AdamW.
template <typename S, bool Decoupled>
struct CheckpointTraits<AdamType<S, Decoupled>> {
  using Item = detail::AdamItem<S, Decoupled>;
};

}  // namespace io
}  // namespace sparse_rtrl
