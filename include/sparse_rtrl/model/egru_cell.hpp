/// @file egru_cell.hpp
/// @brief The EGRU cell: one forward step and the local derivatives every gradient algorithm
///        shares (model.md, "One step"; Subramoney et al. 2023, Eqs. 1-6).
///
/// From c_{t-1}:  o = H(c_{t-1} - theta), y = o c_{t-1}, h = c_{t-1} - o theta,
///   r = sigmoid(W_r x + bW_r + R_r y + bR_r), z = sigmoid(W_z x + bW_z + R_z y + bR_z),
///   g = tanh(W_g x + bW_g + r (R_g y + bR_g)),  c_t = z h + (1 - z) g.
/// GRU mode (events off) sets o = 1, y = h = c: then the cell is torch.nn.GRU exactly.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/model/egru_parameters.hpp>
#include <sparse_rtrl/model/surrogate.hpp>

#include <Eigen/Core>

#include <cmath>
#include <string>
#include <utility>

namespace sparse_rtrl {

/// @brief Everything one step computes, kept for the gradient algorithms.
///
/// "prev" quantities are functions of c_{t-1}; the rest of step t. Preallocated by resize(), so
/// EgruCell::forward() allocates nothing (it refuses a cache of other sizes).
template <typename Scalar>
struct EgruStepCache {
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

  Vector x;         ///< d, the input x_t
  Vector c_prev;    ///< n, c_{t-1}
  Vector o_prev;    ///< n, events H(c_{t-1} - theta) (all ones in GRU mode)
  Vector y_prev;    ///< n, o_{t-1} c_{t-1}
  Vector h_prev;    ///< n, c_{t-1} - o_{t-1} theta
  Vector psi_prev;  ///< n, surrogate psi(c_{t-1} - theta) (zero in GRU mode)
  Vector s_prev;    ///< n, dy_{t-1}/dc_{t-1} = o + c psi (ones in GRU mode)
  Vector a;         ///< 3n, W x + bW
  Vector q;         ///< 3n, R y_{t-1} + bR
  Vector r, z, g;   ///< n each, gates
  Vector c;         ///< n, c_t
  Vector o, y, psi, s;  ///< n each, the same event quantities for c_t
  Vector dc_da;     ///< 3n, dc_t/da at fixed c_{t-1}: (dr, dz, dg) per gate block
  Vector dc_dq;     ///< 3n, dc_t/dq at fixed c_{t-1}: (dr, dz, dg * r)
  Vector decay;     ///< n, diagonal of J_t: z (1 - theta psi_{t-1})

  void resize(Index n, Index d) {
    x.resize(d);
    for (Vector* v : {&c_prev, &o_prev, &y_prev, &h_prev, &psi_prev, &s_prev, &r, &z, &g, &c, &o,
                      &y, &psi, &s, &decay})
      v->resize(n);
    for (Vector* v : {&a, &q, &dc_da, &dc_dq}) v->resize(3 * n);
  }

  /// Zeroes every field (keeps the sizes).
  void set_zero() {
    for (Vector* v : {&x, &c_prev, &o_prev, &y_prev, &h_prev, &psi_prev, &s_prev, &a, &q, &r, &z, &g, &c, &o,
                      &y, &psi, &s, &dc_da, &dc_dq, &decay})
      v->setZero();
  }
};

/// @brief Cell construction options.
struct CellOptions {
  bool events = true;  ///< false: GRU mode (o = 1, y = h = c), i.e. torch.nn.GRU
};

/// @brief The event-based GRU cell.
/// @tparam Scalar float or double.
/// @tparam Surrogate pseudo-derivative policy (see surrogate.hpp for the contract).
template <typename Scalar, typename Surrogate = TriangularSurrogate<Scalar>>
class EgruCell {
  static_assert(std::is_floating_point<Scalar>::value, "EgruCell: Scalar must be float or double");
  SPARSE_RTRL_CHECK_SURROGATE(Surrogate, Scalar);

 public:
  using scalar_type = Scalar;
  using surrogate_type = Surrogate;
  using Parameters = EgruParameters<Scalar>;
  using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;
  using Cache = EgruStepCache<Scalar>;

  /// torch.nn.GRU-like random initialisation (see init_torch_like()).
  EgruCell(Index n_units, Index n_inputs, const InitOptions<Scalar>& init = {},
           CellOptions options = {}, Surrogate surrogate = Surrogate())
      : EgruCell(init_torch_like<Scalar>(n_units, n_inputs, init), options,
                 std::move(surrogate)) {}

