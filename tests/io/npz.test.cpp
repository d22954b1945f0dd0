// The .npz reader-writer: CRC-32 known answers; files written by NumPy (tests/data/npz, made by
// make_npz.py) read back with the values their script wrote; NumPy reading what we write (with
// and without Zip64 records); what is refused and how (an empty entry name too); atomic writes;
// names; control characters of names escaped in messages; a save keeps the replaced file's
// permissions, writes through symbolic links and removes killed saves' temporary files.
#include "io/io_support.hpp"

#include <sparse_rtrl/detail/crc32.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

using namespace sparse_rtrl;
using iotest::same_bits;

namespace {

std::string npz_data(const std::string& name) { return test::data_dir() + "/npz/" + name; }

/// The raw data of array @p name, as @p T values in file order.
template <typename T>
std::vector<T> raw_values(io::NpzReader& r, const std::string& name) {
  std::string bytes;
  r.read_data(name, [&](const unsigned char* p, std::size_t n) { bytes.append(reinterpret_cast<const char*>(p), n); });
  std::vector<T> v(bytes.size() / sizeof(T));
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), v.size() * sizeof(T));
  return v;
}

std::string what_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no std::invalid_argument)";
}

/// A zip of one stored entry written by hand (the library's writer refuses the names these tests
/// need): local header, data, central directory record, end record. @p method 8 claims deflate.
std::string one_entry_zip(const std::string& name, const std::string& data, unsigned method = 0) {
  auto u16 = [](std::string& o, unsigned v) { o.push_back(char(v & 0xFF)); o.push_back(char((v >> 8) & 0xFF)); };
  auto u32 = [&](std::string& o, std::uint32_t v) { u16(o, v & 0xFFFF); u16(o, v >> 16); };
  const std::uint32_t crc = detail::crc32(data.data(), data.size()), size = std::uint32_t(data.size());
  std::string z;
  u32(z, 0x04034b50); u16(z, 20); u16(z, 0); u16(z, method); u16(z, 0); u16(z, 0x21);
  u32(z, crc); u32(z, size); u32(z, size); u16(z, unsigned(name.size())); u16(z, 0);
  z += name + data;
  const std::uint32_t cd_offset = std::uint32_t(z.size());
  u32(z, 0x02014b50); u16(z, 20); u16(z, 20); u16(z, 0); u16(z, method); u16(z, 0); u16(z, 0x21);
  u32(z, crc); u32(z, size); u32(z, size); u16(z, unsigned(name.size())); u16(z, 0); u16(z, 0);
  u16(z, 0); u16(z, 0); u32(z, 0); u32(z, 0);
  z += name;
  const std::uint32_t cd_size = std::uint32_t(z.size()) - cd_offset;
  u32(z, 0x06054b50); u16(z, 0); u16(z, 0); u16(z, 1); u16(z, 1); u32(z, cd_size); u32(z, cd_offset); u16(z, 0);
  return z;
}

/// True when @p text holds no ASCII control character (a message that cannot forge a line).
bool no_control_characters(const std::string& text) {
  return std::none_of(text.begin(), text.end(), [](char c) { return (unsigned char)c < 0x20 || c == 0x7F; });
}

}  // namespace

TEST_CASE("CRC-32 gives the zip standard's known answers", "[io][npz]") {
  const std::string check = "123456789";  // the CRC catalogue's check string: 0xCBF43926
  REQUIRE(detail::crc32(check.data(), check.size()) == 0xCBF43926u);
  REQUIRE(detail::crc32("", 0) == 0u);
  const std::string fox = "The quick brown fox jumps over the lazy dog";
  REQUIRE(detail::crc32(fox.data(), fox.size()) == 0x414FA339u);
  // Longer inputs (a folding kernel on x86, tables elsewhere): values from Python's zlib.crc32 of
  // the same bytes.
  std::string text;
  for (int k = 0; k < 1000; ++k) text.push_back(char((k * 131 + 7) & 0xFF));
  REQUIRE(detail::crc32(text.data(), text.size()) == 0x1ed57bb9u);
  std::string mib;
  for (std::uint32_t k = 0; k < (1u << 20); ++k) mib.push_back(char((k * 7919u + 13u) & 0xFFu));
  REQUIRE(detail::crc32(mib.data(), mib.size()) == 0x402fb0bfu);
  // Both methods agree on every length and alignment, and pieces continue the same CRC.
  for (std::size_t n = 0; n <= 700; ++n)
    for (std::size_t offset : {std::size_t(0), std::size_t(3)}) {
      const std::uint32_t tables = detail::crc32_update(0, text.data() + offset, n, detail::Crc32Method::tables);
      REQUIRE(detail::crc32_update(0, text.data() + offset, n) == tables);
      REQUIRE(detail::crc32_update(detail::crc32(text.data() + offset, n / 3), text.data() + offset + n / 3,
                                   n - n / 3) == tables);
    }
}

