// A fixed set of threads that run the parts of a job on request, for work split many times a
// second (the rollout engine's sampling after every decode step): starting threads anew each time
// cost tens of microseconds per thread, one after the other, on every step.
//
// run(n_parts, fn) calls fn(0) .. fn(n_parts - 1), part 0 on the calling thread and part w on
// worker w, and returns when all are done; the first exception thrown by a part is rethrown on the
// caller (the other parts still finish). Idle workers wait on a condition variable (no spinning).
// One run at a time: run() is not re-entrant and not for concurrent callers.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace visplay {

class WorkerPool {
  public:
    // n_threads: the most parts a run may have (the caller counts as one); < 1 is taken as 1.
    explicit WorkerPool(int n_threads) : size_(n_threads < 1 ? 1 : n_threads) {
        for (int w = 1; w < size_; ++w) threads_.emplace_back([this, w] { work(w); });
    }
    ~WorkerPool() {
        {
            std::lock_guard<std::mutex> lock(m_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto & t : threads_) t.join();
    }
    WorkerPool(const WorkerPool &) = delete;
    WorkerPool & operator=(const WorkerPool &) = delete;

    int size() const { return size_; }

    void run(int n_parts, const std::function<void(int)> & fn) {
        if (n_parts > size_) n_parts = size_;
        if (n_parts <= 1) {
            if (n_parts == 1) fn(0);
            return;
        }
        {
            std::lock_guard<std::mutex> lock(m_);
            job_ = &fn;
            n_parts_ = n_parts;
            pending_ = n_parts - 1;
            error_ = nullptr;
            ++generation_;
        }
        wake_.notify_all();
        std::exception_ptr mine;
        try {
            fn(0);
        } catch (...) {
            mine = std::current_exception();
        }
        std::unique_lock<std::mutex> lock(m_);
        done_.wait(lock, [this] { return pending_ == 0; });
        job_ = nullptr;
        if (mine) std::rethrow_exception(mine);
        if (error_) std::rethrow_exception(error_);
    }

  private:
    void work(int w) {
        uint64_t seen = 0;
        std::unique_lock<std::mutex> lock(m_);
        for (;;) {
            wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            if (w >= n_parts_) continue;  // not needed this time
            const std::function<void(int)> * job = job_;
            lock.unlock();
            std::exception_ptr err;
            try {
                (*job)(w);
            } catch (...) {
                err = std::current_exception();
            }
            lock.lock();
            if (err && !error_) error_ = err;
            if (--pending_ == 0) done_.notify_one();
        }
    }

    const int size_;
    std::mutex m_;
    std::condition_variable wake_, done_;
    const std::function<void(int)> * job_ = nullptr;
    int n_parts_ = 0, pending_ = 0;
    uint64_t generation_ = 0;
    bool stop_ = false;
    std::exception_ptr error_;
    std::vector<std::thread> threads_;
};

}  // namespace visplay
