/// @file io/checkpoint/engine_item.hpp
/// @brief Standard random engines, the three base templates (std::mt19937, std::mt19937_64,
///        std::minstd_rand, std::ranlux48_base, ...; not the adaptors such as std::ranlux48):
///        the words of the engine's standard text form, uint64.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint/entries.hpp>
#include <sparse_rtrl/io/checkpoint/item.hpp>
#include <Eigen/Core>

#include <cstdint>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace sparse_rtrl {
namespace detail {

/// A standard random engine through its text form (the standard fixes it: the state words).
template <typename Engine>
class EngineItem : public CheckpointItem {
 public:
  EngineItem(std::string name, Engine& e) : CheckpointItem(std::move(name)), e_(&e) {}
  void save(io::NpzWriter& w) const override {
    std::ostringstream s;
    s << *e_;
    std::istringstream in(s.str());
    std::vector<std::uint64_t> words;
    unsigned long long v;
    while (in >> v) words.push_back(std::uint64_t(v));
    w.add_values(name(), words.data(), words.size());
  }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context&) const override {
    std::ostringstream now;
    now << *e_;
    std::istringstream count(now.str());
    std::size_t n = 0;
    for (unsigned long long v; count >> v;) ++n;
    Eigen::Matrix<std::uint64_t, Eigen::Dynamic, 1> words(static_cast<Index>(n));
    r.read_into(name(), words);
    std::ostringstream text;
    for (Index k = 0; k < words.size(); ++k) text << (k ? " " : "") << static_cast<unsigned long long>(words(k));
    auto st = std::make_shared<Engine>(*e_);
    std::istringstream in(text.str());
    in >> *st;
    if (!in) r.fail("entry '" + name() + "': not a valid state of this random engine");
    Engine* target = e_;
    return io::make_staged([target, st]() { *target = *st; });
  }

 private:
  Engine* e_;
};

}  // namespace detail

namespace io {

template <typename U, std::size_t w, std::size_t n, std::size_t m, std::size_t r, U a, std::size_t u, U d,
          std::size_t s, U b, std::size_t t, U c, std::size_t l, U f>
struct CheckpointTraits<std::mersenne_twister_engine<U, w, n, m, r, a, u, d, s, b, t, c, l, f>> {
  using Item = detail::EngineItem<std::mersenne_twister_engine<U, w, n, m, r, a, u, d, s, b, t, c, l, f>>;
};
template <typename U, U a, U c, U m>
struct CheckpointTraits<std::linear_congruential_engine<U, a, c, m>> {
  using Item = detail::EngineItem<std::linear_congruential_engine<U, a, c, m>>;
};
template <typename U, std::size_t w, std::size_t s, std::size_t r>
struct CheckpointTraits<std::subtract_with_carry_engine<U, w, s, r>> {
  using Item = detail::EngineItem<std::subtract_with_carry_engine<U, w, s, r>>;
};

}  // namespace io
}  // namespace sparse_rtrl
