/// @file io/npz.hpp
/// @brief NumPy's .npz (a zip of .npy arrays), read and written without NumPy: what checkpoints
///        are made of, and how weights move to and from PyTorch (numpy.load / numpy.savez).
///
/// Why our own: Debian has no maintained C++ package for .npz (cnpy, the usual choice, is not
/// packaged, writes no Zip64, and trusts sizes it reads), and the format is small: a zip of
/// stored entries (detail/zip.hpp) each holding one .npy array (a magic string, a version, a
/// Python-dict header {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), } padded to 64
/// bytes, then the raw little-endian elements; NumPy's format.py / NEP 1).
///
/// Supported: dtypes float32/64 ('<f4', '<f8'), signed and unsigned integers of 1-8 bytes
/// ('|i1' ... '<u8') and bool ('|b1'); any number of dimensions; C or Fortran order on reading
/// (we write C order, as numpy.save does for a contiguous array); .npy versions 1.0, 2.0 and 3.0
/// on reading (1.0 on writing); stored zip entries, with Zip64 records when an entry, an offset
/// or the number of entries needs them (numpy.savez writes Zip64 headers for every entry).
/// Not supported, and refused with a message saying so: compressed entries (numpy.savez_compressed),
/// big-endian data, structured and object dtypes (pickles are never read), encrypted or split zips.
/// Little-endian hosts only (x86-64, AArch64): checked at compile time.
///
/// Writes are atomic: NpzWriter writes a temporary file in the target's directory, and commit()
/// flushes it to disk (fsync), renames it over the target and syncs the directory, so a crash
/// leaves either the old file or the complete new one, never a half-written file. A writer that
/// is destroyed without commit() (an exception while saving) removes its temporary file.
/// Replacing a file keeps its permission bits (a new file gets 0666 minus the umask); the owner
/// becomes the saving user. A symbolic link is written through: its target is replaced (the
/// temporary file and the rename are in the target's directory) and the link stays. A writer
/// also removes the temporary files of the same target that killed processes left behind
/// ("<name>.tmp-<pid>-<n>" whose pid is no live process; see detail::remove_stale_temporaries).
///
/// Reading checks everything before trusting it (see detail/zip.hpp): an entry is accepted only
/// when its CRC-32 matches, and a header's shape must account for exactly the entry's bytes.
/// File content errors throw std::invalid_argument "<where>: <path>: entry '<name>': expected
/// ..., found ..."; operating-system errors (missing file, no space) throw std::runtime_error.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/detail/zip.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "sparse_rtrl/io: .npy data is little-endian and this host is not (or its byte order is unknown)"
#endif