namespace {

struct CrcPath {
  const char* name;
  detail::Crc32Method method;
};

/// The CRC-32 implementations this CPU runs, tables first; those it lacks are skipped, saying so.
std::vector<CrcPath> crc_paths_here() {
  const CrcPath all[] = {{"tables", detail::Crc32Method::tables},
                         {"PCLMULQDQ", detail::Crc32Method::pclmul},
                         {"AVX-512 VPCLMULQDQ", detail::Crc32Method::vpclmul},
                         {"automatic", detail::Crc32Method::automatic}};
  std::vector<CrcPath> paths;
  for (const CrcPath& path : all) {
    if (detail::crc32_method_supported(path.method))
      paths.push_back(path);
    else
      WARN("skipped: the " << path.name << " CRC-32 (this CPU or build does not have it)");
  }
  return paths;
}

std::vector<unsigned char> random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<unsigned char> v(n);
  for (auto& b : v) b = static_cast<unsigned char>(rng() >> 56);
  return v;
}

}  // namespace

TEST_CASE("Every CRC-32 implementation gives the known answers", "[io][npz][crc]") {
  REQUIRE(detail::crc32_method_supported(detail::Crc32Method::tables));
  REQUIRE(detail::crc32_method_supported(detail::Crc32Method::automatic));
  const std::string check = "123456789";
  std::string repeated;  // long enough for every folding loop; zlib.crc32(b"123456789" * 1000)
  for (int k = 0; k < 1000; ++k) repeated += check;
  std::string text;  // zlib.crc32(bytes((k * 131 + 7) & 255 for k in range(4099)))
  for (int k = 0; k < 4099; ++k) text.push_back(char((k * 131 + 7) & 0xFF));
  std::string mib;  // as in the test above
  for (std::uint32_t k = 0; k < (1u << 20); ++k) mib.push_back(char((k * 7919u + 13u) & 0xFFu));
  for (const CrcPath& path : crc_paths_here()) {
    INFO(path.name);
    REQUIRE(detail::crc32_update(0, check.data(), check.size(), path.method) == 0xCBF43926u);
    REQUIRE(detail::crc32_update(0, check.data(), 0, path.method) == 0u);
    REQUIRE(detail::crc32_update(0, repeated.data(), repeated.size(), path.method) == 0x407589cfu);
    REQUIRE(detail::crc32_update(0, text.data(), text.size(), path.method) == 0xdfade85au);
    REQUIRE(detail::crc32_update(0, mib.data(), mib.size(), path.method) == 0x402fb0bfu);
  }
}

