/// @file detail/zip.hpp
/// @brief The zip container of NumPy's .npz: stored (uncompressed) entries only, CRC-32 checked,
///        Zip64 for entries, offsets and entry counts beyond the 32/16-bit fields.
///
/// Written from PKWARE's APPNOTE.TXT (6.3.x), sections 4.3 (layout), 4.4 (fields) and 4.5.3
/// (Zip64 extended information). What NumPy writes and reads: numpy.savez uses Python's zipfile
/// with ZIP_STORED and force_zip64=True, so its local headers carry a Zip64 extra field even for
/// small entries; numpy.load accepts stored and deflated entries. We write stored entries and a
/// fixed timestamp (1980-01-01, so equal contents give equal files) and read stored ones.
///
/// Reading is defensive, for files that may be truncated, corrupted or hostile: every offset and
/// size is checked against the file before it is used, nothing is allocated from an unchecked
/// size, the central directory must end where the end record says, every entry's local header
/// must agree with its central directory record, entries may not overlap, and an entry's data is
/// accepted only when its CRC-32 matches. Content errors throw std::invalid_argument naming the
/// file and what was expected and found; operating-system errors (cannot open, read or write)
/// throw std::runtime_error with the system's message.
#pragma once
#ifndef SPARSE_RTRL_INTERNAL_INCLUDE_OK
#error "sparse_rtrl/detail/* is internal: include <sparse_rtrl/sparse_rtrl.hpp> instead."
#endif

#include <sparse_rtrl/detail/check.hpp>
#include <sparse_rtrl/detail/crc32.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#define SPARSE_RTRL_POSIX_IO 1
#endif

namespace sparse_rtrl {
namespace detail {

// ---- Little-endian field access (zip and .npy are little-endian throughout). ----

inline std::uint16_t get_u16(const unsigned char* p) { return std::uint16_t(p[0] | (unsigned(p[1]) << 8)); }
inline std::uint32_t get_u32(const unsigned char* p) {
  return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) | (std::uint32_t(p[3]) << 24);
}
inline std::uint64_t get_u64(const unsigned char* p) { return std::uint64_t(get_u32(p)) | (std::uint64_t(get_u32(p + 4)) << 32); }
inline void put_u16(std::string& out, std::uint32_t v) {
  out.push_back(char(v & 0xFFu));
  out.push_back(char((v >> 8) & 0xFFu));
}
inline void put_u32(std::string& out, std::uint32_t v) {
  put_u16(out, v & 0xFFFFu);
  put_u16(out, v >> 16);
}
inline void put_u64(std::string& out, std::uint64_t v) {
  put_u32(out, std::uint32_t(v & 0xFFFFFFFFu));
  put_u32(out, std::uint32_t(v >> 32));
}

inline std::string hex32(std::uint32_t v) {
  std::ostringstream s;
  s << "0x" << std::hex << v;
  return s.str();
}

// Both error kinds pass the whole message through printable(): it carries file and entry names,
// which come from users and from files and may hold control characters.

/// Content error: std::invalid_argument "<where>: <path>: <what>".
[[noreturn]] inline void file_error(const std::string& where, const std::string& path, const std::string& what) {
  throw std::invalid_argument(printable(where + ": " + path + ": " + what));
}
/// Operating-system error: std::runtime_error "<where>: <path>: <what>: <strerror(errno)>".
[[noreturn]] inline void system_error(const std::string& where, const std::string& path, const std::string& what,
                                      int error) {
  throw std::runtime_error(
      printable(where + ": " + path + ": " + what + (error ? ": " + std::string(std::strerror(error)) : "")));
}

/// @brief A binary file with 64-bit offsets, on std::FILE (a 1 MiB buffer; large reads and
/// writes go straight to the system). Errors throw (see the file comment); the destructor closes
/// without checking (call close() to see write errors).
class BinaryFile {
 public:
  BinaryFile() = default;
  BinaryFile(const BinaryFile&) = delete;
  BinaryFile& operator=(const BinaryFile&) = delete;
  BinaryFile(BinaryFile&& o) noexcept { swap(o); }
  BinaryFile& operator=(BinaryFile&& o) noexcept {
    BinaryFile tmp(std::move(o));
    swap(tmp);
    return *this;
  }
  ~BinaryFile() {
    if (f_) std::fclose(f_);
  }
  void swap(BinaryFile& o) noexcept {
    std::swap(f_, o.f_);
    std::swap(path_, o.path_);
    std::swap(where_, o.where_);
    std::swap(size_, o.size_);
    std::swap(position_, o.position_);
    std::swap(window_, o.window_);
    std::swap(window_offset_, o.window_offset_);
  }

