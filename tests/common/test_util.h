// Helpers shared by the C++ tests.
#pragma once

#include <cellroute/events.h>
#include <cellroute/rules.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/outcome_text.h"

namespace cellroute::testing {

// The events a callback received, on which threads, and a way to wait for them.
struct EventRecorder {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Event> events;
  std::vector<std::thread::id> threads;

  EventCallback Callback() {
    return [this](const Event& e) {
      std::lock_guard<std::mutex> lock(mu);
      events.push_back(e);
      threads.push_back(std::this_thread::get_id());
      cv.notify_all();
    };
  }
  bool WaitFor(std::size_t n, std::chrono::milliseconds deadline = std::chrono::seconds(5)) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, deadline, [&] { return events.size() >= n; });
  }
  // Waits for an event of `kind`; the first one, or nullopt past the deadline.
  std::optional<Event> WaitForKind(Event::Kind kind,
                                   std::chrono::milliseconds deadline = std::chrono::seconds(5)) {
    std::unique_lock<std::mutex> lock(mu);
    std::optional<Event> found;
    cv.wait_for(lock, deadline, [&] {
      for (const Event& e : events) {
        if (e.kind == kind) {
          found = e;
          return true;
        }
      }
      return false;
    });
    return found;
  }
  std::vector<Event> Snapshot() {
    std::lock_guard<std::mutex> lock(mu);
    return events;
  }
};

// A ruleset that must load; the test fails with the loader's message otherwise.
inline Ruleset MustParse(const std::string& json) {
  auto r = Ruleset::Parse(json, "test.json");
  INFO(r.status().message());
  REQUIRE(r.ok());
  return std::move(r).value();
}

// The loader's error for a ruleset that must not load.
inline std::string ParseError(const std::string& json) {
  auto r = Ruleset::Parse(json, "test.json");
  REQUIRE_FALSE(r.ok());
  return r.status().message();
}

inline Outcome Evaluate(const Ruleset& rules, const Request& request) {
  Outcome out;
  rules.Evaluate(request.view(), &out);
  return out;
}

// Seeded choices for the tests that generate their input: one seed, the same inputs.
class Dice {
 public:
  explicit Dice(std::uint64_t seed) : rng_(seed) {}
  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[rng_() % v.size()];
  }
  bool Coin(int percent) { return static_cast<int>(rng_() % 100) < percent; }

 protected:
  std::mt19937_64 rng_;
};

// Up to max_size - 1 characters drawn from `alphabet`.
inline std::string RandomText(std::mt19937_64& rng, std::string_view alphabet,
                              std::size_t max_size) {
  std::string s;
  std::size_t n = rng() % max_size;
  for (std::size_t i = 0; i < n; ++i) s += alphabet[rng() % alphabet.size()];
  return s;
}

inline std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline std::string Var(const Outcome& o, std::string_view name) {
  std::string_view v;
  return o.Find(name, &v) ? std::string(v) : std::string("<absent>");
}

}  // namespace cellroute::testing