namespace sparse_rtrl {
namespace io {

/// @brief Element types of .npy arrays this library reads and writes.
enum class Dtype { float32, float64, int8, int16, int32, int64, uint8, uint16, uint32, uint64, boolean };

/// Bytes per element.
inline std::size_t dtype_size(Dtype t) {
  switch (t) {
    case Dtype::int8: case Dtype::uint8: case Dtype::boolean: return 1;
    case Dtype::int16: case Dtype::uint16: return 2;
    case Dtype::float32: case Dtype::int32: case Dtype::uint32: return 4;
    case Dtype::float64: case Dtype::int64: case Dtype::uint64: return 8;
  }
  return 0;
}
/// The .npy descriptor NumPy writes on a little-endian machine, e.g. "<f4", "|b1".
inline const char* dtype_descr(Dtype t) {
  switch (t) {
    case Dtype::float32: return "<f4";
    case Dtype::float64: return "<f8";
    case Dtype::int8: return "|i1";
    case Dtype::int16: return "<i2";
    case Dtype::int32: return "<i4";
    case Dtype::int64: return "<i8";
    case Dtype::uint8: return "|u1";
    case Dtype::uint16: return "<u2";
    case Dtype::uint32: return "<u4";
    case Dtype::uint64: return "<u8";
    case Dtype::boolean: return "|b1";
  }
  return "?";
}
/// NumPy's name of the type, e.g. "float32", "bool".
inline const char* dtype_name(Dtype t) {
  switch (t) {
    case Dtype::float32: return "float32";
    case Dtype::float64: return "float64";
    case Dtype::int8: return "int8";
    case Dtype::int16: return "int16";
    case Dtype::int32: return "int32";
    case Dtype::int64: return "int64";
    case Dtype::uint8: return "uint8";
    case Dtype::uint16: return "uint16";
    case Dtype::uint32: return "uint32";
    case Dtype::uint64: return "uint64";
    case Dtype::boolean: return "bool";
  }
  return "?";
}

/// @brief The Dtype of a C++ arithmetic type (float, double, bool, fixed-width integers, and
/// the standard integer types of those widths): dtype_of<T>::value.
template <typename T, typename = void>
struct dtype_of;
template <>
struct dtype_of<float> : std::integral_constant<Dtype, Dtype::float32> {};
template <>
struct dtype_of<double> : std::integral_constant<Dtype, Dtype::float64> {};
template <>
struct dtype_of<bool> : std::integral_constant<Dtype, Dtype::boolean> {};
template <typename T>
struct dtype_of<T, std::enable_if_t<std::is_integral<T>::value && !std::is_same<T, bool>::value>>
    : std::integral_constant<Dtype, std::is_signed<T>::value
                                        ? (sizeof(T) == 1   ? Dtype::int8
                                           : sizeof(T) == 2 ? Dtype::int16
                                           : sizeof(T) == 4 ? Dtype::int32
                                                            : Dtype::int64)
                                        : (sizeof(T) == 1   ? Dtype::uint8
                                           : sizeof(T) == 2 ? Dtype::uint16
                                           : sizeof(T) == 4 ? Dtype::uint32
                                                            : Dtype::uint64)> {
  static_assert(sizeof(T) <= 8, "sparse_rtrl::io: integers of at most 64 bits");
};
static_assert(sizeof(bool) == 1, "sparse_rtrl::io stores bool as one byte (NumPy's |b1)");

/// @brief What a .npy header says: element type, shape (empty for a scalar), element order.
struct ArrayInfo {
  Dtype dtype = Dtype::float64;
  std::vector<std::uint64_t> shape;
  bool fortran_order = false;