  /// Opens an existing file for reading.
  static BinaryFile open_read(const std::string& path, const std::string& where) {
    BinaryFile b(path, where);
    b.f_ = std::fopen(path.c_str(), "rb");
    if (!b.f_) system_error(where, path, "cannot open for reading", errno);
    std::setvbuf(b.f_, nullptr, _IONBF, 0);  // read_at() keeps its own window
    if (!b.seek(0, SEEK_END)) system_error(where, path, "cannot find the file's size", errno);
    const auto end = b.tell();
    if (end < 0) system_error(where, path, "cannot find the file's size", errno);
    b.size_ = std::uint64_t(end);
    b.position_ = b.size_;
    return b;
  }
  /// Creates a new file for writing; fails if it exists (no file is ever overwritten in place),
  /// or, with @p exists given, sets *exists and returns a closed BinaryFile in that case.
  /// @p mode >= 0 (POSIX): the file gets exactly these permission bits (those of the file it will
  /// replace), and is never readable by more users than they allow, not even while it is
  /// written; -1: the usual 0666 minus the umask.
  static BinaryFile create_new(const std::string& path, const std::string& where, bool* exists = nullptr,
                               int mode = -1) {
    BinaryFile b(path, where);
#if defined(SPARSE_RTRL_POSIX_IO)
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                          mode >= 0 ? mode_t(mode) & 0666 : mode_t(0666));
    if (fd >= 0) {
      // The umask may have removed bits the old file had: set exactly its bits.
      if ((mode >= 0 && ::fchmod(fd, mode_t(mode)) != 0) || !(b.f_ = ::fdopen(fd, "wb"))) {
        const int error = errno;
        ::close(fd);
        ::unlink(path.c_str());
        system_error(where, path, "cannot set up the new file", error);
      }
    }
#else
    (void)mode;
    b.f_ = std::fopen(path.c_str(), "wbx");
#endif
    if (!b.f_) {
      const int error = errno;
      if (exists && error == EEXIST) {
        *exists = true;
        return BinaryFile();
      }
      system_error(where, path, "cannot create", error);
    }
    b.buffer();
    b.position_ = 0;
    return b;
  }

  const std::string& path() const { return path_; }
  bool is_open() const { return f_ != nullptr; }
  /// Size at opening (reading) or bytes written so far (writing).
  std::uint64_t size() const { return size_; }

  /// Reads exactly @p n bytes at @p offset (beyond the end: a content error). Small reads are
  /// served from a 256 KiB window (a zip's headers and small entries: few system calls), large
  /// ones go straight into @p dst.
  void read_at(std::uint64_t offset, void* dst, std::size_t n) {
    if (n == 0) return;
    if (offset > size_ || n > size_ - offset)
      file_error(where_, path_, "read of " + std::to_string(n) + " bytes at offset " + std::to_string(offset) +
                                    " beyond the end of the file (" + std::to_string(size_) + " bytes)");
    unsigned char* out = static_cast<unsigned char*>(dst);
    while (n > 0) {
      if (offset >= window_offset_ && offset - window_offset_ < window_.size()) {
        const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(n, window_offset_ + window_.size() - offset));
        std::memcpy(out, window_.data() + (offset - window_offset_), k);
        out += k;
        offset += k;
        n -= k;
      } else if (n >= kDirectRead) {
        raw_read(offset, out, n);
        return;
      } else {
        window_.resize(static_cast<std::size_t>(std::min<std::uint64_t>(kWindow, size_ - offset)));
        window_offset_ = offset;
        raw_read(offset, window_.data(), window_.size());
      }
    }
  }

  /// Appends @p n bytes.
  void write(const void* data, std::size_t n) {
    if (n == 0) return;
    if (std::fwrite(data, 1, n, f_) != n) system_error(where_, path_, "write failed", errno);
    size_ += n;
    position_ = size_;
  }
  /// Overwrites bytes written earlier, then continues appending at the end.
  void write_at(std::uint64_t offset, const void* data, std::size_t n) {
    if (!seek(offset, SEEK_SET)) system_error(where_, path_, "cannot seek to " + std::to_string(offset), errno);
    if (std::fwrite(data, 1, n, f_) != n) system_error(where_, path_, "write failed", errno);
    if (!seek(size_, SEEK_SET)) system_error(where_, path_, "cannot seek to the end", errno);
    position_ = size_;
  }

  /// Flushes to the operating system and, where POSIX, to the disk (fsync).
  void sync() {
    if (std::fflush(f_) != 0) system_error(where_, path_, "write failed (flush)", errno);
#if defined(SPARSE_RTRL_POSIX_IO)
    if (::fsync(::fileno(f_)) != 0) system_error(where_, path_, "fsync failed", errno);
#endif
  }
  /// Closes, reporting a failed final write.
  void close() {
    std::FILE* f = f_;
    f_ = nullptr;
    if (f && std::fclose(f) != 0) system_error(where_, path_, "close failed", errno);
  }

 private:
  BinaryFile(std::string path, std::string where) : path_(std::move(path)), where_(std::move(where)) {}

  static constexpr std::size_t kWindow = std::size_t(1) << 18, kDirectRead = std::size_t(1) << 16;

  void raw_read(std::uint64_t offset, unsigned char* dst, std::size_t n) {
    if (position_ != offset) {
      if (!seek(offset, SEEK_SET)) system_error(where_, path_, "cannot seek to " + std::to_string(offset), errno);
      position_ = offset;
    }
    const std::size_t got = std::fread(dst, 1, n, f_);
    position_ += got;
    if (got != n) {
      if (std::ferror(f_)) system_error(where_, path_, "read failed", errno);
      file_error(where_, path_, "the file ended at byte " + std::to_string(offset + got) + ", expected " +
                                    std::to_string(offset + n) + " bytes (was it truncated while being read?)");
    }
  }

  void buffer() { std::setvbuf(f_, nullptr, _IOFBF, std::size_t(1) << 20); }
  bool seek(std::uint64_t offset, int whence) {
    if (offset > std::uint64_t(std::numeric_limits<std::int64_t>::max())) return false;
#if defined(_WIN32)
    return _fseeki64(f_, std::int64_t(offset), whence) == 0;
#else
    return fseeko(f_, off_t(offset), whence) == 0;
#endif
  }
  std::int64_t tell() {
#if defined(_WIN32)
    return _ftelli64(f_);
#else
    return std::int64_t(ftello(f_));
#endif
  }

  std::FILE* f_ = nullptr;
  std::string path_, where_;
  std::uint64_t size_ = 0, position_ = 0;
  std::vector<unsigned char> window_;  // reading: bytes [window_offset_, + size()) of the file
  std::uint64_t window_offset_ = 0;
};

