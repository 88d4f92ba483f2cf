// Which of a few per-thread counter shards the calling thread writes: threads are numbered in
// the order they first ask, so that up to `shards` threads each have a cache line of their own
// and never contend on a shared counter. Readers add the shards up.
#pragma once

#include <atomic>
#include <cstddef>

namespace cellroute::internal {

// The calling thread's number: 0, 1, 2... in the order threads first ask.
inline unsigned ThreadNumber() noexcept {
  static std::atomic<unsigned> next{0};
  thread_local unsigned id = next.fetch_add(1, std::memory_order_relaxed);
  return id;
}

inline std::size_t ThreadShard(std::size_t shards) noexcept { return ThreadNumber() % shards; }

}  // namespace cellroute::internal