  /// Given parameters (validated: shapes consistent, values finite).
  explicit EgruCell(Parameters parameters, CellOptions options = {},
                    Surrogate surrogate = Surrogate())
      : params_(std::move(parameters)), options_(options), surrogate_(std::move(surrogate)) {
    params_.validate("sparse_rtrl::EgruCell::EgruCell()");
  }

  Index units() const { return params_.units(); }
  Index inputs() const { return params_.inputs(); }
  bool events() const { return options_.events; }
  const Surrogate& surrogate() const { return surrogate_; }
  const Parameters& parameters() const { return params_; }
  /// Mutable access, e.g. for an optimizer. Keep shapes; values must stay finite.
  Parameters& parameters() { return params_; }

  /// @brief Takes @p other's parameter values, options and surrogate into this cell's existing
  /// storage, so pointers into its parameters (and NumPy views of them) stay valid, where a
  /// move-assignment would free them. Needs the same n and d (else std::invalid_argument and
  /// nothing changes); then it allocates nothing (a checkpoint load commits this way).
  void assign_in_place(const EgruCell& other) {
    if (!params_.has_shape(other.units(), other.inputs()) || !other.params_.has_shape(units(), inputs()))
      detail::fail("sparse_rtrl::EgruCell::assign_in_place()",
                   "shapes must agree, received this: " + params_.shape_string() + " and other: " +
                       other.params_.shape_string());
    // Same sizes: Eigen's assignment copies into the existing buffers.
    params_.W = other.params_.W;
    params_.R = other.params_.R;
    params_.bW = other.params_.bW;
    params_.bR = other.params_.bR;
    params_.theta = other.params_.theta;
    options_ = other.options_;
    surrogate_ = other.surrogate_;
  }

  /// Event quantities of a state c: o = H(c - theta), y = o c, psi, s = o + c psi.
  /// In GRU mode o = s = 1, y = c, psi = 0.
  template <typename C, typename O, typename Y, typename P, typename S>
  void event_quantities(const Eigen::MatrixBase<C>& c, Eigen::MatrixBase<O>& o,
                        Eigen::MatrixBase<Y>& y, Eigen::MatrixBase<P>& psi,
                        Eigen::MatrixBase<S>& s) const {
    const Index n = units();
    for (Index i = 0; i < n; ++i) {
      const Scalar ci = c(i);
      if (options_.events) {
        const Scalar v = ci - params_.theta(i);
        const Scalar oi = v > 0 ? Scalar(1) : Scalar(0);  // H(0) = 0
        const Scalar pi = surrogate_.pseudo_derivative(v);
        o(i) = oi;
        y(i) = oi * ci;
        psi(i) = pi;
        s(i) = oi + ci * pi;
      } else {
        o(i) = Scalar(1);
        y(i) = ci;
        psi(i) = Scalar(0);
        s(i) = Scalar(1);
      }
    }
  }

