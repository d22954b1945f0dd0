/// @file args.hpp
/// @brief The examples' command-line parser, one for all of them: each example declares its
///        options (a flag, a bounded integer, a number in (lo, hi], a path, or its own reader)
///        and the parser reads argv. Anything it does not know or cannot parse prints
///        "<program>: <what is wrong>" and the example's usage to stderr and exits with code 2;
///        --help or -h prints the usage to stdout and exits with code 0.
///
/// Values are strict: integers are plain digits (strtol alone would accept signs, blanks and
/// trailing text), numbers must parse whole and be finite; an option given twice keeps the last
/// value (a reader given with option() is called every time, e.g. for a repeatable --model).
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace examples {

class ArgParser {
 public:
  /// @p program prefixes every message ("spiral: unknown argument '--x'"); @p usage is the
  /// example's usage text (ending in a newline).
  ArgParser(std::string program, std::string usage) : program_(std::move(program)), usage_(std::move(usage)) {}
  // The readers hold `this`: a copy would report through the original.
  ArgParser(const ArgParser&) = delete;
  ArgParser& operator=(const ArgParser&) = delete;

  /// A flag without a value: sets @p target to true when given.
  ArgParser& flag(const std::string& name, bool& target) {
    bool* out = &target;
    options_.push_back({name, false, [out](const std::string&) { *out = true; }});
    return *this;
  }

  /// An integer of plain digits in [@p lo, @p hi] (lo >= 0: no example takes a negative one).
  template <typename Int>
  ArgParser& integer(const std::string& name, Int& target, Int lo, Int hi) {
    Int* out = &target;
    options_.push_back({name, true, [this, name, out, lo, hi](const std::string& text) {
                          *out = integer_value<Int>(name, text, lo, hi);
                        }});
    return *this;
  }

  /// A number in the half-open interval (@p lo, @p hi], read as a double and stored as @p Real.
  template <typename Real>
  ArgParser& number(const std::string& name, Real& target, double lo, double hi) {
    static_assert(std::is_floating_point<Real>::value, "ArgParser::number: Real must be float or double");
    Real* out = &target;
    options_.push_back({name, true, [this, name, out, lo, hi](const std::string& text) {
                          char* end = nullptr;
                          errno = 0;
                          const double value = std::strtod(text.c_str(), &end);
                          // The negated test also rejects NaN.
                          if (end == text.c_str() || *end != '\0' || errno != 0 || !(value > lo && value <= hi))
                            fail(name + " needs a number in (" + format(lo) + ", " + format(hi) + "], received '" +
                                 text + "'");
                          *out = Real(value);
                        }});
    return *this;
  }

  /// A file or directory name; an empty one is refused.
  ArgParser& path(const std::string& name, std::string& target) {
    std::string* out = &target;
    options_.push_back({name, true, [this, name, out](const std::string& text) {
                          if (text.empty()) fail(name + " needs a path, received ''");
                          *out = text;
                        }});
    return *this;
  }

  /// An option with a value read by @p read (which may call fail() or integer_value()).
  ArgParser& option(const std::string& name, std::function<void(const std::string&)> read) {
    options_.push_back({name, true, std::move(read)});
    return *this;
  }

  /// Reads every argument; returns only when all of them were understood.
  void parse(int argc, char** argv) const {
    for (int k = 1; k < argc; ++k) {
      const std::string arg = argv[k];
      if (arg == "--help" || arg == "-h") {
        std::fputs(usage_.c_str(), stdout);
        std::exit(0);
      }
      const auto it = std::find_if(options_.begin(), options_.end(), [&](const Option& o) { return o.name == arg; });
      if (it == options_.end()) fail("unknown argument '" + arg + "'");
      if (!it->takes_value) {
        it->read(std::string());
        continue;
      }
      if (k + 1 >= argc) fail(arg + " needs a value");
      it->read(argv[++k]);
    }
  }

  /// Ends the program as for a bad argument: the message, the usage, exit code 2.
  [[noreturn]] void fail(const std::string& message) const {
    std::fprintf(stderr, "%s: %s\n%s", program_.c_str(), message.c_str(), usage_.c_str());
    std::exit(2);
  }

  /// @p text as an integer in [@p lo, @p hi], or fail() naming @p name: for readers that take
  /// integers apart (a list of layer sizes).
  template <typename Int>
  Int integer_value(const std::string& name, const std::string& text, Int lo, Int hi) const {
    static_assert(std::is_integral<Int>::value, "ArgParser::integer: Int must be an integer type");
    const bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
    errno = 0;
    const unsigned long long value = digits ? std::strtoull(text.c_str(), nullptr, 10) : 0;
    const bool in_range = !negative(lo) && value >= static_cast<unsigned long long>(lo) &&
                          value <= static_cast<unsigned long long>(hi);
    if (!digits || errno != 0 || !in_range) {
      if (lo == 0 && static_cast<unsigned long long>(hi) == std::numeric_limits<std::uint64_t>::max())
        fail(name + " needs a non-negative 64-bit integer, received '" + text + "'");
      fail(name + " needs an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], received '" + text +
           "'");
    }
    return static_cast<Int>(value);
  }

 private:
  struct Option {
    std::string name;
    bool takes_value;
    std::function<void(const std::string&)> read;
  };

  template <typename Int>
  static constexpr bool negative(Int value) {
    if constexpr (std::is_signed<Int>::value) return value < 0;  // no always-false test for unsigned
    else return false;
  }

  static std::string format(double value) {
    char text[32];
    std::snprintf(text, sizeof text, "%g", value);
    return text;
  }

  std::string program_, usage_;
  std::vector<Option> options_;
};

/// The default of --threads where an example has one: the machine's hardware threads, at least 1.
inline long hardware_threads() { return std::max(1L, long(std::thread::hardware_concurrency())); }

}  // namespace examples
