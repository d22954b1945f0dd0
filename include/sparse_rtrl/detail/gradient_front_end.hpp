/// @file detail/gradient_front_end.hpp
/// @brief The four gradient() overloads of the learners that combine the gradients of several
///        Rtrl (RtrlStreams, mpi::ShardedRtrl, mpi::ShardedRtrlStreams, mpi::StreamGrid),
///        written once as a CRTP base.
///
/// The derived learner provides gradient_columns() (its combined gradient per influence column:
/// a sum over streams, a gather over ranks, or both; collective where the learner is),
/// layers(), layout(k), column_offset(k) and `static constexpr const char* name`. The base puts
/// a layer's columns into parameter layout. Every overload asks gradient_columns() first, so
/// the collective calls are the same on every rank whatever the overload.
#pragma once
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#error "sparse_rtrl/detail/* is internal: include <sparse_rtrl/sparse_rtrl.hpp> instead."
#endif

#include <sparse_rtrl/model/egru_parameters.hpp>
#include <sparse_rtrl/model/influence_layout.hpp>

#include <stdexcept>
#include <string>

namespace sparse_rtrl {
namespace detail {

template <typename Derived, typename Scalar>
class GradientFrontEnd {
 public:
  using Parameters = EgruParameters<Scalar>;

  /// The combined gradient of a one-layer model, in parameter layout (pruned entries zero).
  /// A stack throws std::logic_error: ask gradient(k) per layer.
  Parameters gradient() {
    Parameters out;
    gradient(out);
    return out;
  }
  /// Allocation-free form: writes into @p out (reshaped only when its shapes differ).
  void gradient(Parameters& out) {
    const Index layers = derived().layers();
    if (layers != 1)
      throw std::logic_error(std::string(Derived::name) + "::gradient(): the model is a stack of " +
                             std::to_string(layers) + " layers: pass the layer (gradient(k))");
    gradient(Index(0), out);
  }
  /// The combined gradient of layer k's parameters.
  Parameters gradient(Index layer) {
    Parameters out;
    gradient(layer, out);
    return out;
  }
  void gradient(Index layer, Parameters& out) {
    const auto& columns = derived().gradient_columns();
    const InfluenceLayout& l = derived().layout(layer);
    l.scatter(columns.segment(derived().column_offset(layer), l.columns()), out);
  }

 protected:
  GradientFrontEnd() = default;

 private:
  Derived& derived() { return static_cast<Derived&>(*this); }
};

}  // namespace detail
}  // namespace sparse_rtrl
