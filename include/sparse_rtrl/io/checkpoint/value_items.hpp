/// @file io/checkpoint/value_items.hpp
/// @brief A run's own values: numbers (0-D), std::vectors of numbers (1-D), Eigen matrices and
///        arrays, WorkCounters; each under its name, as numpy.save would store it.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint/entries.hpp>
#include <sparse_rtrl/io/checkpoint/item.hpp>
#include <sparse_rtrl/learners/work_counters.hpp>
#include <Eigen/Core>

#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace sparse_rtrl {
namespace detail {

template <typename T>
class ValueItem : public CheckpointItem {
 public:
  ValueItem(std::string name, T& value) : CheckpointItem(std::move(name)), value_(&value) {}
  void save(io::NpzWriter& w) const override { w.add_scalar(name(), *value_); }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    const T v = r.read_scalar<T>(name());
    T* target = value_;
    return io::make_staged([target, v]() { *target = v; });
  }

 private:
  T* value_;
};

template <typename T>
class VectorItem : public CheckpointItem {
 public:
  VectorItem(std::string name, std::vector<T>& v) : CheckpointItem(std::move(name)), v_(&v) {}
  void save(io::NpzWriter& w) const override { w.add_values(name(), v_->data(), v_->size()); }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    auto st = std::make_shared<std::vector<T>>(v_->size());
    Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>> m(st->data(), Index(st->size()));
    r.read_into(name(), m);
    std::vector<T>* target = v_;
    return io::make_staged([target, st]() { target->swap(*st); });
  }

 private:
  std::vector<T>* v_;
};

template <typename Derived>
class EigenItem : public CheckpointItem {
 public:
  EigenItem(std::string name, Derived& m) : CheckpointItem(std::move(name)), m_(&m) {}
  void save(io::NpzWriter& w) const override { w.add(name(), *m_); }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    auto st = std::make_shared<Derived>(*m_);  // the live shape
    r.read_into(name(), *st);
    Derived* target = m_;
    return io::make_staged([target, st]() { target->swap(*st); });
  }

 private:
  Derived* m_;
};

class WorkItem : public CheckpointItem {
 public:
  WorkItem(std::string name, WorkCounters& w) : CheckpointItem(std::move(name)), w_(&w) {}
  void save(io::NpzWriter& w) const override { save_work(w, name(), *w_); }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    const WorkCounters v = read_work(r, name());
    WorkCounters* target = w_;
    return io::make_staged([target, v]() { *target = v; });
  }

 private:
  WorkCounters* w_;
};

/// Matches every Eigen::Matrix and Eigen::Array (and other classes derived from
/// PlainObjectBase), as an overload add(name, Eigen::PlainObjectBase<Derived>&) would.
template <typename Derived>
std::true_type is_plain_eigen_test(const Eigen::PlainObjectBase<Derived>*);
std::false_type is_plain_eigen_test(...);
template <typename T>
using is_plain_eigen = decltype(is_plain_eigen_test(std::declval<T*>()));

}  // namespace detail

namespace io {

/// A number (bool, integers, float, double): a 0-D array.
template <typename T>
struct CheckpointTraits<T, std::enable_if_t<std::is_arithmetic<T>::value>> {
  using Item = detail::ValueItem<T>;
};

/// A std::vector of numbers (not bool): a 1-D array; loading needs the saved length.
template <typename T>
struct CheckpointTraits<std::vector<T>, std::enable_if_t<std::is_arithmetic<T>::value && !std::is_same<T, bool>::value>> {
  using Item = detail::VectorItem<T>;
};

/// An Eigen matrix or array (vectors 1-D, others 2-D); loading needs the saved shape.
template <typename T>
struct CheckpointTraits<T, std::enable_if_t<detail::is_plain_eigen<T>::value>> {
  using Item = detail::EigenItem<T>;
};

template <>
struct CheckpointTraits<WorkCounters> {
  using Item = detail::WorkItem;
};

}  // namespace io
}  // namespace sparse_rtrl
