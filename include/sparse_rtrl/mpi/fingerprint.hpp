/// @file mpi/fingerprint.hpp
/// @brief A deterministic hash of everything the ranks of a sharded learner must hold alike:
///        the build (scalar size, panel width, version), the shapes, the learner options that
///        change results, and per layer the parameters' bit patterns, the mask, the mode and
///        the surrogate. Needs no MPI (mpi/consistency.hpp compares it across ranks).
///
/// Bit patterns, not values: the sharded learner promises the one-process result bit for bit,
/// which needs bitwise equal parameters on every rank (0.0 and -0.0 differ here on purpose).
/// The hash is FNV-1a over the bytes, finished by a 64-bit mixer: the same on every rank of one
/// build, not a cryptographic digest (it detects mistakes, not adversaries).
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/influence_storage.hpp>
#include <sparse_rtrl/learners/rtrl.hpp>
#include <sparse_rtrl/model/model.hpp>

#include <Eigen/Core>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace sparse_rtrl {
namespace mpi {

/// 64-bit FNV-1a with a final avalanche (splitmix64's finaliser).
class Hasher {
 public:
  void bytes(const void* data, std::size_t count) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < count; ++i) {
      h_ ^= p[i];
      h_ *= 0x100000001b3ULL;
    }
  }
  void u64(std::uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));  // fixed byte order
    bytes(b, 8);
  }
  template <typename T>
  void scalar(T v) {
    bytes(&v, sizeof(T));
  }
  /// Shape and every coefficient of a dense Eigen object with contiguous storage.
  template <typename Derived>
  void dense(const Eigen::DenseBase<Derived>& m) {
    u64(std::uint64_t(m.rows()));
    u64(std::uint64_t(m.cols()));
    const auto& d = m.derived();
    bytes(d.data(), sizeof(typename Derived::Scalar) * std::size_t(d.size()));
  }
  std::uint64_t value() const {
    std::uint64_t z = h_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  std::uint64_t h_ = 0xcbf29ce484222325ULL;
};

/// @brief What a rank holds, hashed item by item so that a mismatch can be named.
struct ModelFingerprint {
  std::uint64_t build = 0;    ///< sizeof(Scalar), the panel width (SIMD), the library version
  std::uint64_t shapes = 0;   ///< number of layers, n and d of each
  std::uint64_t options = 0;  ///< the learner options that change results (not threads)
  std::uint64_t layers = 0;   ///< number of layers (plain, for the second comparison's size)
  struct Layer {
    std::uint64_t parameters = 0, mask = 0, mode = 0, surrogate = 0;
  };
  std::vector<Layer> layer;

  /// Header (4 numbers), compared first; then 4 per layer.
  static constexpr int kHeader = 4;
  static constexpr int kPerLayer = 4;
  /// The names of the header's and a layer's items, in the order of header() and per_layer().
  static const char* header_name(int i) {
    static const char* const names[kHeader] = {
        "the build (scalar type, SIMD panel width or library version)", "the model's shapes (layers, units, inputs)",
        "the learner options (skip_silent_rows, flush_subnormals, stream count)", "the number of layers"};
    return names[i];
  }
  static const char* per_layer_name(int i) {
    static const char* const names[kPerLayer] = {"parameters", "mask", "mode (events or GRU)", "surrogate"};
    return names[i];
  }
  std::vector<std::uint64_t> header() const { return {build, shapes, options, layers}; }
  std::vector<std::uint64_t> per_layer() const {
    std::vector<std::uint64_t> v;
    for (const Layer& l : layer)
      for (std::uint64_t x : {l.parameters, l.mask, l.mode, l.surrogate}) v.push_back(x);
    return v;
  }
};

/// A surrogate is any policy (surrogate.hpp): hashed by what it computes, its half-width and
/// pseudo-derivative at 65 points across [-1.5, 1.5] half-widths, which tells apart any two
/// triangular surrogates and, in practice, any two that would give different results.
template <typename Surrogate>
std::uint64_t surrogate_fingerprint(const Surrogate& surrogate) {
  using Scalar = typename Surrogate::scalar_type;
  Hasher h;
  const Scalar w = surrogate.half_width();
  h.scalar(w);
  for (int i = -32; i <= 32; ++i) h.scalar(surrogate.pseudo_derivative(Scalar(1.5) * w * Scalar(i) / Scalar(32)));
  return h.value();
}

/// The fingerprint of @p model with a learner's @p options (RtrlOptions::threads is left out:
/// results are bitwise the same for any number of threads, so ranks may differ there).
template <typename Scalar, typename Surrogate>
ModelFingerprint fingerprint(const Model<Scalar, Surrogate>& model, const RtrlOptions& options) {
  ModelFingerprint f;
  {
    Hasher h;
    h.u64(sizeof(Scalar));
    h.u64(std::uint64_t(detail::kChunk<Scalar>));
    h.bytes(version_string, std::strlen(version_string));
    f.build = h.value();
  }
  {
    Hasher h;
    h.u64(std::uint64_t(model.layers()));
    for (Index k = 0; k < model.layers(); ++k) {
      h.u64(std::uint64_t(model.units(k)));
      h.u64(std::uint64_t(model.cell(k).inputs()));
    }
    f.shapes = h.value();
  }
  {
    Hasher h;
    h.u64(options.skip_silent_rows ? 1 : 0);
    h.u64(options.flush_subnormals ? 1 : 0);
    f.options = h.value();
  }
  f.layers = std::uint64_t(model.layers());
  for (Index k = 0; k < model.layers(); ++k) {
    ModelFingerprint::Layer l;
    const auto& p = model.parameters(k);
    Hasher hp;
    hp.dense(p.W);
    hp.dense(p.R);
    hp.dense(p.bW);
    hp.dense(p.bR);
    hp.dense(p.theta);
    l.parameters = hp.value();
    Hasher hm;
    hm.dense(model.mask(k).W());
    hm.dense(model.mask(k).R());
    l.mask = hm.value();
    Hasher he;
    he.u64(model.events(k) ? 1 : 0);
    l.mode = he.value();
    l.surrogate = surrogate_fingerprint(model.surrogate(k));
    f.layer.push_back(l);
  }
  return f;
}

}  // namespace mpi
}  // namespace sparse_rtrl