/// The file a save to @p path must replace: @p path with its symbolic links followed (a
/// relative link is relative to the link's directory), so a save writes through a link instead
/// of replacing the link by a regular file. A link to a missing file gives the missing file's
/// path (the save creates it). Throws std::runtime_error after 40 links (a loop).
inline std::string resolve_symlinks(std::string path, const std::string& where) {
#if defined(SPARSE_RTRL_POSIX_IO)
  for (int hops = 0; hops < 40; ++hops) {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return path;
    std::vector<char> buf(std::size_t(st.st_size > 0 ? st.st_size : 4095) + 1);
    const ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
    if (n <= 0 || std::size_t(n) >= buf.size()) system_error(where, path, "cannot read the symbolic link", errno);
    std::string link(buf.data(), std::size_t(n));
    const std::size_t slash = path.find_last_of('/');
    if (link[0] != '/' && slash != std::string::npos) link = path.substr(0, slash + 1) + link;
    path = std::move(link);
  }
  system_error(where, path, "too many levels of symbolic links", ELOOP);
#else
  (void)where;
  return path;
#endif
}

/// Permission bits of an existing @p path (following links), or -1 when there is none (or not
/// POSIX).
inline int existing_mode(const std::string& path) {
#if defined(SPARSE_RTRL_POSIX_IO)
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return int(st.st_mode & 07777);
#else
  (void)path;
#endif
  return -1;
}

/// Removes the temporary files that saves to @p target by processes that no longer exist left
/// behind (a process killed while saving: its destructor never ran). Only regular files named
/// exactly "<target's name>.tmp-<pid>-<counter>" (decimal numbers) in the target's directory,
/// whose pid is not this process and names no live process, are removed; best effort (errors
/// are ignored). A pid is judged on this machine: do not save to one file from several
/// machines, or PID namespaces, at once.
inline void remove_stale_temporaries(const std::string& target) {
#if defined(SPARSE_RTRL_POSIX_IO)
  const std::size_t slash = target.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : target.substr(0, slash));
  const std::string prefix = (slash == std::string::npos ? target : target.substr(slash + 1)) + ".tmp-";
  // Reads a decimal number of 1-10 digits (what pids and our counter take) at name[p],
  // advancing p past all digits; -1 if there is none or it is longer.
  auto number = [](const std::string& name, std::size_t& p) -> long long {
    long long v = 0;
    std::size_t digits = 0;
    for (; p < name.size() && name[p] >= '0' && name[p] <= '9'; ++p, ++digits)
      if (digits < 10) v = v * 10 + (name[p] - '0');
    return digits >= 1 && digits <= 10 ? v : -1;
  };
  std::vector<std::string> stale;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
      std::size_t p = prefix.size();
      const long long pid = number(name, p);
      if (pid <= 0 || pid > std::numeric_limits<pid_t>::max() || p >= name.size() || name[p] != '-') continue;
      ++p;
      if (number(name, p) < 0 || p != name.size()) continue;
      if (pid == ::getpid()) continue;  // ours: another writer of this process may be busy
      if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;  // alive (EPERM: someone else's)
      stale.push_back(dir + "/" + name);
    }
    ::closedir(d);
  }
  for (const std::string& f : stale) {
    struct stat st;
    if (::lstat(f.c_str(), &st) == 0 && S_ISREG(st.st_mode)) (void)::unlink(f.c_str());
  }
