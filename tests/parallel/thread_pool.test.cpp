// The library's fork-join pool (parallel/thread_pool.hpp): every task runs once, on the thread
// its index names; errors reach the caller; copies own their own threads.
#include "test_support.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <system_error>
#include <thread>

using sparse_rtrl::parallel::ThreadPool;

TEST_CASE("ThreadPool runs every task once, task t on thread t % threads", "[parallel]") {
  for (int threads : {1, 2, 3, 5}) {
    INFO("threads = " << threads);
    ThreadPool pool(threads);
    REQUIRE(pool.threads() == threads);
    for (int tasks : {1, 2, 3, 7, 16}) {
      std::vector<std::thread::id> ran_on(static_cast<std::size_t>(tasks));
      std::vector<std::atomic<int>> count(static_cast<std::size_t>(tasks));
      pool.run(tasks, [&](int t) {
        ran_on[std::size_t(t)] = std::this_thread::get_id();
        ++count[std::size_t(t)];
      });
      std::set<std::thread::id> distinct;
      for (int t = 0; t < tasks; ++t) {
        CHECK(count[std::size_t(t)] == 1);
        // Same thread for t and t + threads; the caller runs the tasks t % threads == 0.
        if (t >= threads) CHECK(ran_on[std::size_t(t)] == ran_on[std::size_t(t - threads)]);
        if (t % threads == 0) CHECK(ran_on[std::size_t(t)] == std::this_thread::get_id());
        distinct.insert(ran_on[std::size_t(t)]);
      }
      CHECK(int(distinct.size()) == std::min(tasks, threads));
    }
  }
}

TEST_CASE("ThreadPool survives many back-to-back and idle-separated jobs", "[parallel]") {
  ThreadPool pool(3);
  long sum = 0;
  for (int job = 0; job < 20000; ++job) {
    std::atomic<long> part{0};
    pool.run(3, [&](int t) { part += t + 1; });
    sum += part;
    // Now and then let the workers fall asleep, so the wake-up path runs too.
    if (job % 5000 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  CHECK(sum == 20000L * 6);
}

TEST_CASE("ThreadPool rethrows a task's exception after all tasks finished, and stays usable", "[parallel]") {
  ThreadPool pool(2);
  std::atomic<int> finished{0};
  REQUIRE_THROWS_WITH(pool.run(4,
                               [&](int t) {
                                 if (t == 1) throw std::runtime_error("task 1 failed");
                                 ++finished;
                               }),
                      "task 1 failed");
  CHECK(finished == 2);  // tasks 0 and 2 ran; task 3 shares task 1's thread and was not reached
  std::atomic<int> again{0};
  pool.run(2, [&](int) { ++again; });
  CHECK(again == 2);
}

TEST_CASE("ThreadPool copies own their own threads, bad sizes are rejected", "[parallel][errors]") {
  ThreadPool a(2);
  ThreadPool b(a);
  CHECK(b.threads() == 2);
  std::thread::id worker_a, worker_b;
  a.run(2, [&](int t) { if (t == 1) worker_a = std::this_thread::get_id(); });
  b.run(2, [&](int t) { if (t == 1) worker_b = std::this_thread::get_id(); });
  CHECK(worker_a != worker_b);
  REQUIRE_THROWS_AS(ThreadPool(0), std::invalid_argument);
  REQUIRE_THROWS_WITH(ThreadPool(-3), Catch::Matchers::Contains("threads must be >= 1, received -3"));
}

TEST_CASE("ThreadPool throws, joining its started workers, when the system refuses a thread", "[parallel][errors]") {
  namespace pd = sparse_rtrl::parallel::detail;
  // The 4th worker start fails (as under `ulimit -u`). The construction runs on a helper thread
  // so that a hang (the old behaviour) fails this test after a timeout instead of blocking ctest.
  struct Outcome {
    std::mutex mutex;
    std::condition_variable done_cv;
    bool done = false;
    std::string error;
    bool system_error = false;
  };
  auto outcome = std::make_shared<Outcome>();
  pd::fail_thread_start_countdown = 3;
  std::thread([outcome] {
    std::string error;
    bool system_error = false;
    try {
      ThreadPool pool(8);
    } catch (const std::system_error& e) {
      system_error = e.code() == std::errc::resource_unavailable_try_again;
      error = e.what();
    } catch (const std::exception& e) {
      error = e.what();
    }
    std::lock_guard<std::mutex> lock(outcome->mutex);
    outcome->done = true;
    outcome->error = error;
    outcome->system_error = system_error;
    outcome->done_cv.notify_all();
  }).detach();
  std::unique_lock<std::mutex> lock(outcome->mutex);
  const bool finished =
      outcome->done_cv.wait_for(lock, std::chrono::seconds(20), [&] { return outcome->done; });
  pd::fail_thread_start_countdown = -1;
  REQUIRE(finished);
  CHECK(outcome->system_error);
  CHECK_THAT(outcome->error, Catch::Matchers::Contains("asked for 8 threads") &&
                                 Catch::Matchers::Contains("started 3 workers") &&
                                 Catch::Matchers::Contains("injected thread-start failure"));
  // Nothing is left behind: a pool built afterwards works.
  ThreadPool pool(3);
  std::atomic<int> ran{0};
  pool.run(3, [&](int) { ++ran; });
  CHECK(ran == 3);
}
