// The influence matrix's panel storage (detail/influence_storage.hpp) and the propagation kernels
// (detail/propagate.hpp) against plain dense products: every column, including the padded last
// panel and the partial panel of the cross-layer term, on 1 to 3 threads (bitwise equal).
#include "test_support.hpp"

#include <sparse_rtrl/detail/propagate.hpp>

#include <cstdint>
#include <cstring>
#include <vector>

using namespace sparse_rtrl;
using test::Mat;

namespace {

template <typename S>
using Storage = detail::InfluenceStorage<S>;
template <typename S>
using RowMat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <typename S>
void fill(Storage<S>& M, const RowMat<S>& values) {
  for (Index i = 0; i < values.rows(); ++i) {
    auto row = M.row(i);
    for (Index c = 0; c < values.cols(); ++c) row[c] = values(i, c);
  }
}

template <typename S>
bool padding_is_zero(const Storage<S>& M) {
  constexpr Index W = Storage<S>::kPanel;
  const Index last = M.panels() - 1, used = M.cols() - last * W;
  for (Index i = 0; i < M.rows(); ++i)
    for (Index o = used; o < W; ++o)
      if (M.panel(last)[i * W + o] != S(0)) return false;
  return true;
}

/// A random coupling over n rows: about half the rows active, each (target, active source) pair
/// present with probability fill.
template <typename S>
detail::Coupling<S> random_coupling(Index n, double fill, std::uint64_t seed) {
  detail::Coupling<S> C;
  C.reserve(n, n * n);
  detail::UniformRandom rng(seed);
  Index k = 0;
  for (Index j = 0; j < n; ++j)
    if (rng.next() < 0.5) C.active[std::size_t(k++)] = j;
  C.active_count = k;
  Index e = 0;
  for (Index i = 0; i < n; ++i) {
    C.row_ptr[std::size_t(i)] = e;
    for (Index a = 0; a < k; ++a)
      if (rng.next() < fill) {
        C.source[std::size_t(e)] = a;
        C.coef[std::size_t(e)] = S(rng.uniform(-0.5, 0.5));
        ++e;
      }
  }
  C.row_ptr[std::size_t(n)] = e;
  return C;
}

/// The coupling as a dense n x n matrix over source rows of M (active[a] for compact source a).
template <typename S>
RowMat<S> dense_coupling(const detail::Coupling<S>& C, Index n, bool compact_sources) {
  RowMat<S> D = RowMat<S>::Zero(n, n);
  for (Index i = 0; i < n; ++i)
    for (Index e = C.row_ptr[std::size_t(i)]; e < C.row_ptr[std::size_t(i + 1)]; ++e) {
      const Index s = C.source[std::size_t(e)];
      D(i, compact_sources ? C.active[std::size_t(s)] : s) += C.coef[std::size_t(e)];
    }
  return D;
}

template <typename S>
S tolerance() {
  return std::is_same<S, float>::value ? S(2e-5) : S(1e-13);
}

}  // namespace

TEMPLATE_TEST_CASE("InfluenceStorage: panels hold every element once, padding stays zero", "[influence]", float,
                   double) {
  using S = TestType;
  constexpr Index W = Storage<S>::kPanel;
  for (Index cols : {Index(1), W - 1, W, W + 3, 3 * W + 7}) {
    const Index rows = 5;
    const RowMat<S> values = test::random_matrix<S>(rows, cols, std::uint64_t(cols));
    Storage<S> M(rows, cols);
    REQUIRE(M.panels() == (cols + W - 1) / W);
    fill(M, values);
    CHECK(M.to_matrix() == values);
    CHECK(padding_is_zero(M));
    for (Index i = 0; i < rows; ++i) {
      std::vector<S> row;
      M.for_each_row_segment(i, [&](const S* v, Index count) { row.insert(row.end(), v, v + count); });
      REQUIRE(Index(row.size()) == cols);
      for (Index c = 0; c < cols; ++c) CHECK(row[std::size_t(c)] == values(i, c));
      for (Index c = 0; c < cols; ++c) CHECK(static_cast<const Storage<S>&>(M)(i, c) == values(i, c));
    }
    // Row-major writes in pieces that straddle rows and panels, into unzeroed memory.
    Storage<S> streamed(rows, cols, false);
    CHECK(padding_is_zero(streamed));
    const std::size_t total = std::size_t(rows * cols);
    for (std::size_t first = 0, piece = 1; first < total; first += piece, piece = piece * 3 % 97 + 1)
      streamed.write_row_major(first, values.data() + first, std::min(piece, total - first));
    CHECK(streamed.to_matrix() == values);
    const Storage<S> copy(streamed);
    CHECK(copy.to_matrix() == values);
    CHECK(double(M.allocated_bytes()) >= Storage<S>::bytes_for(rows, cols));
    CHECK(M.value_bytes() == sizeof(S) * std::size_t(rows * cols));
    M.set_zero();
    CHECK(M.to_matrix().isZero(0));
  }
}