#else
  (void)target;
#endif
}

/// A broken promise of our own code (not of a file): std::logic_error.
inline void zip_require(bool ok, const char* what) {
  if (!ok) throw std::logic_error(std::string("sparse_rtrl internal error: ") + what);
}

// ---- Zip records (APPNOTE 4.3.7, 4.3.12, 4.3.14-16). ----
constexpr std::uint32_t kLocalHeaderSig = 0x04034b50u;
constexpr std::uint32_t kCentralHeaderSig = 0x02014b50u;
constexpr std::uint32_t kEndSig = 0x06054b50u;
constexpr std::uint32_t kZip64EndSig = 0x06064b50u;
constexpr std::uint32_t kZip64LocatorSig = 0x07064b50u;
constexpr std::size_t kLocalHeaderSize = 30, kCentralHeaderSize = 46, kEndSize = 22, kZip64EndSize = 56,
                      kZip64LocatorSize = 20;
constexpr std::uint32_t kMax32 = 0xFFFFFFFFu;
constexpr std::uint16_t kMax16 = 0xFFFFu;
constexpr std::uint16_t kDosDate1980 = 0x0021;  // 1980-01-01: the same contents give the same file

/// @brief Writes a zip of stored entries, sequentially, to a BinaryFile.
///
/// Per entry: begin(name, size), write() exactly size bytes, end(). The CRC-32 is computed on
/// the way: entries up to 1 MiB are held and written with their header at end(); larger ones
/// are written through and their CRC patched into the local header at finish() (one pass). An entry,
/// offset or count beyond the 32/16-bit fields gets Zip64 records (force_zip64: always, which
/// is what numpy.savez does for every entry, and how the tests exercise them on small files).
class ZipWriter {
 public:
  ZipWriter(BinaryFile& file, bool force_zip64 = false) : file_(&file), force_zip64_(force_zip64) {}

  void begin(const std::string& name, std::uint64_t size) {
    zip_require(!open_, "ZipWriter::begin() inside an entry");
    zip_require(name.size() > 0 && name.size() < kMax16, "ZipWriter: entry name length");
    Entry e;
    e.name = name;
    e.size = size;
    e.offset = file_->size();
    e.zip64 = force_zip64_ || size >= kMax32;
    // Small entries are held until end(), so their header is written once, CRC included;
    // large ones are written through and their CRC patched in at finish().
    buffered_ = size <= kBufferLimit;
    if (buffered_) {
      buffer_.clear();
      buffer_.reserve(static_cast<std::size_t>(size));
    } else {
      const std::string h = local_header(e, 0);
      file_->write(h.data(), h.size());
      patches_.push_back(entries_.size());
    }
    entries_.push_back(std::move(e));
    crc_ = 0;
    written_ = 0;
    open_ = true;
  }

  void write(const void* data, std::size_t n) {
    zip_require(open_ && n <= entries_.back().size - written_, "ZipWriter::write() beyond the entry");
    crc_ = crc32_update(crc_, data, n);
    if (buffered_)
      buffer_.append(static_cast<const char*>(data), n);
    else
      file_->write(data, n);
    written_ += n;
  }

  void end() {
    zip_require(open_ && written_ == entries_.back().size, "ZipWriter::end() before the entry's size");
    Entry& e = entries_.back();
    e.crc = crc_;
    if (buffered_) {
      const std::string h = local_header(e, crc_);
      file_->write(h.data(), h.size());
      file_->write(buffer_.data(), buffer_.size());
    }
    open_ = false;
  }