TEST_CASE("Every CRC-32 implementation agrees with the tables on every length and alignment", "[io][npz][crc]") {
  // Every length to 2000 (each folding loop run 0, 1, several times, with every remainder of 64
  // and 16 bytes) and a few long ones, each at every offset modulo 64 from a 64-byte boundary.
  const std::size_t big = (std::size_t(1) << 20) + 13;
  const std::vector<unsigned char> bytes = random_bytes(big + 128, 1);
  const unsigned char* base = bytes.data() + (64 - reinterpret_cast<std::uintptr_t>(bytes.data()) % 64) % 64;
  std::vector<std::size_t> lengths;
  for (std::size_t n = 0; n <= 2000; ++n) lengths.push_back(n);
  for (std::size_t n : {std::size_t(4096 + 15), std::size_t(65536 + 3 * 64 + 48 + 7), std::size_t(100000), big})
    lengths.push_back(n);
  const std::vector<CrcPath> paths = crc_paths_here();
  std::size_t compared = 0;
  for (std::size_t n : lengths)
    for (std::size_t offset = 0; offset < 64; ++offset) {
      const std::uint32_t want = detail::crc32_update(0, base + offset, n, detail::Crc32Method::tables);
      for (const CrcPath& path : paths) {
        const std::uint32_t got = detail::crc32_update(0, base + offset, n, path.method);
        if (got != want)
          FAIL(path.name << ": length " << n << " at offset " << offset << " gives " << std::hex << got
                         << ", the tables " << want);
        // Continuing a CRC: from one that is not 0 (the first byte's).
        if (n > 0) {
          const std::uint32_t first = detail::crc32_update(0, base + offset, 1, detail::Crc32Method::tables);
          const std::uint32_t rest = detail::crc32_update(first, base + offset + 1, n - 1, path.method);
          if (rest != want) FAIL(path.name << ": length " << n - 1 << " at offset " << offset + 1 << " continued");
        }
        ++compared;
      }
    }
  REQUIRE(compared == lengths.size() * 64 * paths.size());
}

TEST_CASE("Every CRC-32 implementation continues a CRC over random pieces as over the whole", "[io][npz][crc]") {
  const std::vector<unsigned char> bytes = random_bytes((std::size_t(1) << 20) + 200, 2);
  const std::vector<CrcPath> paths = crc_paths_here();
  std::mt19937_64 rng(3);
  const auto below = [&](std::size_t n) { return n == 0 ? std::size_t(0) : std::size_t(rng() % n); };
  for (int trial = 0; trial < 400; ++trial) {
    const std::size_t n = trial % 50 == 0 ? (std::size_t(1) << 20) + below(100) : below(trial % 2 ? 600 : 20000);
    const unsigned char* p = bytes.data() + below(64);
    const std::uint32_t whole = detail::crc32_update(0, p, n, detail::Crc32Method::tables);
    std::vector<std::size_t> cuts{0, n};
    for (std::size_t k = 1 + below(8); k > 0; --k) cuts.push_back(below(n + 1));  // empty pieces too
    std::sort(cuts.begin(), cuts.end());
    // Each path on its own, then the pieces shared out among the paths at random.
    for (std::size_t which = 0; which <= paths.size(); ++which) {
      std::uint32_t crc = 0;
      for (std::size_t k = 0; k + 1 < cuts.size(); ++k) {
        const CrcPath& path = which < paths.size() ? paths[which] : paths[below(paths.size())];
        crc = detail::crc32_update(crc, p + cuts[k], cuts[k + 1] - cuts[k], path.method);
      }
      INFO("trial " << trial << ", " << n << " bytes in " << cuts.size() - 1 << " pieces, "
                    << (which < paths.size() ? paths[which].name : "mixed"));
      REQUIRE(crc == whole);
    }
  }
}