  /// Number of elements (1 for a scalar).
  std::uint64_t count() const {
    std::uint64_t c = 1;
    for (auto s : shape) c *= s;
    return c;
  }
  /// E.g. "(3, 4)", "(5,)", "()" as Python prints a shape.
  static std::string shape_string(const std::vector<std::uint64_t>& shape) {
    std::string s = "(";
    for (std::size_t k = 0; k < shape.size(); ++k) s += (k ? ", " : "") + std::to_string(shape[k]);
    return s + (shape.size() == 1 ? ",)" : ")");
  }
  /// E.g. "<f4 (float32) of shape (3, 4)".
  std::string describe() const {
    return std::string(dtype_descr(dtype)) + " (" + dtype_name(dtype) + ") of shape " + shape_string(shape);
  }
};

}  // namespace io

namespace detail {

using io::ArrayInfo;
using io::Dtype;
using io::dtype_descr;
using io::dtype_size;

constexpr std::size_t kNpyMaxHeader = std::size_t(1) << 20;  // NumPy itself refuses more than 10000 by default
constexpr std::size_t kNpyMaxDims = 64;

/// Parses NumPy's header dict; throws std::string (the caller adds where and which entry).
struct NpyHeaderParser {
  const std::string& s;
  std::size_t p = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw std::string("bad .npy header (" + what + " at character " + std::to_string(p) + ")");
  }
  void ws() {
    while (p < s.size() && (s[p] == ' ' || s[p] == '\t' || s[p] == '\n' || s[p] == '\r')) ++p;
  }
  bool eat(char c) {
    ws();
    if (p < s.size() && s[p] == c) {
      ++p;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("expected '") + c + "'");
  }
  std::string string_literal() {
    ws();
    if (p >= s.size() || (s[p] != '\'' && s[p] != '"')) fail("expected a quoted string");
    const char q = s[p++];
    const std::size_t b = p;
    while (p < s.size() && s[p] != q) {
      if (s[p] == '\\') fail("escapes in strings are not supported");
      ++p;
    }
    if (p >= s.size()) fail("unterminated string");
    return s.substr(b, p++ - b);
  }
  bool boolean() {
    ws();
    if (s.compare(p, 4, "True") == 0) {
      p += 4;
      return true;
    }
    if (s.compare(p, 5, "False") == 0) {
      p += 5;
      return false;
    }
    fail("expected True or False");
  }
  std::vector<std::uint64_t> tuple() {
    std::vector<std::uint64_t> dims;
    expect('(');
    while (!eat(')')) {
      ws();
      if (p >= s.size() || s[p] < '0' || s[p] > '9') fail("expected a non-negative integer dimension");
      std::uint64_t v = 0;
      while (p < s.size() && s[p] >= '0' && s[p] <= '9') {
        if (v > (std::numeric_limits<std::uint64_t>::max() - 9) / 10) fail("dimension too large");
        v = v * 10 + std::uint64_t(s[p++] - '0');
      }
      if (p < s.size() && s[p] == 'L') ++p;  // Python 2 long
      dims.push_back(v);
      if (dims.size() > kNpyMaxDims) fail("more than " + std::to_string(kNpyMaxDims) + " dimensions");
      if (eat(')')) break;
      expect(',');
    }
    return dims;
  }
};

/// The Dtype of a descriptor, or a message saying why it is not supported.
inline bool parse_descr(const std::string& d, Dtype& out, std::string& why) {
  static const std::pair<const char*, Dtype> known[] = {
      {"f4", Dtype::float32}, {"f8", Dtype::float64}, {"i1", Dtype::int8},   {"i2", Dtype::int16},
      {"i4", Dtype::int32},   {"i8", Dtype::int64},   {"u1", Dtype::uint8},  {"u2", Dtype::uint16},
      {"u4", Dtype::uint32},  {"u8", Dtype::uint64},  {"b1", Dtype::boolean}};
  if (d.size() == 3)
    for (const auto& k : known)
      if (d.compare(1, 2, k.first) == 0) {
        const bool one_byte = dtype_size(k.second) == 1;
        if (d[0] == '<' || d[0] == '=' || (one_byte && (d[0] == '|' || d[0] == '>'))) {
          out = k.second;
          return true;
        }
        if (d[0] == '>') {
          why = "big-endian data ('" + d + "') is not supported (save it with a '<' dtype, e.g. a.astype('<" +
                d.substr(1) + "'))";
          return false;
        }
      }
  why = "dtype '" + d + "' is not supported (float32/64, integers, bool; no structured or object arrays)";
  return false;
}

/// Parses the dict of a .npy header.
inline ArrayInfo parse_npy_dict(const std::string& text) {
  NpyHeaderParser ps{text};
  ArrayInfo info;
  bool have_descr = false, have_order = false, have_shape = false;
  ps.expect('{');
  while (!ps.eat('}')) {
    const std::string key = ps.string_literal();
    ps.expect(':');
    if (key == "descr" && !have_descr) {
      ps.ws();
      if (ps.p < text.size() && text[ps.p] == '[') ps.fail("structured dtypes are not supported");
      const std::string d = ps.string_literal();
      std::string why;
      if (!parse_descr(d, info.dtype, why)) throw why;
      have_descr = true;
    } else if (key == "fortran_order" && !have_order) {
      info.fortran_order = ps.boolean();
      have_order = true;
    } else if (key == "shape" && !have_shape) {
      info.shape = ps.tuple();
      have_shape = true;
    } else {
      ps.fail("unexpected or repeated key '" + key + "'");
    }
    if (ps.eat('}')) break;
    ps.expect(',');
  }
  ps.ws();
  if (ps.p != text.size()) ps.fail("text after the dict");
  if (!have_descr || !have_order || !have_shape) ps.fail("descr, fortran_order and shape must all be given");
  return info;
}

/// The .npy header (magic, version 1.0, length, dict padded with spaces and '\n' to 64 bytes).
inline std::string npy_header(Dtype dtype, const std::vector<std::uint64_t>& shape) {
  std::string dict = std::string("{'descr': '") + dtype_descr(dtype) + "', 'fortran_order': False, 'shape': " +
                     ArrayInfo::shape_string(shape) + ", }";
  const std::size_t unpadded = 10 + dict.size() + 1;
  dict.append((64 - unpadded % 64) % 64, ' ');
  dict.push_back('\n');
  std::string h("\x93NUMPY\x01\x00", 8);
  put_u16(h, std::uint32_t(dict.size()));
  return h + dict;
}

/// Checked product of the shape times the element size; false on overflow.
inline bool data_bytes(const ArrayInfo& info, std::uint64_t& bytes) {
  std::uint64_t b = dtype_size(info.dtype);
  for (auto s : info.shape) {
    if (s != 0 && b > std::numeric_limits<std::uint64_t>::max() / s) return false;
    b *= s;
  }
  bytes = b;
  return true;
}

}  // namespace detail