  /// Writes the central directory and end records, and patches every local header's CRC-32.
  void finish() {
    zip_require(!open_, "ZipWriter::finish() inside an entry");
    const std::uint64_t cd_offset = file_->size();
    std::string cd;
    for (const Entry& e : entries_) {
      const bool big_offset = e.offset >= kMax32;
      const bool zip64 = e.zip64 || big_offset;
      put_u32(cd, kCentralHeaderSig);
      put_u16(cd, (3u << 8) | 45u);  // made by: UNIX, 4.5
      put_u16(cd, zip64 ? 45 : 20);
      put_u16(cd, 0);
      put_u16(cd, 0);
      put_u16(cd, 0);
      put_u16(cd, kDosDate1980);
      put_u32(cd, e.crc);
      put_u32(cd, zip64 ? kMax32 : std::uint32_t(e.size));
      put_u32(cd, zip64 ? kMax32 : std::uint32_t(e.size));
      put_u16(cd, std::uint32_t(e.name.size()));
      put_u16(cd, zip64 ? 28 : 0);
      put_u16(cd, 0);                  // comment
      put_u16(cd, 0);                  // disk number start
      put_u16(cd, 0);                  // internal attributes
      put_u32(cd, 0100644u << 16);     // external: a regular file, rw-r--r--
      put_u32(cd, zip64 ? kMax32 : std::uint32_t(e.offset));
      cd += e.name;
      if (zip64) {
        put_u16(cd, 0x0001);
        put_u16(cd, 24);
        put_u64(cd, e.size);
        put_u64(cd, e.size);
        put_u64(cd, e.offset);
      }
    }
    file_->write(cd.data(), cd.size());
    const std::uint64_t cd_size = cd.size();
    const std::uint64_t count = entries_.size();
    const bool zip64_end = force_zip64_ || count >= kMax16 || cd_offset >= kMax32 || cd_size >= kMax32;
    std::string end;
    if (zip64_end) {
      const std::uint64_t z64_offset = file_->size();
      put_u32(end, kZip64EndSig);
      put_u64(end, kZip64EndSize - 12);
      put_u16(end, (3u << 8) | 45u);
      put_u16(end, 45);
      put_u32(end, 0);
      put_u32(end, 0);
      put_u64(end, count);
      put_u64(end, count);
      put_u64(end, cd_size);
      put_u64(end, cd_offset);
      put_u32(end, kZip64LocatorSig);
      put_u32(end, 0);
      put_u64(end, z64_offset);
      put_u32(end, 1);
    }
    put_u32(end, kEndSig);
    put_u16(end, 0);
    put_u16(end, 0);
    put_u16(end, zip64_end ? kMax16 : std::uint32_t(count));
    put_u16(end, zip64_end ? kMax16 : std::uint32_t(count));
    put_u32(end, zip64_end ? kMax32 : std::uint32_t(cd_size));
    put_u32(end, zip64_end ? kMax32 : std::uint32_t(cd_offset));
    put_u16(end, 0);
    file_->write(end.data(), end.size());
    for (std::size_t k : patches_) {
      std::string crc;
      put_u32(crc, entries_[k].crc);
      file_->write_at(entries_[k].offset + 14, crc.data(), crc.size());
    }
  }

 private:
  static constexpr std::uint64_t kBufferLimit = std::uint64_t(1) << 20;
  struct Entry {
    std::string name;
    std::uint64_t size = 0, offset = 0;
    std::uint32_t crc = 0;
    bool zip64 = false;
  };
  /// The local header of @p e (APPNOTE 4.3.7) with CRC-32 @p crc.
  static std::string local_header(const Entry& e, std::uint32_t crc) {
    std::string h;
    put_u32(h, kLocalHeaderSig);
    put_u16(h, e.zip64 ? 45 : 20);  // version needed: 4.5 for Zip64, 2.0 otherwise
    put_u16(h, 0);                  // flags: no data descriptor, no encryption
    put_u16(h, 0);                  // stored
    put_u16(h, 0);                  // time 00:00
    put_u16(h, kDosDate1980);
    put_u32(h, crc);
    put_u32(h, e.zip64 ? kMax32 : std::uint32_t(e.size));
    put_u32(h, e.zip64 ? kMax32 : std::uint32_t(e.size));
    put_u16(h, std::uint32_t(e.name.size()));
    put_u16(h, e.zip64 ? 20 : 0);
    h += e.name;
    if (e.zip64) {  // Zip64 extended information: both sizes, as a local header must have
      put_u16(h, 0x0001);
      put_u16(h, 16);
      put_u64(h, e.size);
      put_u64(h, e.size);
    }
    return h;
  }

  BinaryFile* file_;
  bool force_zip64_;
  std::vector<Entry> entries_;
  std::vector<std::size_t> patches_;  // entries whose CRC is patched in at finish()
  std::string buffer_;
  bool buffered_ = false;
  std::uint32_t crc_ = 0;
  std::uint64_t written_ = 0;
  bool open_ = false;
};

/// One entry of a zip read by ZipReader: where its stored bytes are and their CRC-32.
struct ZipEntry {
  std::string name;
  std::uint64_t header_offset = 0;  ///< of the local header
  std::uint64_t data_offset = 0;    ///< of the first data byte
  std::uint64_t size = 0;           ///< stored (= uncompressed) bytes
  std::uint32_t crc = 0;
};

