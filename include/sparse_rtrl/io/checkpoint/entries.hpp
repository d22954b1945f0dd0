/// @file io/checkpoint/entries.hpp
/// @brief Helpers the checkpoint items share: the format version, entry checks (counts,
///        finiteness), WorkCounters and EgruStepCache as entries.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/io/npz.hpp>
#include <sparse_rtrl/learners/work_counters.hpp>
#include <sparse_rtrl/model/egru_cell.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace sparse_rtrl {

namespace io {

/// The checkpoint format this library writes and reads (entry format_version).
inline constexpr std::int64_t checkpoint_format_version = 1;

}  // namespace io

namespace detail {

inline std::string layer_suffix(Index k) { return "_l" + std::to_string(k); }

/// Refuses a file without format_version or of another format than this library's.
inline void require_checkpoint_version(io::NpzReader& r) {
  if (!r.contains("format_version"))
    r.fail("entry 'format_version' is missing: not a sparse_rtrl checkpoint (torch.nn.GRU weights load with "
           "io::load_torch_gru())");
  const std::int64_t version = r.read_scalar<std::int64_t>("format_version");
  if (version != io::checkpoint_format_version)
    r.fail("entry 'format_version': this library reads checkpoint format " +
           std::to_string(io::checkpoint_format_version) + ", the file has format " + std::to_string(version) +
           (version > io::checkpoint_format_version ? " (written by a newer sparse_rtrl)" : ""));
}

inline std::vector<std::uint64_t> dims(std::initializer_list<Index> d) {
  std::vector<std::uint64_t> out;
  for (Index v : d) out.push_back(std::uint64_t(v));
  return out;
}

template <typename Derived>
void require_finite_entry(io::NpzReader& r, const std::string& name, const Eigen::DenseBase<Derived>& m) {
  for (Index j = 0; j < m.cols(); ++j)
    for (Index i = 0; i < m.rows(); ++i)
      if (!std::isfinite(double(m(i, j))))
        r.fail("entry '" + name + "': element (" + std::to_string(i) + ", " + std::to_string(j) +
               ") is not finite");
}

/// A 0-D int64 entry that must lie in [lo, hi].
inline std::int64_t read_count(io::NpzReader& r, const std::string& name, std::int64_t lo, std::int64_t hi) {
  const std::int64_t v = r.read_scalar<std::int64_t>(name);
  if (v < lo || v > hi)
    r.fail("entry '" + name + "': expected a value in [" + std::to_string(lo) + ", " + std::to_string(hi) +
           "], found " + std::to_string(v));
  return v;
}

/// A 0-D int64 entry that must equal @p expected (@p what says why).
inline void read_expected(io::NpzReader& r, const std::string& name, std::int64_t expected, const std::string& what) {
  const std::int64_t v = r.read_scalar<std::int64_t>(name);
  if (v != expected)
    r.fail("entry '" + name + "': expected " + std::to_string(expected) + " (" + what + "), found " + std::to_string(v));
}

constexpr std::size_t kWorkFields = 11;
inline std::array<std::uint64_t, kWorkFields> work_array(const WorkCounters& w) {
  return {{w.steps, w.propagation_fma, w.dense_propagation_fma, w.readout_fma, w.dense_readout_fma, w.units,
           w.event_units, w.active_rows, w.coupling_nonzeros, w.cross_layer_fma, w.dense_cross_layer_fma}};
}
inline void save_work(io::NpzWriter& w, const std::string& name, const WorkCounters& c) {
  const auto a = work_array(c);
  w.add_values(name, a.data(), a.size());
}
inline WorkCounters read_work(io::NpzReader& r, const std::string& name) {
  Eigen::Matrix<std::uint64_t, Eigen::Dynamic, 1> v(static_cast<Index>(kWorkFields));
  r.read_into(name, v);
  WorkCounters w;
  std::uint64_t* f[kWorkFields] = {&w.steps, &w.propagation_fma, &w.dense_propagation_fma, &w.readout_fma,
                                   &w.dense_readout_fma, &w.units, &w.event_units, &w.active_rows,
                                   &w.coupling_nonzeros, &w.cross_layer_fma, &w.dense_cross_layer_fma};
  for (std::size_t k = 0; k < kWorkFields; ++k) *f[k] = v(Index(k));
  return w;
}

/// EgruStepCache's fields by name (the entries p/l{k}/cache/<name>).
template <typename S, typename Cache>
auto cache_fields(Cache& c) {
  using V = std::conditional_t<std::is_const<Cache>::value, const typename EgruStepCache<S>::Vector,
                               typename EgruStepCache<S>::Vector>;
  return std::array<std::pair<const char*, V*>, 20>{{{"x", &c.x},
                                                     {"c_prev", &c.c_prev},
                                                     {"o_prev", &c.o_prev},
                                                     {"y_prev", &c.y_prev},
                                                     {"h_prev", &c.h_prev},
                                                     {"psi_prev", &c.psi_prev},
                                                     {"s_prev", &c.s_prev},
                                                     {"a", &c.a},
                                                     {"q", &c.q},
                                                     {"r", &c.r},
                                                     {"z", &c.z},
                                                     {"g", &c.g},
                                                     {"c", &c.c},
                                                     {"o", &c.o},
                                                     {"y", &c.y},
                                                     {"psi", &c.psi},
                                                     {"s", &c.s},
                                                     {"dc_da", &c.dc_da},
                                                     {"dc_dq", &c.dc_dq},
                                                     {"decay", &c.decay}}};
}

}  // namespace detail
}  // namespace sparse_rtrl