namespace io {

/// @brief Where an NpzWriter's entry data go: write() exactly the bytes the header announced.
class ByteSink {
 public:
  explicit ByteSink(detail::ZipWriter& zip) : zip_(&zip) {}
  void write(const void* data, std::size_t n) { zip_->write(data, n); }
  /// Elements of an arithmetic type, as they are in memory (little-endian).
  template <typename T>
  void write_values(const T* values, std::size_t count) {
    static_assert(std::is_arithmetic<T>::value, "write_values: arithmetic types only");
    write(values, sizeof(T) * count);
  }

 private:
  detail::ZipWriter* zip_;
};

/// @brief Options of NpzWriter.
struct NpzWriterOptions {
  /// Zip64 records for every entry and the archive, as numpy.savez writes (default: only where
  /// sizes, offsets or the entry count need them). Both read the same everywhere.
  bool force_zip64 = false;
  /// fsync the file (and its directory) before and after the rename, so the new file survives a
  /// crash of the machine too. false: still atomic for processes, but not durable (scratch files).
  bool sync = true;
};

/// @brief Writes a .npz atomically (see the file comment): add entries, then commit().
///
/// Entry names are what numpy.load shows ("weight_ih_l0"; ".npy" is appended in the zip): 1-200
/// printable ASCII characters, '/' allowed to group names, no "." or ".." path parts, unique.
/// Eigen vectors become 1-D arrays, other Eigen objects 2-D arrays in C (row-major) order, so
/// numpy sees the matrix as written; scalars become 0-D arrays (numpy: arr[()] or int(arr)).
class NpzWriter {
 public:
  /// Creates the temporary file next to @p path (nothing happens to @p path before commit()).
  explicit NpzWriter(std::string path, NpzWriterOptions options = {},
                     std::string where = "sparse_rtrl::io::NpzWriter")
      : path_(std::move(path)), where_(std::move(where)) {
    if (path_.empty()) throw std::invalid_argument(detail::printable(where_ + ": the path is empty"));
    target_ = detail::resolve_symlinks(path_, where_);
    const int mode = detail::existing_mode(target_);
    detail::remove_stale_temporaries(target_);
    static std::atomic<unsigned> counter{0};
    for (int attempt = 0; !file_.is_open(); ++attempt) {  // a killed process may have left the name
      temp_ = target_ + ".tmp-" + std::to_string(process_id()) + "-" + std::to_string(counter++);
      bool exists = false;
      file_ = detail::BinaryFile::create_new(temp_, where_, attempt < 16 ? &exists : nullptr, mode);
    }
    zip_ = std::make_unique<detail::ZipWriter>(file_, options.force_zip64);
    sync_ = options.sync;
  }
  NpzWriter(const NpzWriter&) = delete;
  NpzWriter& operator=(const NpzWriter&) = delete;
  /// Without commit(): closes and removes the temporary file; the target is untouched.
  ~NpzWriter() {
    if (!committed_) {
      zip_.reset();
      file_ = detail::BinaryFile();
      std::remove(temp_.c_str());
    }
  }