/// @brief Reads the central directory of a zip of stored entries and checks its structure (see
/// the file comment); entries' data are read through ZipEntryReader, which checks the CRC-32.
class ZipReader {
 public:
  ZipReader(BinaryFile file, std::string where) : file_(std::move(file)), where_(std::move(where)) { parse(); }

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(const std::string& name) const {
    const auto it = index_.find(name);
    return it == index_.end() ? nullptr : &entries_[it->second];
  }
  BinaryFile& file() { return file_; }
  const std::string& path() const { return file_.path(); }
  const std::string& where() const { return where_; }
  [[noreturn]] void fail(const std::string& what) const { file_error(where_, file_.path(), what); }

 private:
  void parse() {
    const std::uint64_t size = file_.size();
    if (size < kEndSize)
      fail(size == 0 ? "the file is empty (not a .npz/zip file, or a checkpoint whose write never completed)"
                     : "only " + std::to_string(size) + " bytes: too short for a zip file (truncated?)");
    // The end record is the last 22 bytes plus a comment of up to 65535 bytes: find the record
    // whose comment ends exactly at the end of the file.
    const std::uint64_t tail = std::min<std::uint64_t>(size, kEndSize + 0xFFFFu);
    std::vector<unsigned char> buf(static_cast<std::size_t>(tail));
    file_.read_at(size - tail, buf.data(), buf.size());
    std::int64_t at = -1;
    for (std::int64_t i = std::int64_t(tail) - std::int64_t(kEndSize); i >= 0; --i) {
      const unsigned char* p = buf.data() + i;
      if (get_u32(p) == kEndSig && std::uint64_t(i) + kEndSize + get_u16(p + 20) == tail) {
        at = i;
        break;
      }
    }
    if (at < 0)
      fail("no zip end-of-central-directory record at the end of the file: not a .npz/zip file, or truncated");
    const unsigned char* e = buf.data() + at;
    const std::uint64_t end_offset = size - tail + std::uint64_t(at);
    std::uint64_t count = get_u16(e + 10), cd_size = get_u32(e + 12), cd_offset = get_u32(e + 16);
    if (get_u16(e + 4) != 0 || get_u16(e + 6) != 0 || get_u16(e + 8) != get_u16(e + 10))
      fail("a multi-disk (split) zip archive: not supported");
    std::uint64_t cd_end = end_offset;  // the central directory must end where the next record begins
    const bool saturated = count == kMax16 || cd_size == kMax32 || cd_offset == kMax32;
    bool has_locator = false;
    unsigned char loc[kZip64LocatorSize];
    if (end_offset >= kZip64LocatorSize) {
      file_.read_at(end_offset - kZip64LocatorSize, loc, sizeof loc);
      has_locator = get_u32(loc) == kZip64LocatorSig;
    }
    if (has_locator) {
      if (get_u32(loc + 4) != 0 || get_u32(loc + 16) != 1) fail("a multi-disk (split) Zip64 archive: not supported");
      const std::uint64_t z64 = get_u64(loc + 8);
      if (z64 > end_offset - kZip64LocatorSize || end_offset - kZip64LocatorSize - z64 < kZip64EndSize)
        fail("the Zip64 end record's offset " + std::to_string(z64) + " is outside the file");
      unsigned char r[kZip64EndSize];
      file_.read_at(z64, r, sizeof r);
      if (get_u32(r) != kZip64EndSig) fail("no Zip64 end-of-central-directory record where its locator points");
      if (z64 + 12 + get_u64(r + 4) != end_offset - kZip64LocatorSize)
        fail("the Zip64 end record's size does not reach its locator (corrupted)");
      if (get_u32(r + 16) != 0 || get_u32(r + 20) != 0 || get_u64(r + 24) != get_u64(r + 32))
        fail("a multi-disk (split) Zip64 archive: not supported");
      count = get_u64(r + 32);
      cd_size = get_u64(r + 40);
      cd_offset = get_u64(r + 48);
      cd_end = z64;
    } else if (saturated) {
      fail("the end record's fields are saturated (Zip64) but there is no Zip64 end record (corrupted)");
    }
    if (cd_offset > cd_end || cd_end - cd_offset != cd_size)
      fail("the central directory (offset " + std::to_string(cd_offset) + ", " + std::to_string(cd_size) +
           " bytes) does not end where the end record begins (offset " + std::to_string(cd_end) +
           "): truncated or corrupted");
    if (count > cd_size / kCentralHeaderSize)
      fail("the end record lists " + std::to_string(count) + " entries, more than a central directory of " +
           std::to_string(cd_size) + " bytes can hold (corrupted)");
    std::vector<unsigned char> cd(static_cast<std::size_t>(cd_size));
    file_.read_at(cd_offset, cd.data(), cd.size());
    std::size_t p = 0;
    entries_.reserve(static_cast<std::size_t>(count));
    for (std::uint64_t k = 0; k < count; ++k) entries_.push_back(parse_central(cd, p, k, cd_offset));
    if (p != cd.size())
      fail("the central directory has " + std::to_string(cd.size() - p) + " bytes after its " + std::to_string(count) +
           " entries (corrupted)");
    // Local headers, and no two entries overlapping (each entry's bytes lie before the next one).
    std::vector<std::size_t> order(entries_.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](std::size_t a, std::size_t b) { return entries_[a].header_offset < entries_[b].header_offset; });
    for (std::size_t r = 0; r < order.size(); ++r) {
      ZipEntry& z = entries_[order[r]];
      const std::uint64_t limit = r + 1 < order.size() ? entries_[order[r + 1]].header_offset : cd_offset;
      check_local(z, limit);
    }
    for (std::size_t i = 0; i < entries_.size(); ++i)
      if (!index_.emplace(entries_[i].name, i).second) fail("entry '" + entries_[i].name + "' appears twice");
  }

  ZipEntry parse_central(const std::vector<unsigned char>& cd, std::size_t& p, std::uint64_t k,
                         std::uint64_t cd_offset) {
    const std::string which = "central directory record " + std::to_string(k);
    if (cd.size() - p < kCentralHeaderSize || get_u32(cd.data() + p) != kCentralHeaderSig)
      fail(which + " (at offset " + std::to_string(cd_offset + p) + ") is missing or damaged");
    const unsigned char* h = cd.data() + p;
    const std::uint16_t flags = get_u16(h + 8), method = get_u16(h + 10);
    const std::size_t nlen = get_u16(h + 28), xlen = get_u16(h + 30), clen = get_u16(h + 32);
    if (cd.size() - p - kCentralHeaderSize < nlen + xlen + clen) fail(which + " runs past the central directory");
    ZipEntry z;
    // An empty name is no array numpy could name (and it would reach memcmp with a null
    // pointer when the local header is compared below).
    if (nlen == 0) fail(which + " has an empty entry name (not a .npz entry)");
    z.name.assign(reinterpret_cast<const char*>(h + kCentralHeaderSize), nlen);
    const std::string entry = "entry '" + z.name + "'";
    if (flags & 0x0001u) fail(entry + " is encrypted: not supported");
    if (method != 0)
      fail(entry + " is compressed (method " + std::to_string(method) +
           "): only stored entries are read (numpy.savez, not numpy.savez_compressed)");
    z.crc = get_u32(h + 16);
    std::uint64_t csize = get_u32(h + 20), usize = get_u32(h + 24), offset = get_u32(h + 42);
    std::uint32_t disk = get_u16(h + 34);
    const unsigned char* x = h + kCentralHeaderSize + nlen;
    bool found = false;
    for (std::size_t q = 0; q + 4 <= xlen;) {
      const std::uint16_t tag = get_u16(x + q), len = get_u16(x + q + 2);
      if (q + 4 + len > xlen) fail(entry + ": its central directory extra field is damaged");
      if (tag == 0x0001 && !found) {
        found = true;
        const unsigned char* v = x + q + 4;
        std::size_t left = len;
        auto take = [&](std::uint64_t& field) {
          if (left < 8) fail(entry + ": its Zip64 extra field is too short");
          field = get_u64(v);
          v += 8;
          left -= 8;
        };
        if (usize == kMax32) take(usize);
        if (csize == kMax32) take(csize);
        if (offset == kMax32) take(offset);
        if (disk == kMax16) {
          if (left < 4) fail(entry + ": its Zip64 extra field is too short");
          disk = get_u32(v);
        }
      }
      q += 4 + std::size_t(len);
    }
    if (disk != 0) fail(entry + " starts on disk " + std::to_string(disk) + " (split archives are not supported)");
    if (csize != usize)
      fail(entry + ": stored size " + std::to_string(csize) + " differs from its size " + std::to_string(usize));
    if (usize == kMax32 || offset == kMax32)
      fail(entry + ": its sizes or offset need a Zip64 extra field, which is missing");
    z.size = usize;
    z.header_offset = offset;
    p += kCentralHeaderSize + nlen + xlen + clen;
    return z;
  }

  /// Checks the local header against the central record and finds the data; the entry's bytes
  /// must end at or before @p limit (the next entry, or the central directory).
  void check_local(ZipEntry& z, std::uint64_t limit) {
    const std::string entry = "entry '" + z.name + "'";
    if (z.header_offset > limit || limit - z.header_offset < kLocalHeaderSize)
      fail(entry + ": its local header (offset " + std::to_string(z.header_offset) +
           ") overlaps the next entry or the central directory");
    unsigned char h[kLocalHeaderSize];
    file_.read_at(z.header_offset, h, sizeof h);
    if (get_u32(h) != kLocalHeaderSig)
      fail(entry + ": no local header at offset " + std::to_string(z.header_offset) + " (corrupted)");
    const std::uint16_t flags = get_u16(h + 6), method = get_u16(h + 8);
    const std::size_t nlen = get_u16(h + 26), xlen = get_u16(h + 28);
    if (limit - z.header_offset - kLocalHeaderSize < nlen + xlen)
      fail(entry + ": its local header runs into the next entry");
    std::vector<unsigned char> rest(nlen + xlen);
    file_.read_at(z.header_offset + kLocalHeaderSize, rest.data(), rest.size());
    if (nlen != z.name.size() || std::memcmp(rest.data(), z.name.data(), nlen) != 0)
      fail(entry + ": the local header names '" + std::string(reinterpret_cast<const char*>(rest.data()), nlen) +
           "' (the central directory and the local header disagree: corrupted)");
    if (method != 0) fail(entry + ": the local header says compressed (method " + std::to_string(method) + ")");
    if (flags & 0x0001u) fail(entry + ": the local header says encrypted");
    if (!(flags & 0x0008u)) {  // without a data descriptor the local header repeats CRC and sizes
      std::uint64_t csize = get_u32(h + 18), usize = get_u32(h + 22);
      if (csize == kMax32 || usize == kMax32) {
        const unsigned char* x = rest.data() + nlen;
        bool found = false;
        for (std::size_t q = 0; q + 4 <= xlen;) {
          const std::uint16_t tag = get_u16(x + q), len = get_u16(x + q + 2);
          if (q + 4 + len > xlen) fail(entry + ": its local extra field is damaged");
          if (tag == 0x0001 && !found) {
            found = true;
            std::size_t left = len;
            const unsigned char* v = x + q + 4;
            if (usize == kMax32) {
              if (left < 8) fail(entry + ": its local Zip64 extra field is too short");
              usize = get_u64(v);
              v += 8;
              left -= 8;
            }
            if (csize == kMax32) {
              if (left < 8) fail(entry + ": its local Zip64 extra field is too short");
              csize = get_u64(v);
            }
          }
          q += 4 + std::size_t(len);
        }
        if (!found) fail(entry + ": its local header needs a Zip64 extra field, which is missing");
      }
      if (get_u32(h + 14) != z.crc || csize != z.size || usize != z.size)
        fail(entry + ": the local header (CRC " + hex32(get_u32(h + 14)) + ", " + std::to_string(usize) +
             " bytes) disagrees with the central directory (CRC " + hex32(z.crc) + ", " + std::to_string(z.size) +
             " bytes): corrupted");
    }
    z.data_offset = z.header_offset + kLocalHeaderSize + nlen + xlen;
    if (z.size > limit - z.data_offset)
      fail(entry + ": its " + std::to_string(z.size) + " bytes at offset " + std::to_string(z.data_offset) +
           " run past the next entry or the central directory (truncated or corrupted)");
  }

  BinaryFile file_;
  std::string where_;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, std::size_t> index_;
};