TEST_CASE("Files written by numpy.savez read back with their values", "[io][npz]") {
  io::NpzReader r(npz_data("types.npz"));
  const std::vector<std::string> names{"f4", "f8_fortran", "i1", "u1", "i2", "u2", "i4",
                                       "u4", "i8", "u8", "b1", "scalar", "empty", "cube"};
  REQUIRE(r.names() == names);
  Eigen::MatrixXf f4(3, 4);
  r.read_into("f4", f4);
  for (Index i = 0; i < 3; ++i)
    for (Index j = 0; j < 4; ++j) REQUIRE(f4(i, j) == 0.5f * float(4 * i + j));
  REQUIRE_FALSE(r.info("f4").fortran_order);
  REQUIRE(r.info("f8_fortran").fortran_order);
  Eigen::MatrixXd f8(2, 3);
  r.read_into("f8_fortran", f8);  // Fortran order, read into the matrix as numpy shows it
  for (Index i = 0; i < 2; ++i)
    for (Index j = 0; j < 3; ++j) REQUIRE(f8(i, j) == 0.25 * double(3 * i + j));
  REQUIRE(raw_values<std::int8_t>(r, "i1") == std::vector<std::int8_t>{-128, 0, 127});
  REQUIRE(raw_values<std::uint8_t>(r, "u1") == std::vector<std::uint8_t>{0, 255});
  REQUIRE(raw_values<std::int16_t>(r, "i2") == std::vector<std::int16_t>{-300, 300});
  REQUIRE(raw_values<std::uint16_t>(r, "u2") == std::vector<std::uint16_t>{65535});
  REQUIRE(raw_values<std::int32_t>(r, "i4") == std::vector<std::int32_t>{-70000});
  REQUIRE(raw_values<std::uint32_t>(r, "u4") == std::vector<std::uint32_t>{4000000000u});
  REQUIRE(raw_values<std::int64_t>(r, "i8") == std::vector<std::int64_t>{-(std::int64_t(1) << 40)});
  REQUIRE(raw_values<std::uint64_t>(r, "u8") == std::vector<std::uint64_t>{std::uint64_t(1) << 63});
  for (const auto& [name, type] : {std::pair<const char*, io::Dtype>{"i1", io::Dtype::int8}, {"u1", io::Dtype::uint8},
                                   {"i2", io::Dtype::int16}, {"u2", io::Dtype::uint16}, {"i4", io::Dtype::int32},
                                   {"u4", io::Dtype::uint32}, {"i8", io::Dtype::int64}, {"u8", io::Dtype::uint64},
                                   {"b1", io::Dtype::boolean}, {"cube", io::Dtype::float64}})
    REQUIRE(r.info(name).dtype == type);
  Eigen::Array<bool, Eigen::Dynamic, 1> b(3);
  r.read_into("b1", b);
  REQUIRE((b(0) && !b(1) && b(2)));
  REQUIRE(r.read_scalar<double>("scalar") == 2.5);
  REQUIRE(r.info("scalar").shape.empty());
  REQUIRE(r.info("empty").shape == std::vector<std::uint64_t>{0, 3});
  REQUIRE(raw_values<float>(r, "empty").empty());
  REQUIRE(r.info("cube").shape == std::vector<std::uint64_t>{2, 3, 4});
  const auto cube = raw_values<double>(r, "cube");
  for (std::size_t k = 0; k < 24; ++k) REQUIRE(cube[k] == double(k));
  r.verify_all();

  io::NpzReader v(npz_data("versions.npz"));  // .npy format versions 1.0, 2.0, 3.0
  for (int major = 1; major <= 3; ++major) {
    Eigen::VectorXd x(5);
    v.read_into("v" + std::to_string(major), x);
    for (Index k = 0; k < 5; ++k) REQUIRE(x(k) == double(k + major));
  }
}

TEST_CASE("What the reader refuses, it names", "[io][npz]") {
  CHECK_THAT(what_of([] { io::NpzReader r(npz_data("compressed.npz")); }),
             Catch::Contains("entry 'a.npy' is compressed (method 8)") && Catch::Contains("numpy.savez_compressed"));
  CHECK_THAT(what_of([] { io::NpzReader(npz_data("bigendian.npz")).info("a"); }),
             Catch::Contains("entry 'a': big-endian data ('>f4') is not supported"));
  CHECK_THAT(what_of([] { io::NpzReader(npz_data("structured.npz")).info("a"); }),
             Catch::Contains("structured dtypes are not supported"));
  CHECK_THAT(what_of([] { io::NpzReader(npz_data("object.npz")).info("a"); }),
             Catch::Contains("dtype '|O' is not supported"));
  io::NpzReader r(npz_data("types.npz"));
  CHECK_THAT(what_of([&] { r.info("nope"); }), Catch::Contains("entry 'nope' is missing"));
  Eigen::MatrixXd wrong(4, 3);
  CHECK_THAT(what_of([&] { r.read_into("f4", wrong); }),
             Catch::Contains("entry 'f4': expected <f8 (float64) of shape (4, 3), found <f4 (float32) of shape (3, 4)"));
  CHECK_THAT(what_of([&] { r.read_scalar<std::int64_t>("scalar"); }),
             Catch::Contains("entry 'scalar': expected <i8 (int64) of shape (), found <f8 (float64) of shape ()"));
  iotest::TempDir dir;
  iotest::write_bytes(dir.file("text.npz"), "not a zip file at all, but long enough to look for one");
  CHECK_THAT(what_of([&] { io::NpzReader x(dir.file("text.npz")); }),
             Catch::Contains("no zip end-of-central-directory record"));
  iotest::write_bytes(dir.file("empty.npz"), "");
  CHECK_THAT(what_of([&] { io::NpzReader x(dir.file("empty.npz")); }), Catch::Contains("the file is empty"));
  REQUIRE_THROWS_AS(io::NpzReader(dir.file("missing.npz")), std::runtime_error);
}

