// The RCU read side and grace periods the route table uses (liburcu, bp flavour: threads
// register themselves on their first read and fork() is supported), plus the annotations that
// tell ThreadSanitizer what a grace period means: every reader's section happens before the
// writer's wait returns, so freeing afterwards is not a race.
#pragma once

// The read-side lock and unlock inline: liburcu writes them under ten lines so that any
// program may (its LGPL's small-function allowance); _LGPL_SOURCE is how this version of its
// bp flavour offers them. Registration and grace periods stay calls into the shared library.
// Sanitizer builds call the library instead: liburcu keeps its per-thread reader records below
// the 128-byte alignment its header declares for them, which UBSan reports in the inline code.
#ifndef CELLROUTE_SANITIZED
#define _LGPL_SOURCE
#endif
#include <urcu/urcu-bp.h>

#if defined(__SANITIZE_THREAD__)
#define CELLROUTE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CELLROUTE_TSAN 1
#endif
#endif

#ifdef CELLROUTE_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

#include <pthread.h>

#include <mutex>

namespace cellroute::internal {

// liburcu's own fork handlers, installed once: they hold its locks across fork() so that a
// child never inherits one taken by a thread that does not exist there (a child's first read
// registers the thread, and a write waits for a grace period: both take those locks).
inline void RcuInstallForkHandlers() noexcept {
  static std::once_flag once;
  std::call_once(once, [] {
    pthread_atfork(urcu_bp_before_fork, urcu_bp_after_fork_parent, urcu_bp_after_fork_child);
  });
}

inline void RcuReadLock() noexcept { urcu_bp_read_lock(); }

inline void RcuReadUnlock(void* sync [[maybe_unused]]) noexcept {
#ifdef CELLROUTE_TSAN
  __tsan_release(sync);
#endif
  urcu_bp_read_unlock();
}

// Where a reader that borrowed an enclosing read-side section (internal::ReaderInSection)
// ends: the enclosing section keeps the memory alive, but a grace period is waited for on each
// table's own annotation, so the reads made through this table are released on it too.
inline void RcuBorrowedSectionEnd(void* sync [[maybe_unused]]) noexcept {
#ifdef CELLROUTE_TSAN
  __tsan_release(sync);
#endif
}

// Whether this thread is inside a read-side section (of any table: grace periods are global).
inline bool RcuReadOngoing() noexcept { return urcu_bp_read_ongoing() != 0; }

// Returns when every read-side section that began before the call has ended, and true. A
// thread inside a read-side section would wait for itself for ever: there it returns false at
// once, without waiting, and the caller keeps what it meant to free for a later grace period.
[[nodiscard]] inline bool RcuSynchronize(void* sync [[maybe_unused]]) noexcept {
  if (RcuReadOngoing()) return false;
  urcu_bp_synchronize_rcu();
#ifdef CELLROUTE_TSAN
  __tsan_acquire(sync);
#endif
  return true;
}

}  // namespace cellroute::internal