  const std::string& path() const { return path_; }
  /// The temporary file being written (removed or renamed to path() at the end).
  const std::string& temporary_path() const { return temp_; }

  /// @brief The general form: an entry of @p dtype and @p shape (C order) whose data @p fill
  /// writes into the sink, exactly count(shape) * dtype_size(dtype) bytes.
  void add_array(const std::string& name, Dtype dtype, const std::vector<std::uint64_t>& shape,
                 const std::function<void(ByteSink&)>& fill) {
    require_open();
    check_name(name);
    ArrayInfo info;
    info.dtype = dtype;
    info.shape = shape;
    std::uint64_t bytes = 0;
    if (!detail::data_bytes(info, bytes))
      throw std::invalid_argument(detail::printable(where_ + ": entry '" + name + "': shape " +
                                                    ArrayInfo::shape_string(shape) + " overflows 64 bits"));
    const std::string header = detail::npy_header(dtype, shape);
    zip_->begin(name + ".npy", header.size() + bytes);
    zip_->write(header.data(), header.size());
    ByteSink sink(*zip_);
    fill(sink);
    zip_->end();
  }

  /// An Eigen object: vectors (a compile-time row or column) as 1-D (size,), everything else as
  /// 2-D (rows, cols) in C order.
  template <typename Derived>
  void add(const std::string& name, const Eigen::DenseBase<Derived>& a) {
    using T = typename Derived::Scalar;
    const bool vector = Derived::RowsAtCompileTime == 1 || Derived::ColsAtCompileTime == 1;
    const std::vector<std::uint64_t> shape =
        vector ? std::vector<std::uint64_t>{std::uint64_t(a.size())}
               : std::vector<std::uint64_t>{std::uint64_t(a.rows()), std::uint64_t(a.cols())};
    add_array(name, dtype_of<T>::value, shape, [&](ByteSink& sink) { write_c_order(sink, a.derived()); });
  }
  /// A 0-D array holding @p value.
  template <typename T>
  void add_scalar(const std::string& name, T value) {
    add_array(name, dtype_of<T>::value, {}, [&](ByteSink& sink) { sink.write_values(&value, 1); });
  }
  /// A 1-D array of @p count values.
  template <typename T>
  void add_values(const std::string& name, const T* values, std::size_t count) {
    add_array(name, dtype_of<T>::value, {std::uint64_t(count)},
              [&](ByteSink& sink) { sink.write_values(values, count); });
  }

  /// Central directory, fsync, rename over path(), directory sync. Throws on failure (the
  /// temporary file is then removed by the destructor and path() is untouched).
  void commit() {
    require_open();
    zip_->finish();
    if (sync_) file_.sync();
    file_.close();
    if (std::rename(temp_.c_str(), target_.c_str()) != 0)
      detail::system_error(where_, path_, "cannot rename " + temp_ + " to " + (target_ == path_ ? "it" : target_),
                           errno);
    committed_ = true;
    if (sync_) sync_directory();
  }