  /// @brief One step from c_prev (size n) with input x (size d), row or column vectors.
  /// Fills @p cache, which must have been resize()d to this cell's sizes; allocates nothing.
  /// Sizes are checked (O(1): c_prev, x, every field of the cache, the parameters' five
  /// shapes), throwing std::invalid_argument; values are not (the learners check that x is
  /// finite, and Inference does too). For evaluation without learning use Inference.
  /// @param event_sparse compute R y_{t-1} from the columns of units with events only (the
  ///        same value; the EGRU's forward saving). Off: one dense matrix-vector product.
  template <typename CP, typename X>
  void forward(const Eigen::MatrixBase<CP>& c_prev, const Eigen::MatrixBase<X>& x,
               Cache& cache, bool event_sparse = false) const {
    const Index n = units();
    const Index d = inputs();
    require_forward_sizes(c_prev, x, cache);
    for (Index k = 0; k < d; ++k) cache.x(k) = x(k);
    for (Index i = 0; i < n; ++i) cache.c_prev(i) = c_prev(i);
    event_quantities(cache.c_prev, cache.o_prev, cache.y_prev, cache.psi_prev, cache.s_prev);
    if (options_.events)
      cache.h_prev.array() = cache.c_prev.array() - cache.o_prev.array() * params_.theta.array();
    else
      cache.h_prev = cache.c_prev;

    cache.a.noalias() = params_.W * cache.x;
    cache.a += params_.bW;
    // Column by column in both modes: skipping a column with y_j = 0 only skips adding exact
    // zeros, so the event-sparse and the dense product are bitwise identical and every learner
    // sees the same forward pass.
    const bool skip = event_sparse && options_.events;
    cache.q = params_.bR;
    for (Index j = 0; j < n; ++j)
      if (!skip || cache.y_prev(j) != Scalar(0)) cache.q += params_.R.col(j) * cache.y_prev(j);

    for (Index i = 0; i < n; ++i) {
      const Scalar r = sigmoid(cache.a(i) + cache.q(i));
      const Scalar z = sigmoid(cache.a(n + i) + cache.q(n + i));
      const Scalar qg = cache.q(2 * n + i);
      const Scalar g = std::tanh(cache.a(2 * n + i) + r * qg);
      const Scalar h = cache.h_prev(i);
      cache.r(i) = r;
      cache.z(i) = z;
      cache.g(i) = g;
      cache.c(i) = z * h + (Scalar(1) - z) * g;
      // Local derivatives of c_t at fixed c_{t-1} (chain rule through the gate nonlinearities).
      const Scalar dg = (Scalar(1) - z) * (Scalar(1) - g * g);  // dc/d(pre_g)
      const Scalar dz = (h - g) * z * (Scalar(1) - z);             // dc/d(pre_z)
      const Scalar dr = dg * qg * r * (Scalar(1) - r);             // dc/d(pre_r)
      cache.dc_da(i) = dr;
      cache.dc_da(n + i) = dz;
      cache.dc_da(2 * n + i) = dg;
      cache.dc_dq(i) = dr;
      cache.dc_dq(n + i) = dz;
      cache.dc_dq(2 * n + i) = dg * r;  // the reset gate multiplies q_g after the product
      // dh/dc = 1 - theta psi (the soft reset's surrogate derivative); J_t's diagonal.
      cache.decay(i) = options_.events ? z * (Scalar(1) - params_.theta(i) * cache.psi_prev(i)) : z;
    }
    event_quantities(cache.c, cache.o, cache.y, cache.psi, cache.s);
  }

  static Scalar sigmoid(Scalar v) { return Scalar(1) / (Scalar(1) + std::exp(-v)); }

 private:
  template <typename CP, typename X>
  void require_forward_sizes(const Eigen::MatrixBase<CP>& c_prev, const Eigen::MatrixBase<X>& x,
                             const Cache& cache) const {
    const char* where = "sparse_rtrl::EgruCell::forward()";
    const Index n = units();
    const Index d = inputs();
    if (!params_.has_shape(n, d))
      detail::fail(where, "the cell's parameters must be shaped for n = " + std::to_string(n) +
                              " units (R's columns) and d = " + std::to_string(d) +
                              " inputs (W's columns), received " + params_.shape_string());
    detail::require_vector(where, "x", x, d);
    detail::require_vector(where, "c_prev", c_prev, n);
    struct Field {
      const char* name;
      const Vector* v;
      Index size;
    };
    const Field fields[] = {
        {"cache.x", &cache.x, d},           {"cache.c_prev", &cache.c_prev, n},
        {"cache.o_prev", &cache.o_prev, n}, {"cache.y_prev", &cache.y_prev, n},
        {"cache.h_prev", &cache.h_prev, n}, {"cache.psi_prev", &cache.psi_prev, n},
        {"cache.s_prev", &cache.s_prev, n}, {"cache.a", &cache.a, 3 * n},
        {"cache.q", &cache.q, 3 * n},       {"cache.r", &cache.r, n},
        {"cache.z", &cache.z, n},           {"cache.g", &cache.g, n},
        {"cache.c", &cache.c, n},           {"cache.o", &cache.o, n},
        {"cache.y", &cache.y, n},           {"cache.psi", &cache.psi, n},
        {"cache.s", &cache.s, n},           {"cache.dc_da", &cache.dc_da, 3 * n},
        {"cache.dc_dq", &cache.dc_dq, 3 * n}, {"cache.decay", &cache.decay, n}};
    for (const Field& f : fields)
      if (f.v->size() != f.size)
        detail::fail(where, std::string(f.name) + " has size " + std::to_string(f.v->size()) +
                                ", expected " + std::to_string(f.size) + ": call cache.resize(" +
                                std::to_string(n) + ", " + std::to_string(d) + ") first");
  }

  Parameters params_;
  CellOptions options_;
  Surrogate surrogate_;
};

}  // namespace sparse_rtrl
