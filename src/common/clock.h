// Wall-clock time as the library reports it (events, snapshots): Unix milliseconds.
#pragma once

#include <chrono>
#include <cstdint>

namespace cellroute::internal {

inline std::int64_t UnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace cellroute::internal