  /// Elements of @p a in C order (row by row), buffered.
  template <typename Derived>
  static void write_c_order(ByteSink& sink, const Eigen::DenseBase<Derived>& a) {
    using T = typename Derived::Scalar;
    const Index rows = a.rows(), cols = a.cols();
    if constexpr ((Derived::Flags & Eigen::DirectAccessBit) != 0 && !std::is_same<T, bool>::value) {
      if ((Derived::IsRowMajor || cols == 1 || rows == 1) && a.derived().innerStride() == 1 &&
          (rows == 1 || cols == 1 || a.derived().outerStride() == (Derived::IsRowMajor ? cols : rows))) {
        sink.write_values(a.derived().data(), std::size_t(a.size()));  // contiguous in C order already
        return;
      }
    }
    using Stored = std::conditional_t<std::is_same<T, bool>::value, unsigned char, T>;  // no std::vector<bool>
    std::vector<Stored> buf;
    buf.reserve(std::size_t(std::max<Index>(1, std::min<Index>(rows * cols, Index(1) << 16))));
    for (Index i = 0; i < rows; ++i) {
      for (Index j = 0; j < cols; ++j) buf.push_back(Stored(a(i, j)));
      if (Index(buf.size()) + cols > (Index(1) << 16) || i + 1 == rows) {
        sink.write_values(buf.data(), buf.size());
        buf.clear();
      }
    }
  }

 private:
  using Index = Eigen::Index;

  static long process_id() {
#if defined(SPARSE_RTRL_POSIX_IO)
    return long(::getpid());
#else
    return 0;
#endif
  }

  void require_open() const {
    if (committed_) throw std::logic_error(detail::printable(where_ + ": " + path_ + ": already committed"));
  }

  void check_name(const std::string& name) {
    std::string why;
    if (name.empty() || name.size() > 200) why = "must have 1-200 characters";
    for (char c : name)
      if (c < 0x21 || c > 0x7E || c == '\\') why = "must be printable ASCII without spaces or '\\'";
    if (why.empty() && (name.front() == '/' || name.back() == '/')) why = "must not begin or end with '/'";
    if (why.empty()) {
      std::size_t b = 0;
      while (b <= name.size()) {
        const std::size_t e = std::min(name.find('/', b), name.size());
        const std::string part = name.substr(b, e - b);
        if (part.empty() || part == "." || part == "..") why = "must not contain empty, '.' or '..' path parts";
        b = e + 1;
      }
    }
    if (why.empty() && !names_.emplace(name).second) why = "was added twice";
    if (!why.empty()) throw std::invalid_argument(detail::printable(where_ + ": entry name '" + name + "' " + why));
  }

  void sync_directory() const {
#if defined(SPARSE_RTRL_POSIX_IO)
    // Makes the rename durable. Best effort: some file systems refuse to sync a directory.
    const std::size_t slash = target_.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : target_.substr(0, slash));
    const int fd = ::open(dir.c_str(), O_RDONLY);
    if (fd >= 0) {
      (void)::fsync(fd);
      ::close(fd);
    }
#endif
  }

  std::string path_, where_, target_, temp_;  // target_: path_ with symbolic links followed
  detail::BinaryFile file_;
  std::unique_ptr<detail::ZipWriter> zip_;
  std::unordered_set<std::string> names_;
  bool committed_ = false;
  bool sync_ = true;
};

/// @brief Reads a .npz: the zip structure is checked at opening; arrays are read on demand
/// with their CRC-32 checked (see the file comment).
class NpzReader {
 public:
  explicit NpzReader(const std::string& path, std::string where = "sparse_rtrl::io::NpzReader")
      : zip_(detail::BinaryFile::open_read(path, where), where) {
    for (const auto& e : zip_.entries())
      if (e.name.size() > 4 && e.name.compare(e.name.size() - 4, 4, ".npy") == 0)
        names_.push_back(e.name.substr(0, e.name.size() - 4));
  }

