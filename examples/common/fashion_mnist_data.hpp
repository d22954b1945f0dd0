/// @file fashion_mnist_data.hpp
/// @brief Reading Fashion-MNIST's IDX files for the examples: gzip-compressed or not, through
///        zlib when the build defines SPARSE_RTRL_EXAMPLE_HAVE_ZLIB, otherwise by spawning
///        `gzip -dc`. Any deviation (bad magic, other dimensions, short or overlong file, bad
///        compression) ends the program with a message naming the file (exit code 1); a missing
///        data set ends it with exit code 77 (ctest's skip code) and says how to install it.
///
/// Shared by fashion_mnist.cpp and stack_depth.cpp (messages start with program_name()); their
/// shuffling generator is examples::Random (random.hpp).
#pragma once

#include <Eigen/Core>

#if defined(SPARSE_RTRL_EXAMPLE_HAVE_ZLIB)
#include <zlib.h>
#endif
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace fashion_mnist_data {

constexpr int kSide = 28;  // 28 x 28 images
constexpr int kClasses = 10;
constexpr int kExitNoData = 77;  // data set not installed (ctest SKIP_RETURN_CODE)
constexpr int kExitBadData = 1;  // a file unreadable, corrupt or truncated
constexpr const char* kDefaultDir = "/usr/share/datasets/fashion-mnist";

/// The program name that prefixes error messages ("stack_depth: ...").
inline std::string& program_name() {
  static std::string name = "fashion_mnist";
  return name;
}

using Image = Eigen::Matrix<float, kSide, kSide, Eigen::RowMajor>;  // row t is x_t

// IDX files (the MNIST format): magic 0x00 0x00 0x08 rank, rank big-endian uint32 dimensions,
// then the unsigned bytes.

/// Reads a file, decompressing gzip: through zlib when the build found it (zlib also reads
/// uncompressed files), otherwise by spawning `gzip -dc` for .gz files.
class ByteReader {
 public:
  explicit ByteReader(const std::string& path) : path_(path) {
#if defined(SPARSE_RTRL_EXAMPLE_HAVE_ZLIB)
    errno = 0;
    gz_ = gzopen(path.c_str(), "rb");
    if (!gz_) error_ = errno ? std::strerror(errno) : "gzopen failed";
#else
    if (path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0) {
      std::string quoted = "'";  // single quotes, with embedded ones closed and escaped
      for (char ch : path) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
      quoted += "'";
      pipe_ = popen(("gzip -dc " + quoted).c_str(), "r");
      if (!pipe_) error_ = "cannot run gzip -dc: " + std::string(std::strerror(errno));
      file_ = pipe_;
    } else {
      file_ = std::fopen(path.c_str(), "rb");
      if (!file_) error_ = std::strerror(errno);
    }
#endif
  }
  ByteReader(const ByteReader&) = delete;
  ByteReader& operator=(const ByteReader&) = delete;
  ~ByteReader() { close(); }

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

  /// Reads up to @p size bytes; returns how many were read (fewer at the end or on error).
  std::size_t read(void* buffer, std::size_t size) {
    if (!ok()) return 0;
    auto* out = static_cast<unsigned char*>(buffer);
    std::size_t done = 0;
#if defined(SPARSE_RTRL_EXAMPLE_HAVE_ZLIB)
    while (done < size) {
      const unsigned chunk = unsigned(std::min<std::size_t>(size - done, std::size_t(1) << 30));
      const int got = gzread(gz_, out + done, chunk);
      if (got < 0) {
        int code = 0;
        error_ = gzerror(gz_, &code);
        // zlib prefixes the message with the path, which data_error() prints already.
        const std::string prefix = path_ + ": ";
        if (error_.compare(0, prefix.size(), prefix) == 0) error_.erase(0, prefix.size());
        if (error_.empty()) error_ = "read error";
        break;
      }
      if (got == 0) break;
      done += std::size_t(got);
    }
#else
    done = std::fread(out, 1, size, file_);
    if (std::ferror(file_)) error_ = std::strerror(errno);
#endif
    return done;
  }

  /// Closes; false (see error()) if decompression failed, e.g. a truncated .gz.
  bool close() {
#if defined(SPARSE_RTRL_EXAMPLE_HAVE_ZLIB)
    if (gz_) {
      const int code = gzclose(gz_);
      gz_ = nullptr;
      if (code != Z_OK && ok())
        error_ = code == Z_BUF_ERROR ? "compressed data ends early (truncated .gz)"
                                     : "gzclose failed";
    }
#else
    if (pipe_) {
      const int status = pclose(pipe_);
      pipe_ = file_ = nullptr;
      if (status != 0 && ok()) error_ = "gzip -dc failed (corrupt or truncated .gz)";
    } else if (file_) {
      std::fclose(file_);
      file_ = nullptr;
    }
#endif
    return ok();
  }

 private:
  std::string path_, error_;
#if defined(SPARSE_RTRL_EXAMPLE_HAVE_ZLIB)
  gzFile gz_ = nullptr;
#else
  std::FILE* pipe_ = nullptr;
  std::FILE* file_ = nullptr;
#endif
};

[[noreturn]] inline void data_error(const std::string& path, const std::string& message) {
  std::fprintf(stderr, "%s: %s: %s\n", program_name().c_str(), path.c_str(), message.c_str());
  std::exit(kExitBadData);
}

inline std::uint32_t big_endian(const unsigned char* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) |
         std::uint32_t(p[3]);
}

