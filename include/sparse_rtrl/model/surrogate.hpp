/// @file surrogate.hpp
/// @brief Pseudo-derivatives of the Heaviside event function (model.md, "Pseudo-derivative").
///
/// A surrogate policy is any copyable type with
///   `using scalar_type = Scalar;`
///   `Scalar pseudo_derivative(Scalar v) const;`  // dH/dv used by every gradient algorithm
///   `Scalar half_width() const;`                 // psi(v) == 0 for |v| >= half_width()
/// BPTT, RTRL and SnAp all call the same policy, so they agree to rounding error.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>

#include <cmath>
#include <sstream>
#include <type_traits>
#include <utility>

namespace sparse_rtrl {

/// @brief Triangular surrogate psi(v) = gamma * max(0, 1 - |v| / eps) (EGRU paper, Eq. 8).
/// @tparam Scalar float or double.
///
/// The half-width eps decides how many influence rows exact RTRL may skip: a silent unit is
/// skippable only when |c - theta| >= eps (model.md, "The surrogate's width ...").
template <typename Scalar>
class TriangularSurrogate {
 public:
  using scalar_type = Scalar;

  /// @param gamma height at v = 0 (>= 0, finite); default 0.7 as in EvNN.
  /// @param eps half-width of the support (> 0, finite); default 1.0.
  explicit TriangularSurrogate(Scalar gamma = Scalar(0.7), Scalar eps = Scalar(1.0))
      : gamma_(gamma), eps_(eps) {
    const char* where = "sparse_rtrl::TriangularSurrogate::TriangularSurrogate()";
    if (!(std::isfinite(gamma) && gamma >= 0)) {
      std::ostringstream s;
      s << "gamma must be finite and >= 0, received " << gamma;
      detail::fail(where, s.str());
    }
    if (!(std::isfinite(eps) && eps > 0)) {
      std::ostringstream s;
      s << "eps must be finite and > 0, received " << eps;
      detail::fail(where, s.str());
    }
  }

  Scalar pseudo_derivative(Scalar v) const {
    const Scalar t = Scalar(1) - std::abs(v) / eps_;
    return t > 0 ? gamma_ * t : Scalar(0);
  }
  Scalar half_width() const { return eps_; }
  Scalar gamma() const { return gamma_; }
  Scalar eps() const { return eps_; }

 private:
  Scalar gamma_;
  Scalar eps_;
};

namespace detail {
template <typename T, typename = void>
struct is_surrogate : std::false_type {};
template <typename T>
struct is_surrogate<
    T, std::void_t<typename T::scalar_type,
                   decltype(std::declval<const T&>().pseudo_derivative(
                       std::declval<typename T::scalar_type>())),
                   decltype(std::declval<const T&>().half_width())>>
    : std::is_convertible<decltype(std::declval<const T&>().pseudo_derivative(
                              std::declval<typename T::scalar_type>())),
                          typename T::scalar_type> {};
}  // namespace detail

#define SPARSE_RTRL_CHECK_SURROGATE(Surrogate, Scalar)                                      \
  static_assert(::sparse_rtrl::detail::is_surrogate<Surrogate>::value,                      \
                "Surrogate policy must define `using scalar_type`, "                       \
                "`scalar_type pseudo_derivative(scalar_type) const` and "                   \
                "`scalar_type half_width() const` (see sparse_rtrl/model/surrogate.hpp)");        \
  static_assert(std::is_same<typename Surrogate::scalar_type, Scalar>::value,               \
                "Surrogate::scalar_type must equal the cell's Scalar")

}  // namespace sparse_rtrl