TEST_CASE("NumPy reads what we write, with and without Zip64 records", "[io][npz][numpy]") {
  iotest::TempDir dir;
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> row_major(2, 3);
  row_major << 1, 2, 3, 4, 5, 6;
  Eigen::Matrix3f fixed;
  fixed << 1, 2, 3, 4, 5, 6, 7, 8, 9;
  Eigen::MatrixXf col_major = fixed.transpose();
  Eigen::Array<bool, Eigen::Dynamic, Eigen::Dynamic> mask(2, 2);
  mask << true, false, false, true;
  const std::vector<std::int32_t> ints{-5, 0, 7};
  for (bool zip64 : {false, true}) {
    INFO("force_zip64 " << zip64);
    const std::string path = dir.file(zip64 ? "z64.npz" : "plain.npz");
    io::NpzWriter w(path, io::NpzWriterOptions{zip64});
    w.add("row_major", row_major);
    w.add("fixed", fixed);
    w.add("col_major", col_major);
    w.add("mask", mask);
    w.add("nested/vector", Eigen::VectorXd::LinSpaced(4, 0.0, 1.5));
    w.add_values("ints", ints.data(), ints.size());
    w.add_scalar("count", std::uint64_t(1) << 60);
    w.add_scalar("flag", true);
    w.add_array("cube", io::Dtype::int16, {2, 1, 3}, [](io::ByteSink& s) {
      const std::int16_t v[] = {0, -1, 2, -3, 4, -5};
      s.write_values(v, 6);
    });
    w.commit();
    REQUIRE(dir.listing() == (zip64 ? std::vector<std::string>{"plain.npz", "z64.npz"} : std::vector<std::string>{"plain.npz"}));

    io::NpzReader r(path);  // our reader, both forms
    Eigen::Matrix3f f;
    r.read_into("fixed", f);
    REQUIRE(same_bits(f, fixed));
    r.verify_all();

    const std::string python = iotest::python_with_numpy();
    if (python.empty()) {
      iotest::report_skip("no python3 with numpy (Debian: python3-numpy; cmake/dev.sh test installs it)");
      continue;
    }
    std::string out;
    REQUIRE(iotest::run(python + " " + iotest::npz_check_script() + " dump " + path, out) == 0);
    const auto dump = iotest::parse_dump(out);
    REQUIRE(dump.size() == 9);
    // numpy's view, against values written here (not read back by our reader):
    CHECK(dump.at("row_major").values == std::vector<std::string>{"0x1.0000000000000p+0", "0x1.0000000000000p+1",
                                                                   "0x1.8000000000000p+1", "0x1.0000000000000p+2",
                                                                   "0x1.4000000000000p+2", "0x1.8000000000000p+2"});
    CHECK(dump.at("row_major").shape == std::vector<std::uint64_t>{2, 3});
    for (const char* m : {"fixed", "col_major"}) {
      const auto& d = dump.at(m);
      CHECK(d.dtype == "<f4");
      for (std::size_t k = 0; k < 9; ++k) CHECK(d.number(k) == (std::string(m) == "fixed" ? double(k + 1) : double(3 * (k % 3) + k / 3 + 1)));
    }
    CHECK(dump.at("mask").dtype == "|b1");
    CHECK(dump.at("mask").values == std::vector<std::string>{"1", "0", "0", "1"});
    CHECK(dump.at("nested/vector").shape == std::vector<std::uint64_t>{4});
    CHECK(dump.at("nested/vector").number(3) == 1.5);
    CHECK(dump.at("ints").dtype == "<i4");
    CHECK(dump.at("ints").values == std::vector<std::string>{"-5", "0", "7"});
    CHECK(dump.at("count").dtype == "<u8");
    CHECK(dump.at("count").shape.empty());
    CHECK(dump.at("count").values == std::vector<std::string>{"1152921504606846976"});
    CHECK(dump.at("flag").values == std::vector<std::string>{"1"});
    CHECK(dump.at("cube").shape == std::vector<std::uint64_t>{2, 1, 3});
    CHECK(dump.at("cube").values == std::vector<std::string>{"0", "-1", "2", "-3", "4", "-5"});
  }
}

