/// @file parallel/thread_pool.hpp
/// @brief The library's one parallel mechanism: a small fork-join pool of std::threads that
///        each learner owns, with a thread count chosen per learner.
///
/// Why our own pool and not OpenMP: a header-only library cannot rely on its users compiling
/// with -fopenmp (without it the parallel path silently vanishes); OpenMP's thread count is a
/// process-wide setting that any other code may change between two steps (sizing per-thread
/// scratch from omp_get_max_threads() at construction and re-reading it at each step was a
/// heap-buffer overflow); and many learners on many user threads (the multi-stream case) want
/// their own, fixed teams. Here the team size is fixed at construction, task t always runs on
/// thread t % threads() (the caller is thread 0), and run() returns only when every task is done:
/// results cannot depend on scheduling, and callers' per-thread set-up (flush-to-zero) is
/// applied inside each task.
#pragma once

#include <sparse_rtrl/config.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#endif

namespace sparse_rtrl {
namespace parallel {

namespace detail {
inline void cpu_relax() {
#if defined(__SSE2__) || defined(_M_X64)
  _mm_pause();
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
  __asm__ __volatile__("yield");
#endif
}

/// Failure injection for the library's tests, never set by users: while >= 0 it counts down once
/// per worker a pool starts, and at zero that start throws std::system_error(EAGAIN) as
/// std::thread does when the OS refuses a thread (`ulimit -u`), so the partial-start path can be
/// tested deterministically. One relaxed load per thread start when unused.
inline std::atomic<int> fail_thread_start_countdown{-1};
inline void before_thread_start() {
  if (fail_thread_start_countdown.load(std::memory_order_relaxed) >= 0 &&
      fail_thread_start_countdown.fetch_sub(1) == 0)
    throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again),
                            "injected thread-start failure");
}
}  // namespace detail

/// @brief Fork-join team of `threads` threads (the caller plus threads - 1 workers).
///
/// run(tasks, f) calls f(t) for t in [0, tasks), task t on thread t % threads(), and returns when
/// all are done; the first exception a task throws is rethrown by run(). Copying a pool makes a
/// new team of the same size (so a copied learner owns its threads); one pool must not be run
/// from two threads at once (as any learner must not be stepped from two threads at once).
/// Idle workers spin briefly (about 50 us) for the next job, then sleep.
///
/// If the system refuses to start a worker (e.g. `ulimit -u`), the constructor joins the workers
/// it had started and throws std::system_error (the OS error code kept) whose message names the
/// threads asked for and the workers started.
class ThreadPool {
 public:
  /// @param threads >= 1; 1 runs everything on the calling thread and starts no thread.
  explicit ThreadPool(int threads = 1) {
    if (threads < 1)
      throw std::invalid_argument("sparse_rtrl::parallel::ThreadPool: threads must be >= 1, received " +
                                  std::to_string(threads));
    threads_ = threads;
    if (threads > 1) state_ = std::make_unique<State>(threads);
  }
  ThreadPool(const ThreadPool& other) : ThreadPool(other.threads_) {}
  ThreadPool& operator=(const ThreadPool& other) {
    if (this != &other && other.threads_ != threads_) *this = ThreadPool(other.threads_);
    return *this;
  }
  ThreadPool(ThreadPool&&) noexcept = default;
  ThreadPool& operator=(ThreadPool&&) noexcept = default;
  ~ThreadPool() = default;

  int threads() const { return threads_; }

  /// Runs f(0) ... f(tasks - 1); task t on thread t % threads(). Allocates nothing.
  template <typename F>
  void run(int tasks, F&& f) {
    if (tasks <= 0) return;
    if (!state_ || tasks == 1) {
      for (int t = 0; t < tasks; ++t) f(t);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    state_->dispatch(tasks, &invoke<Fn>, static_cast<void*>(std::addressof(f)));
  }

 private:
  template <typename Fn>
  static void invoke(void* f, int task) {
    (*static_cast<Fn*>(f))(task);
  }

  struct State {
    using Task = void (*)(void*, int);

    explicit State(int threads) : team(threads) {
      workers.reserve(std::size_t(threads - 1));
      try {
        for (int w = 1; w < threads; ++w) {
          detail::before_thread_start();
          workers.emplace_back([this, w] { work(w); });
        }
      } catch (...) {
        // The destructor does not run for a half-built State: its members would be destroyed
        // under the started workers (destroying the condition variable they sleep on hung, a
        // joinable std::thread terminates). Stop and join the workers that did start.
        const std::size_t started = workers.size();
        stop_and_join();
        const std::string what = "sparse_rtrl::parallel::ThreadPool: asked for " +
                                 std::to_string(threads) + " threads (the caller and " +
                                 std::to_string(threads - 1) + " workers), the system started " +
                                 std::to_string(started) + " workers before refusing: ";
        try {
          throw;
        } catch (const std::system_error& e) {
          throw std::system_error(e.code(), what + e.what());
        } catch (const std::exception& e) {
          throw std::runtime_error(what + e.what());
        }
      }
    }
    ~State() { stop_and_join(); }

    void stop_and_join() {
      {
        std::lock_guard<std::mutex> lock(mutex);
        stop = true;
        generation.fetch_add(1, std::memory_order_release);
      }
      wake.notify_all();
      for (auto& w : workers) w.join();
    }

    void dispatch(int tasks, Task fn, void* ctx) {
      task_fn = fn;
      task_ctx = ctx;
      task_count = tasks;
      error = nullptr;
      pending.store(team - 1, std::memory_order_relaxed);
      {
        std::lock_guard<std::mutex> lock(mutex);
        generation.fetch_add(1, std::memory_order_release);
      }
      wake.notify_all();
      run_share(0);
      // Wait for the workers: spin, then yield (the machine may have fewer cores than threads).
      for (long spin = 0; pending.load(std::memory_order_acquire) != 0; ++spin) {
        if (spin < 20000)
          detail::cpu_relax();
        else
          std::this_thread::yield();
      }
      if (error) std::rethrow_exception(error);
    }

    void run_share(int thread) {
      try {
        for (int t = thread; t < task_count; t += team) task_fn(task_ctx, t);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
      }
    }

    void work(int thread) {
      std::uint64_t seen = 0;
      for (;;) {
        // Spin briefly for the next job (steps come back to back), then sleep.
        const auto start = std::chrono::steady_clock::now();
        std::uint64_t now = generation.load(std::memory_order_acquire);
        for (int spin = 0; now == seen; ++spin) {
          detail::cpu_relax();
          if ((spin & 255) == 255 &&
              std::chrono::steady_clock::now() - start > std::chrono::microseconds(50)) {
            std::unique_lock<std::mutex> lock(mutex);
            wake.wait(lock, [&] { return generation.load(std::memory_order_acquire) != seen; });
          }
          now = generation.load(std::memory_order_acquire);
        }
        seen = now;
        if (stop) return;
        run_share(thread);
        pending.fetch_sub(1, std::memory_order_acq_rel);
      }
    }

    const int team;
    std::vector<std::thread> workers;
    std::mutex mutex;
    std::condition_variable wake;
    std::atomic<std::uint64_t> generation{0};
    std::atomic<int> pending{0};
    bool stop = false;
    Task task_fn = nullptr;
    void* task_ctx = nullptr;
    int task_count = 0;
    std::exception_ptr error;
  };

  int threads_ = 1;
  std::unique_ptr<State> state_;
};

}  // namespace parallel
}  // namespace sparse_rtrl
