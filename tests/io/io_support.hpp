// Helpers of the io tests: temporary directories, whole-file bytes, bitwise comparisons, and
// running NumPy (tests/io/npz_check.py) on our files when python3 with numpy is installed.
#pragma once

#include "test_support.hpp"

#include <sparse_rtrl/io/checkpoint.hpp>
#include <sparse_rtrl/io/npz.hpp>
#include <sparse_rtrl/io/torch_gru.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/wait.h>
#endif

namespace iotest {

using sparse_rtrl::Index;
namespace fs = std::filesystem;

/// A new empty directory, removed with its contents at the end of the scope.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "sparse_rtrl_io_XXXXXX").string();
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (fs::path(path_) / name).string(); }
  /// Names of the files in the directory (to see that no temporary file is left behind).
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(path_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::string path_;
};

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

/// Bitwise equality (memcmp: -0 and +0 differ, NaN equals itself) of two dense objects.
template <typename A, typename B>
bool same_bits(const Eigen::DenseBase<A>& a, const Eigen::DenseBase<B>& b) {
  using S = typename A::Scalar;
  static_assert(std::is_same<S, typename B::Scalar>::value, "same scalar type");
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  for (Index j = 0; j < a.cols(); ++j)
    for (Index i = 0; i < a.rows(); ++i) {
      const S x = a(i, j), y = b(i, j);
      if (std::memcmp(&x, &y, sizeof(S)) != 0) return false;
    }
  return true;
}

inline bool same(const sparse_rtrl::WorkCounters& a, const sparse_rtrl::WorkCounters& b) {
  return std::memcmp(&a, &b, sizeof a) == 0;
}

/// The interpreter to run NumPy with: $SPARSE_RTRL_PYTHON, /usr/bin/python3 or python3 on the
/// PATH, the first that imports numpy; empty when none does.
inline std::string python_with_numpy() {
  static const std::string found = [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("SPARSE_RTRL_PYTHON")) candidates.push_back(env);
    candidates.push_back("/usr/bin/python3");
    candidates.push_back("python3");
    for (const auto& c : candidates)
      if (!c.empty() && std::system((c + " -c \"import numpy\" >/dev/null 2>&1").c_str()) == 0) return c;
    return std::string();
  }();
  return found;
}

/// Runs a shell command, returning its exit status and standard output.
inline int run(const std::string& command, std::string& output) {
  output.clear();
  std::FILE* p = ::popen(command.c_str(), "r");
  if (!p) return -1;
  char buf[65536];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) output.append(buf, n);
  const int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline std::string npz_check_script() { return test::data_dir() + "/../io/npz_check.py"; }

/// What ctest reports as skipped (SKIP_REGULAR_EXPRESSION in tests/CMakeLists.txt).
inline void report_skip(const std::string& why) {
  std::cout << "SPARSE_RTRL_TEST_SKIPPED: " << why << std::endl;
  WARN("skipped: " << why);
}

/// One array as numpy printed it (npz_check.py dump).
struct Dumped {
  std::string dtype;
  std::vector<std::uint64_t> shape;
  std::vector<std::string> values;
  /// Element k as a double (floats from float.hex(), integers and bools in decimal).
  double number(std::size_t k) const { return std::strtod(values.at(k).c_str(), nullptr); }
};

/// Parses npz_check.py's dump; throws unless it ends with "end <count>" matching the arrays.
inline std::map<std::string, Dumped> parse_dump(const std::string& text) {
  std::map<std::string, Dumped> out;
  std::istringstream in(text);
  std::string line;
  std::size_t end_count = std::size_t(-1);
  while (std::getline(in, line)) {
    if (line.compare(0, 4, "end ") == 0) {
      end_count = std::stoul(line.substr(4));
      break;
    }
    std::vector<std::string> fields;
    std::size_t b = 0;
    for (int f = 0; f < 3; ++f) {
      const std::size_t e = line.find('\t', b);
      if (e == std::string::npos) throw std::runtime_error("bad dump line: " + line);
      fields.push_back(line.substr(b, e - b));
      b = e + 1;
    }
    Dumped d;
    d.dtype = fields[1];
    std::istringstream shape(fields[2]);
    for (std::string s; std::getline(shape, s, ',');) d.shape.push_back(std::stoull(s));
    std::istringstream values(line.substr(b));
    for (std::string v; values >> v;) d.values.push_back(v);
    out[fields[0]] = d;
  }
  if (end_count != out.size()) throw std::runtime_error("dump incomplete:\n" + text.substr(0, 2000));
  return out;
}

/// NumPy's dtype.str for our scalar types.
template <typename S>
std::string numpy_dtype() {
  return sparse_rtrl::io::dtype_descr(sparse_rtrl::io::dtype_of<S>::value);
}

/// True when numpy's array equals @p m (2-D, C order) bit for bit (values via float.hex()).
template <typename Derived>
bool dumped_equals(const Dumped& d, const Eigen::DenseBase<Derived>& m, bool one_d = false) {
  using S = typename Derived::Scalar;
  const std::vector<std::uint64_t> shape =
      one_d ? std::vector<std::uint64_t>{std::uint64_t(m.size())}
            : std::vector<std::uint64_t>{std::uint64_t(m.rows()), std::uint64_t(m.cols())};
  if (d.dtype != numpy_dtype<S>() || d.shape != shape || d.values.size() != std::size_t(m.size())) return false;
  std::size_t k = 0;
  for (Index i = 0; i < m.rows(); ++i)
    for (Index j = 0; j < m.cols(); ++j, ++k) {
      const S want = m(i, j);
      const S got = S(d.number(k));
      if (std::memcmp(&want, &got, sizeof(S)) != 0) return false;
    }
  return true;
}

}  // namespace iotest