TEST_CASE("More than 65535 entries: a Zip64 end record, read by us and by NumPy", "[io][npz][numpy]") {
  iotest::TempDir dir;
  const std::string path = dir.file("many.npz");
  const int count = 65600;
  {
    io::NpzWriter w(path);
    for (int k = 0; k < count; ++k) w.add_scalar("e" + std::to_string(k), std::int32_t(k));
    w.commit();
  }
  io::NpzReader r(path);
  REQUIRE(r.names().size() == std::size_t(count));
  REQUIRE(r.read_scalar<std::int32_t>("e65599") == 65599);
  REQUIRE(r.read_scalar<std::int32_t>("e0") == 0);
  const std::string python = iotest::python_with_numpy();
  if (python.empty()) {
    iotest::report_skip("no python3 with numpy");
    return;
  }
  std::string out;
  REQUIRE(iotest::run(python + " -c \"import numpy; f = numpy.load('" + path +
                          "'); print(len(f.files), int(f['e65599']), int(f['e12345']))\"",
                      out) == 0);
  REQUIRE(out == "65600 65599 12345\n");
}

TEST_CASE("NpzWriter: names, atomic replacement, nothing left behind", "[io][npz]") {
  iotest::TempDir dir;
  const std::string path = dir.file("a.npz");
  {
    io::NpzWriter w(path);
    w.add_scalar("x", 1.0);
    w.commit();
    REQUIRE_THROWS_AS(w.add_scalar("y", 2.0), std::logic_error);
    REQUIRE_THROWS_AS(w.commit(), std::logic_error);
  }
  const std::string first = iotest::read_bytes(path);
  {
    io::NpzWriter w(path);
    w.add_scalar("x", 2.0);
    REQUIRE(dir.listing().size() == 2);  // the target and the temporary file
    for (const char* bad : {"", "a b", "/lead", "trail/", "a//b", "a/./b", "../up", "back\\slash"})
      REQUIRE_THROWS_AS(w.add_scalar(bad, 1.0), std::invalid_argument);
    REQUIRE_THROWS_WITH(w.add_scalar("x", 3.0), Catch::Contains("entry name 'x' was added twice"));
    // destroyed without commit(): the old file stays, the temporary file goes
  }
  REQUIRE(iotest::read_bytes(path) == first);
  REQUIRE(dir.listing() == std::vector<std::string>{"a.npz"});
  {
    io::NpzWriter w(path);
    w.add_scalar("x", 2.0);
    w.commit();
  }
  REQUIRE(io::NpzReader(path).read_scalar<double>("x") == 2.0);
  REQUIRE(dir.listing() == std::vector<std::string>{"a.npz"});
  // A temporary name left behind by a killed process is skipped, not overwritten.
  std::string stale;
  {
    io::NpzWriter w(path);
    const std::string t = w.temporary_path();  // <path>.tmp-<pid>-<k>: the next writer takes k + 1
    const std::size_t dash = t.find_last_of('-');
    stale = t.substr(0, dash + 1) + std::to_string(std::stoul(t.substr(dash + 1)) + 1);
  }
  iotest::write_bytes(stale, "left by a killed process");
  {
    io::NpzWriter w(path);
    REQUIRE(w.temporary_path() != stale);
    w.add_scalar("x", 2.0);
    w.commit();
  }
  REQUIRE(iotest::read_bytes(stale) == "left by a killed process");
  std::remove(stale.c_str());
  // The same contents give the same bytes (fixed timestamps): checkpoints can be compared.
  {
    io::NpzWriter w(dir.file("b.npz"));
    w.add_scalar("x", 2.0);
    w.commit();
  }
  REQUIRE(iotest::read_bytes(dir.file("b.npz")) == iotest::read_bytes(path));
}

