/// @file mpi/communicator.hpp
/// @brief The library's own MPI communicator: a duplicate of the user's, on which MPI errors
///        are returned (MPI_ERRORS_RETURN) and turned into exceptions, with the few
///        collectives the sharded learners use. MPI standard calls only (MPI-3.0): Open MPI
///        and MPICH both work.
///
/// Why a duplicate (MPI_Comm_dup): the library's collectives can never match a message of the
/// user's on the same communicator, and the error handler set here leaves the user's
/// communicator (MPI_COMM_WORLD's default MPI_ERRORS_ARE_FATAL) as it was. What MPI does when a
/// rank dies is not changed by this: see docs/distributed.md, "When a rank dies".
#pragma once

#include <sparse_rtrl/config.hpp>

#include <mpi.h>

#include <cstdint>
#include <exception>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sparse_rtrl {
namespace mpi {

/// An MPI call that returned an error (on the library's communicator, whose handler is
/// MPI_ERRORS_RETURN): the call, the MPI error class and MPI's own message.
class Error : public std::runtime_error {
 public:
  Error(const std::string& what, int code) : std::runtime_error(what), code_(code) {}
  /// The MPI error code the call returned.
  int code() const { return code_; }

 private:
  int code_;
};

/// Throws mpi::Error for a return code other than MPI_SUCCESS.
inline void check(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  std::string message = std::string("sparse_rtrl::mpi: ") + call + " failed";
  if (MPI_Error_string(code, text, &length) == MPI_SUCCESS) message += ": " + std::string(text, std::size_t(length));
  int error_class = 0;
  if (MPI_Error_class(code, &error_class) == MPI_SUCCESS) message += " (MPI error class " + std::to_string(error_class) + ")";
  throw Error(message, code);
}

/// The MPI datatype of T (the types the library sends).
template <typename T>
MPI_Datatype datatype();
template <>
inline MPI_Datatype datatype<float>() { return MPI_FLOAT; }
template <>
inline MPI_Datatype datatype<double>() { return MPI_DOUBLE; }
template <>
inline MPI_Datatype datatype<int>() { return MPI_INT; }
template <>
inline MPI_Datatype datatype<std::uint64_t>() { return MPI_UINT64_T; }

/// Counts and displacements of MPI's collectives are ints: a larger count is refused (it would
/// wrap), naming what was to be sent.
inline int checked_count(std::int64_t count, const char* what) {
  if (count < 0 || count > std::int64_t(std::numeric_limits<int>::max()))
    throw std::invalid_argument(std::string("sparse_rtrl::mpi: ") + what + ": " + std::to_string(count) +
                                " elements do not fit MPI's int counts");
  return int(count);
}

/// @brief A duplicate of a communicator with MPI_ERRORS_RETURN, owned (freed on destruction).
///
/// Construction is collective over @p comm (MPI_Comm_dup): every rank of it constructs one, in
/// the same order as any other collective on it. Needs MPI initialised (MPI_Init or
/// MPI_Init_thread; the library calls MPI only from the thread that calls its functions, so
/// MPI_THREAD_SINGLE or FUNNELED is enough) and not finalised. Movable, not copyable.
class Communicator {
 public:
  explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (!initialized || finalized)
      throw std::logic_error("sparse_rtrl::mpi::Communicator: MPI is " +
                             std::string(finalized ? "already finalised" : "not initialised") +
                             " (call MPI_Init before and MPI_Finalize after using the library's MPI part)");
    if (comm == MPI_COMM_NULL) throw std::invalid_argument("sparse_rtrl::mpi::Communicator: received MPI_COMM_NULL");
    check(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    const int set = MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    if (set != MPI_SUCCESS) {
      MPI_Comm_free(&comm_);
      check(set, "MPI_Comm_set_errhandler");
    }
    check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;
  Communicator(Communicator&& other) noexcept { swap(other); }
  Communicator& operator=(Communicator&& other) noexcept {
    Communicator gone(std::move(other));
    swap(gone);
    return *this;
  }
  /// Frees the duplicate (not collective in MPI's sense, but MPI must not be finalised yet: a
  /// communicator outliving MPI_Finalize is left alone).
  ~Communicator() {
    if (comm_ == MPI_COMM_NULL) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }
  void swap(Communicator& other) noexcept {
    std::swap(comm_, other.comm_);
    std::swap(rank_, other.rank_);
    std::swap(size_, other.size_);
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  /// The duplicate itself (MPI_COMM_NULL after a move).
  MPI_Comm get() const { return comm_; }

  void barrier() const { check(MPI_Barrier(require()), "MPI_Barrier"); }

  /// Every rank's @p count values of @p send, in rank order, into @p recv (size() * count).
  template <typename T>
  void allgather(const T* send, int count, T* recv) const {
    check(MPI_Allgather(send, count, datatype<T>(), recv, count, datatype<T>(), require()), "MPI_Allgather");
  }
  template <typename T>
  std::vector<T> allgather(const std::vector<T>& send) const {
    std::vector<T> all(std::size_t(size_) * send.size());
    allgather(send.data(), checked_count(std::int64_t(send.size()), "allgather"), all.data());
    return all;
  }
  /// Rank r's counts[r] values of @p send land at recv + displs[r] on every rank. With @p send ==
  /// nullptr each rank's own values are taken from their place in @p recv (MPI_IN_PLACE).
  template <typename T>
  void allgatherv(const T* send, int count, T* recv, const int* counts, const int* displs) const {
    check(MPI_Allgatherv(send ? static_cast<const void*>(send) : MPI_IN_PLACE, count, datatype<T>(), recv, counts,
                         displs, datatype<T>(), require()),
          "MPI_Allgatherv");
  }

  /// Rank r sends send_counts[q] values from send + send_displs[q] to every rank q, and receives
  /// recv_counts[r] values at recv + recv_displs[r] from every rank r.
  template <typename T>
  void alltoallv(const T* send, const int* send_counts, const int* send_displs, T* recv, const int* recv_counts,
                 const int* recv_displs) const {
    check(MPI_Alltoallv(send, send_counts, send_displs, datatype<T>(), recv, recv_counts, recv_displs, datatype<T>(),
                        require()),
          "MPI_Alltoallv");
  }

  /// @brief Makes a local outcome collective: every rank says whether its part of an operation
  /// succeeded (@p failure: nullptr, or the exception it caught), and then either every rank
  /// returns or every rank throws: a rank that failed rethrows its own exception, the others a
  /// std::runtime_error naming the ranks that failed. So a failure on one rank (no memory, say)
  /// leaves no other rank waiting in the next collective. Collective.
  void agree(std::exception_ptr failure, const char* where) const {
    const std::vector<int> all = allgather(std::vector<int>{failure ? 1 : 0});
    std::string failed;
    for (int r = 0; r < size_; ++r)
      if (all[std::size_t(r)]) failed += (failed.empty() ? "" : ", ") + std::to_string(r);
    if (failure) std::rethrow_exception(failure);
    if (!failed.empty())
      throw std::runtime_error(std::string(where) + ": failed on rank(s) " + failed +
                               " (see their error); every rank stops here");
  }

 private:
  MPI_Comm require() const {
    if (comm_ == MPI_COMM_NULL) throw std::logic_error("sparse_rtrl::mpi::Communicator: used after a move");
    return comm_;
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 0;
};

}  // namespace mpi
}  // namespace sparse_rtrl
