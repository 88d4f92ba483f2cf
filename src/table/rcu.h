// The RCU read side and grace periods the route table uses (liburcu, bp flavour: threads
// register themselves on their first read and fork() is supported), plus the annotations that
// tell ThreadSanitizer what a grace period means: every reader's section happens before the
// writer's wait returns, so freeing afterwards is not a race.
#pragma once

// The read-side lock and unlock inline: liburcu publishes them, and the reader record they
// update, in its header for any program to use (its LGPL's small-function allowance);
// _LGPL_SOURCE is how this version of its bp flavour offers them. RcuReadLock below takes the
// same steps on that record. Registration and grace periods stay calls into the shared library.
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

// A read-side section as its owner holds it: the thread's reader record, looked up once when
// the section begins, so that ending it reads no thread-local storage. From a shared library
// each lookup of liburcu's record is a call through a TLS descriptor and a check of its
// initializer; its own inline lock looks the record up three times and its unlock twice
// (ADR 0018). The steps are liburcu's own, on the record its header declares, and are taken
// only with the liburcu versions they were checked against (CELLROUTE_URCU_BP_STEPS, set by
// the build); otherwise, and in sanitizer builds, a section is liburcu's own lock and unlock
// and RcuSection only says that there is one. Never null.
#if defined(CELLROUTE_URCU_BP_STEPS) && !defined(CELLROUTE_SANITIZED)
#define CELLROUTE_RCU_OWN_STEPS 1
using RcuSection = struct urcu_bp_reader*;  // "struct": a variable has the type's name

// A thread's first read registers it; out of line, so that the read path keeps its registers.
[[gnu::cold, gnu::noinline]] inline RcuSection RcuRegisterThread() noexcept {
  urcu_bp_register();
  return URCU_TLS(urcu_bp_reader);
}
#else
using RcuSection = void*;
#endif

[[nodiscard]] inline RcuSection RcuReadLock() noexcept {
#ifdef CELLROUTE_RCU_OWN_STEPS
  RcuSection record = URCU_TLS(urcu_bp_reader);
  if (__builtin_expect(record == nullptr, 0)) record = RcuRegisterThread();
  cmm_barrier();
  const unsigned long ctr = record->ctr;
  if (__builtin_expect((ctr & URCU_BP_GP_CTR_NEST_MASK) == 0, 1)) {
    _CMM_STORE_SHARED(record->ctr, _CMM_LOAD_SHARED(urcu_bp_gp.ctr));  // outermost: this phase
    urcu_bp_smp_mb_slave();
  } else {
    _CMM_STORE_SHARED(record->ctr, ctr + URCU_BP_GP_COUNT);  // nested
  }
  return record;
#else
  urcu_bp_read_lock();
  static char liburcu_section;  // any address: a section that is there, never read
  return &liburcu_section;
#endif
}

inline void RcuReadUnlock(RcuSection section [[maybe_unused]],
                          void* sync [[maybe_unused]]) noexcept {
#ifdef CELLROUTE_TSAN
  __tsan_release(sync);
#endif
#ifdef CELLROUTE_RCU_OWN_STEPS
  const unsigned long ctr = section->ctr;
  urcu_bp_smp_mb_slave();  // the section's reads happen before it ends
  _CMM_STORE_SHARED(section->ctr, ctr - URCU_BP_GP_COUNT);
  cmm_barrier();
#else
  urcu_bp_read_unlock();
#endif
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