TEST_CASE("An entry with an empty name is refused, naming the record", "[io][npz][errors]") {
  // It used to reach memcmp(NULL, ..., 0) (undefined behaviour, flagged by UBSan) and be accepted.
  iotest::TempDir dir;
  iotest::write_bytes(dir.file("empty_name.npz"), one_entry_zip("", "abc"));
  CHECK_THAT(what_of([&] { io::NpzReader r(dir.file("empty_name.npz")); }),
             Catch::Contains("central directory record 0 has an empty entry name"));
  // The builder is right: the same file with a name is read.
  iotest::write_bytes(dir.file("named.npz"), one_entry_zip("x", "abc"));
  io::NpzReader ok(dir.file("named.npz"));
  CHECK(ok.path() == dir.file("named.npz"));
}

TEST_CASE("Error messages escape control characters of file and entry names", "[io][npz][errors]") {
  iotest::TempDir dir;
  // An entry name from a file.
  iotest::write_bytes(dir.file("c.npz"), one_entry_zip("a\nb\x01.npy", "abc", 8));
  const std::string entry = what_of([&] { io::NpzReader r(dir.file("c.npz")); });
  CHECK_THAT(entry, Catch::Contains("entry 'a\\nb\\x01.npy' is compressed"));
  CHECK(no_control_characters(entry));
  // A file name given by the user (content and operating-system errors).
  const std::string odd = dir.file("bad\nname\x01.npz");
  iotest::write_bytes(odd, "not a zip file at all, but long enough to look for one");
  const std::string content = what_of([&] { io::NpzReader r(odd); });
  CHECK_THAT(content, Catch::Contains("bad\\nname\\x01.npz: no zip end-of-central-directory record"));
  CHECK(no_control_characters(content));
  std::string system;
  try {
    io::NpzReader r(dir.file("missing\n\x01.npz"));
  } catch (const std::runtime_error& e) {
    system = e.what();
  }
  CHECK_THAT(system, Catch::Contains("missing\\n\\x01.npz: cannot open for reading"));
  CHECK(no_control_characters(system));
  // An entry name given to the writer, and a checkpoint item's name.
  io::NpzWriter w(dir.file("w.npz"));
  const std::string written = what_of([&] { w.add_scalar("x\ny\x01", 1.0); });
  CHECK_THAT(written, Catch::Contains("entry name 'x\\ny\\x01' must be printable ASCII"));
  CHECK(no_control_characters(written));
  double value = 1;
  io::Checkpoint c;
  c.add("v\n\x01", value);
  const std::string taken = what_of([&] { c.add("v\n\x01", value); });
  CHECK_THAT(taken, Catch::Contains("the name 'v\\n\\x01' is taken"));
  CHECK(no_control_characters(taken));
  // Valid UTF-8 stays as it is; a lone invalid byte, DEL and a C1 control are escaped.
  CHECK(detail::printable("caf\xc3\xa9 \xe2\x82\xac") == "caf\xc3\xa9 \xe2\x82\xac");
  CHECK(detail::printable("a\xff" "b\x7f" "c\xc2\x85" "d\t\r") == "a\\xffb\\x7fc\\xc2\\x85d\\t\\r");
  CHECK(detail::printable(detail::printable("a\n\x01")) == detail::printable("a\n\x01"));  // idempotent
}