  const std::string& path() const { return zip_.path(); }
  const std::string& where() const { return zip_.where(); }
  /// Array names in file order (entries "x.npy" as "x", like numpy.load's keys).
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return zip_.find(name + ".npy") != nullptr; }

  /// Header of array @p name (read and parsed once; its bytes' CRC is checked when the array is
  /// read). Throws std::invalid_argument for a missing entry or a header that is not valid.
  const ArrayInfo& info(const std::string& name) { return header(name).info; }

  /// @brief Reads the data of array @p name in its stored order (C unless info().fortran_order):
  /// @p consume is called with consecutive chunks (pointer, bytes) of at most @p chunk bytes,
  /// then the CRC-32 of the whole entry is checked. Throws if the CRC does not match, after
  /// consume has seen the data: callers read into staging buffers, never into live objects.
  void read_data(const std::string& name, const std::function<void(const unsigned char*, std::size_t)>& consume,
                 std::size_t chunk = std::size_t(1) << 20) {
    const Header& h = header(name);
    detail::ZipEntryReader r(zip_, *h.entry);
    std::vector<unsigned char> buf(static_cast<std::size_t>(std::min<std::uint64_t>(std::max<std::uint64_t>(h.header_bytes, 1), chunk)));
    for (std::uint64_t left = h.header_bytes; left > 0;) {  // the header again, for the CRC
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, buf.size()));
      r.read(buf.data(), n);
      left -= n;
    }
    buf.resize(static_cast<std::size_t>(std::min<std::uint64_t>(std::max<std::uint64_t>(r.remaining(), 1), chunk)));
    while (r.remaining() > 0) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(r.remaining(), buf.size()));
      r.read(buf.data(), n);
      consume(buf.data(), n);
    }
    r.finish();
    verified_.insert(h.entry->name);
  }

  /// Checks the CRC-32 of every entry of the file (arrays or not) that has not been read whole
  /// yet (read_data() and read_into() check what they read): with those, all of it.
  void verify_all() {
    for (const auto& e : zip_.entries()) {
      if (verified_.count(e.name)) continue;
      detail::ZipEntryReader r(zip_, e);
      r.finish();
      verified_.insert(e.name);
    }
  }

  /// Throws std::invalid_argument "<where>: <path>: <what>".
  [[noreturn]] void fail(const std::string& what) const { zip_.fail(what); }

  /// @brief Throws std::invalid_argument unless array @p name has @p dtype and @p shape:
  /// "entry 'x': expected <f4 (float32) of shape (3, 4), found <f8 (float64) of shape (3, 4)".
  const ArrayInfo& require(const std::string& name, Dtype dtype, const std::vector<std::uint64_t>& shape) {
    const ArrayInfo& i = info(name);
    if (i.dtype != dtype || i.shape != shape) {
      ArrayInfo want;
      want.dtype = dtype;
      want.shape = shape;
      zip_.fail("entry '" + name + "': expected " + want.describe() + ", found " + i.describe());
    }
    return i;
  }

  /// @brief Reads array @p name into @p out, which must already have the array's shape (a
  /// vector for (size,), a matrix for (rows, cols), anything of size 1 for ()), and whose Scalar
  /// must be the array's dtype exactly (no conversion). C or Fortran order. Bools must be 0 or 1.
  template <typename Derived>
  void read_into(const std::string& name, Eigen::DenseBase<Derived>& out) {
    using T = typename Derived::Scalar;
    const ArrayInfo& i = info(name);
    const bool vector = Derived::RowsAtCompileTime == 1 || Derived::ColsAtCompileTime == 1;
    std::vector<std::uint64_t> shape;
    if (i.shape.empty() && out.size() == 1) {
    } else if (vector) {
      shape = {std::uint64_t(out.size())};
    } else {
      shape = {std::uint64_t(out.rows()), std::uint64_t(out.cols())};
    }
    require(name, dtype_of<T>::value, shape);
    const Index rows = out.rows(), cols = out.cols();
    const bool fortran = i.fortran_order && shape.size() == 2;
    std::uint64_t k = 0;  // element index in file order
    read_data(name, [&](const unsigned char* p, std::size_t n) {
      // Chunks hold whole elements: every chunk size is a multiple of the element size (1 MiB).
      for (std::size_t b = 0; b + sizeof(T) <= n; b += sizeof(T), ++k) {
        T v;
        std::memcpy(&v, p + b, sizeof(T));
        check_bool(name, v, k);
        const Index e = Index(k);
        if (vector || rows == 1 || cols == 1)
          out(rows == 1 ? 0 : e, rows == 1 ? e : 0) = v;
        else if (fortran)
          out(e % rows, e / rows) = v;
        else
          out(e / cols, e % cols) = v;
      }
    });
  }
  /// A 0-D array (or one element of shape (1,)), of type T exactly.
  template <typename T>
  T read_scalar(const std::string& name) {
    Eigen::Matrix<T, 1, 1> v;
    const ArrayInfo& i = info(name);
    if (!i.shape.empty()) require(name, dtype_of<T>::value, {});
    read_into(name, v);
    return v(0);
  }

 private:
  using Index = Eigen::Index;

  struct Header {
    const detail::ZipEntry* entry = nullptr;
    std::uint64_t header_bytes = 0;
    ArrayInfo info;
  };

  template <typename T>
  void check_bool(const std::string& name, const T& v, std::uint64_t k) const {
    if constexpr (std::is_same<T, bool>::value) {
      unsigned char byte;
      std::memcpy(&byte, &v, 1);
      if (byte > 1)
        zip_.fail("entry '" + name + "': bool element " + std::to_string(k) + " is " + std::to_string(byte) +
                  ", expected 0 or 1");
    }
  }

  const Header& header(const std::string& name) {
    const auto it = headers_.find(name);
    if (it != headers_.end()) return it->second;
    const detail::ZipEntry* e = zip_.find(name + ".npy");
    if (!e) zip_.fail("entry '" + name + "' is missing");
    const std::string entry = "entry '" + name + "': ";
    if (e->size < 10) zip_.fail(entry + "only " + std::to_string(e->size) + " bytes: not a .npy array");
    unsigned char pre[12] = {};
    zip_.file().read_at(e->data_offset, pre, std::size_t(std::min<std::uint64_t>(12, e->size)));
    if (std::memcmp(pre, "\x93NUMPY", 6) != 0) zip_.fail(entry + "no .npy magic string: not a .npy array");
    const int major = pre[6], minor = pre[7];
    if (!((major == 1 || major == 2 || major == 3) && minor == 0))
      zip_.fail(entry + ".npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                ", expected 1.0, 2.0 or 3.0");
    const std::uint64_t prefix = major == 1 ? 10 : 12;
    if (e->size < prefix) zip_.fail(entry + "truncated .npy header");
    const std::uint64_t len = major == 1 ? detail::get_u16(pre + 8) : detail::get_u32(pre + 8);
    if (len > detail::kNpyMaxHeader) zip_.fail(entry + ".npy header of " + std::to_string(len) + " bytes: too large");
    if (len > e->size - prefix)
      zip_.fail(entry + ".npy header of " + std::to_string(len) + " bytes, but the entry has only " +
                std::to_string(e->size) + " bytes");
    std::string text(static_cast<std::size_t>(len), '\0');
    zip_.file().read_at(e->data_offset + prefix, &text[0], text.size());
    Header h;
    h.entry = e;
    h.header_bytes = prefix + len;
    try {
      h.info = detail::parse_npy_dict(text);
    } catch (const std::string& why) {
      zip_.fail(entry + why);
    }
    std::uint64_t bytes = 0;
    if (!detail::data_bytes(h.info, bytes)) zip_.fail(entry + "shape " + ArrayInfo::shape_string(h.info.shape) + " overflows");
    if (bytes != e->size - h.header_bytes)
      zip_.fail(entry + h.info.describe() + " needs " + std::to_string(bytes) + " data bytes, the entry has " +
                std::to_string(e->size - h.header_bytes) + " (truncated or corrupted)");
    return headers_.emplace(name, std::move(h)).first->second;
  }

  detail::ZipReader zip_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, Header> headers_;
  std::unordered_set<std::string> verified_;  // entries whose CRC-32 has been checked
};

}  // namespace io
}  // namespace sparse_rtrl