/// @brief Reads one entry's bytes in order, computing their CRC-32; finish() checks that every
/// byte was read and the CRC-32 matches (std::invalid_argument naming the entry otherwise).
class ZipEntryReader {
 public:
  ZipEntryReader(ZipReader& zip, const ZipEntry& entry) : zip_(&zip), entry_(&entry) {}

  std::uint64_t remaining() const { return entry_->size - done_; }
  /// Reads the next @p n bytes (an entry shorter than that is a content error naming it).
  void read(void* dst, std::size_t n) {
    if (n > remaining())
      zip_->fail("entry '" + entry_->name + "' has " + std::to_string(entry_->size) + " bytes, expected at least " +
                 std::to_string(done_ + n));
    zip_->file().read_at(entry_->data_offset + done_, dst, n);
    crc_ = crc32_update(crc_, dst, n);
    done_ += n;
  }
  /// Reads (and checks) whatever is left, then the CRC-32.
  void finish() {
    std::vector<unsigned char> buf(static_cast<std::size_t>(std::min<std::uint64_t>(remaining(), 1u << 20)));
    while (remaining() > 0) read(buf.data(), static_cast<std::size_t>(std::min<std::uint64_t>(remaining(), buf.size())));
    if (crc_ != entry_->crc)
      zip_->fail("entry '" + entry_->name + "': CRC-32 mismatch (stored " + hex32(entry_->crc) + ", computed " +
                 hex32(crc_) + "): the file is corrupted");
  }

 private:
  ZipReader* zip_;
  const ZipEntry* entry_;
  std::uint64_t done_ = 0;
  std::uint32_t crc_ = 0;
};

}  // namespace detail
}  // namespace sparse_rtrl