TEMPLATE_TEST_CASE("propagate_in_place == diag(decay) M + C M[active], bitwise on 1-3 threads", "[influence]", float,
                   double) {
  using S = TestType;
  constexpr Index W = detail::kChunk<S>;
  const Index n = 96;
  for (Index cols : {W - 5, 16 * W, 16 * W + 5}) {
    const RowMat<S> M0 = test::random_matrix<S>(n, cols, 7);
    const auto C = random_coupling<S>(n, 0.3, 11);
    REQUIRE(C.active_count > 0);
    REQUIRE(C.active_count < n);
    const Eigen::Matrix<S, Eigen::Dynamic, 1> decay = test::random_matrix<S>(n, 1, 13, 0.5, 1.0);
    // Large enough to be split over the threads (below kParallelMinFma one thread runs it all).
    if (cols > W) REQUIRE(double(C.nnz() + n) * double(cols) >= detail::kParallelMinFma);
    const RowMat<S> expected = decay.asDiagonal() * M0 + dense_coupling(C, n, true) * M0;
    RowMat<S> first;
    for (int threads : {1, 2, 3}) {
      Storage<S> M(n, cols);
      fill(M, M0);
      parallel::ThreadPool pool(threads);
      const Index stride = detail::propagation_scratch_size<S>(n);
      detail::PropagationScratch<S> scratch(std::size_t(stride * threads));
      // Every thread's scratch rows start on a packet boundary (a misaligned scratch made each
      // AVX-512 load straddle two cache lines).
      constexpr std::size_t packet_bytes = std::size_t(detail::kPacketSize<S>) * sizeof(S);
      CHECK(reinterpret_cast<std::uintptr_t>(scratch.data()) % packet_bytes == 0);
      CHECK(std::size_t(stride) * sizeof(S) % packet_bytes == 0);
      detail::propagate_in_place(M, decay.data(), C, scratch.data(), stride, pool, true);
      const RowMat<S> got = M.to_matrix();
      CHECK((got - expected).cwiseAbs().maxCoeff() <= tolerance<S>());
      CHECK(padding_is_zero(M));
      if (threads == 1)
        first = got;
      else
        CHECK(std::memcmp(first.data(), got.data(), sizeof(S) * std::size_t(got.size())) == 0);
    }
  }
}

TEMPLATE_TEST_CASE("cross_add_in_place adds C Mprev to the first P columns only, bitwise on 1-3 threads",
                   "[influence]", float, double) {
  using S = TestType;
  constexpr Index W = detail::kChunk<S>;
  const Index n = 96, n_prev = 80;
  for (Index P : {Index(3), 16 * W + 9, 24 * W}) {
    const Index cols = P + W + 2;  // the layer's own columns follow, in the same panel as column P
    const RowMat<S> M0 = test::random_matrix<S>(n, cols, 17);
    const RowMat<S> prev_values = test::random_matrix<S>(n_prev, P, 19);
    // Sources are rows of Mprev directly (not compact positions), as for the cross-layer term.
    detail::Coupling<S> C;
    C.reserve(n, n * n_prev);
    detail::UniformRandom rng(23);
    Index e = 0;
    for (Index i = 0; i < n; ++i) {
      C.row_ptr[std::size_t(i)] = e;
      for (Index j = 0; j < n_prev; ++j)
        if (rng.next() < 0.25) {
          C.source[std::size_t(e)] = j;
          C.coef[std::size_t(e)] = S(rng.uniform(-1, 1));
          ++e;
        }
    }
    C.row_ptr[std::size_t(n)] = e;
    if (P > W) REQUIRE(double(C.nnz()) * double(P) >= detail::kParallelMinFma);  // split over the threads
    RowMat<S> B = RowMat<S>::Zero(n, n_prev);
    for (Index i = 0; i < n; ++i)
      for (Index q = C.row_ptr[std::size_t(i)]; q < C.row_ptr[std::size_t(i + 1)]; ++q)
        B(i, C.source[std::size_t(q)]) += C.coef[std::size_t(q)];
    RowMat<S> expected = M0;
    expected.leftCols(P) += B * prev_values;
    Storage<S> Mprev(n_prev, P);
    fill(Mprev, prev_values);
    RowMat<S> first;
    for (int threads : {1, 2, 3}) {
      Storage<S> M(n, cols);
      fill(M, M0);
      parallel::ThreadPool pool(threads);
      detail::cross_add_in_place(M, P, Mprev, C, pool, true);
      const RowMat<S> got = M.to_matrix();
      CHECK((got.leftCols(P) - expected.leftCols(P)).cwiseAbs().maxCoeff() <= tolerance<S>());
      CHECK(std::memcmp(got.rightCols(cols - P).eval().data(), M0.rightCols(cols - P).eval().data(),
                        sizeof(S) * std::size_t(n * (cols - P))) == 0);
      if (threads == 1)
        first = got;
      else
        CHECK(std::memcmp(first.data(), got.data(), sizeof(S) * std::size_t(got.size())) == 0);
    }
  }
}