/// Reads an IDX file of unsigned bytes whose dimensions after the first (the item count) must
/// be @p inner; fills @p data with count x prod(inner) bytes and returns the count. Any
/// deviation (bad magic, other dimensions, short or overlong file, bad compression) ends the
/// program with a message naming the file.
inline std::size_t read_idx(const std::string& path, const std::vector<std::uint32_t>& inner,
                     std::vector<std::uint8_t>& data) {
  ByteReader in(path);
  if (!in.ok()) data_error(path, "cannot open: " + in.error());
  const std::size_t rank = inner.size() + 1;
  unsigned char header[4 + 4 * 3] = {};
  const std::size_t header_size = 4 + 4 * rank;
  if (in.read(header, header_size) != header_size)
    data_error(path, in.ok() ? "truncated: shorter than its IDX header" : in.error());
  if (header[0] != 0 || header[1] != 0 || header[2] != 0x08 || header[3] != rank)
    data_error(path, "not an IDX file of unsigned bytes with " + std::to_string(rank) +
                         " dimensions (bad magic number)");
  const std::uint32_t count = big_endian(header + 4);
  std::size_t item = 1;
  for (std::size_t k = 0; k < inner.size(); ++k) {
    const std::uint32_t dim = big_endian(header + 8 + 4 * k);
    if (dim != inner[k])
      data_error(path, "dimension " + std::to_string(k + 1) + " is " + std::to_string(dim) +
                           ", expected " + std::to_string(inner[k]));
    item *= dim;
  }
  if (count == 0 || count > 1000000)
    data_error(path, "implausible item count " + std::to_string(count));
  data.resize(std::size_t(count) * item);
  const std::size_t got = in.read(data.data(), data.size());
  if (got != data.size())
    data_error(path, !in.ok() ? in.error()
                              : "truncated: the header announces " + std::to_string(count) +
                                    " items, the file holds " + std::to_string(got / item));
  unsigned char extra = 0;
  if (in.read(&extra, 1) != 0)
    data_error(path, "trailing bytes after the " + std::to_string(count) + " items");
  if (!in.close()) data_error(path, in.error());
  return count;
}

struct Dataset {
  std::vector<std::uint8_t> pixels;  // count x 28 x 28, row-major per image
  std::vector<std::uint8_t> labels;  // count, each in [0, 10)
  std::size_t size() const { return labels.size(); }
  /// Image k as 28 steps x 28 inputs in [0, 1].
  Image image(std::size_t k) const {
    using Bytes = Eigen::Matrix<std::uint8_t, kSide, kSide, Eigen::RowMajor>;
    return Eigen::Map<const Bytes>(pixels.data() + k * std::size_t(kSide * kSide)).cast<float>() /
           255.0f;
  }
};

/// DIR/name.gz if it exists, else DIR/name, else "".
inline std::string locate(const std::string& dir, const std::string& name) {
  for (const std::string& candidate : {dir + "/" + name + ".gz", dir + "/" + name}) {
    struct stat st;
    if (::stat(candidate.c_str(), &st) == 0) return candidate;
  }
  return "";
}

/// Loads "train" or "t10k" from @p dir.
inline Dataset load(const std::string& dir, const std::string& prefix) {
  const std::string images = locate(dir, prefix + "-images-idx3-ubyte");
  const std::string labels = locate(dir, prefix + "-labels-idx1-ubyte");
  if (images.empty() || labels.empty()) {
    std::fprintf(stderr,
                 "%s: Fashion-MNIST is not in %s (looked for %s-images-idx3-ubyte[.gz] "
                 "and %s-labels-idx1-ubyte[.gz]).\n"
                 "Install it with\n    sudo apt-get install dataset-fashion-mnist\n"
                 "(Debian 12 or later), or pass --data DIR for a directory holding the four IDX "
                 "files.\n",
                 program_name().c_str(), dir.c_str(), prefix.c_str(), prefix.c_str());
    std::exit(kExitNoData);
  }
  Dataset d;
  const std::vector<std::uint32_t> side = {std::uint32_t(kSide), std::uint32_t(kSide)};
  const std::size_t n_images = read_idx(images, side, d.pixels);
  const std::size_t n_labels = read_idx(labels, {}, d.labels);
  if (n_images != n_labels)
    data_error(labels, std::to_string(n_labels) + " labels for the " + std::to_string(n_images) +
                           " images of " + images);
  for (std::size_t k = 0; k < n_labels; ++k)
    if (d.labels[k] >= kClasses)
      data_error(labels, "label " + std::to_string(d.labels[k]) + " of item " + std::to_string(k) +
                             " is not in [0, 10)");
  return d;
}

}  // namespace fashion_mnist_data