#if defined(__unix__) || defined(__APPLE__)
TEST_CASE("NpzWriter keeps the replaced file's permissions and writes through symbolic links", "[io][npz]") {
  iotest::TempDir dir;
  auto save = [](const std::string& path, double x) {
    io::NpzWriter w(path);
    w.add_scalar("x", x);
    w.commit();
  };
  auto mode_of = [](const std::string& path) {
    struct stat st;
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return int(st.st_mode & 07777);
  };
  // Permissions: kept exactly (0640 would become 0644 under umask 022 if the umask decided).
  const std::string secret = dir.file("secret.npz");
  save(secret, 1.0);
  for (int mode : {0600, 0640, 0604}) {
    REQUIRE(::chmod(secret.c_str(), mode_t(mode)) == 0);
    save(secret, 2.0);
    CHECK(mode_of(secret) == mode);
  }
  const mode_t mask = ::umask(022);
  ::umask(mask);
  save(dir.file("new.npz"), 1.0);  // a new file: the usual default
  CHECK(mode_of(dir.file("new.npz")) == int(0666 & ~mask));

  // A relative symbolic link into a subdirectory: the target is replaced, the link stays.
  namespace fs = std::filesystem;
  fs::create_directory(dir.file("sub"));
  save(dir.file("sub/real.npz"), 1.0);
  fs::create_symlink("sub/real.npz", dir.file("link.npz"));
  save(dir.file("link.npz"), 3.0);
  CHECK(fs::is_symlink(dir.file("link.npz")));
  CHECK(io::NpzReader(dir.file("sub/real.npz")).read_scalar<double>("x") == 3.0);
  // A link to a link, and a dangling link (the save creates its target).
  fs::create_symlink("link.npz", dir.file("link2.npz"));
  save(dir.file("link2.npz"), 4.0);
  CHECK(fs::is_symlink(dir.file("link2.npz")));
  CHECK(io::NpzReader(dir.file("sub/real.npz")).read_scalar<double>("x") == 4.0);
  fs::create_symlink("sub/later.npz", dir.file("dangling.npz"));
  save(dir.file("dangling.npz"), 5.0);
  CHECK(fs::is_symlink(dir.file("dangling.npz")));
  CHECK(io::NpzReader(dir.file("sub/later.npz")).read_scalar<double>("x") == 5.0);
  // No temporary file anywhere.
  CHECK(dir.listing() == std::vector<std::string>{"dangling.npz", "link.npz", "link2.npz", "new.npz", "secret.npz", "sub"});
  std::vector<std::string> in_sub;
  for (const auto& e : fs::directory_iterator(dir.file("sub"))) in_sub.push_back(e.path().filename().string());
  std::sort(in_sub.begin(), in_sub.end());
  CHECK(in_sub == std::vector<std::string>{"later.npz", "real.npz"});
  // A loop of links is refused.
  fs::create_symlink("loop_b.npz", dir.file("loop_a.npz"));
  fs::create_symlink("loop_a.npz", dir.file("loop_b.npz"));
  REQUIRE_THROWS_WITH(save(dir.file("loop_a.npz"), 1.0), Catch::Contains("too many levels of symbolic links"));
}

TEST_CASE("NpzWriter removes the temporary files of killed saves of the same target, only those", "[io][npz]") {
  iotest::TempDir dir;
  // A pid that names no process: a child that has exited and been reaped.
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  REQUIRE(child > 0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  const std::string dead = std::to_string(child), me = std::to_string(::getpid());
  const std::vector<std::string> stale = {"run.npz.tmp-" + dead + "-0", "run.npz.tmp-" + dead + "-17"};
  const std::vector<std::string> kept = {
      "run.npz.tmp-1-0",                // pid 1 is alive
      "run.npz.tmp-" + me + "-999",     // this process: another of its writers may be busy
      "other.npz.tmp-" + dead + "-0",   // another target
      "run.npz.tmp-" + dead + "-0x",    // not our exact pattern
      "run.npz.tmp-" + dead + "-",
      "run.npz.tmp-" + dead,
      "xrun.npz.tmp-" + dead + "-0",
      "run.npz.tmp-" + dead + "-0.bak",
      "run.npz.tmp-" + std::string(30, '9') + "-0",  // no pid: too long (and must not overflow)
  };
  for (const auto& f : stale) iotest::write_bytes(dir.file(f), "left by a killed save");
  for (const auto& f : kept) iotest::write_bytes(dir.file(f), "not ours to remove");
  {
    io::NpzWriter w(dir.file("run.npz"));
    w.add_scalar("x", 1.0);
    w.commit();
  }
  std::vector<std::string> expected = kept;
  expected.push_back("run.npz");
  std::sort(expected.begin(), expected.end());
  CHECK(dir.listing() == expected);
}
#endif
