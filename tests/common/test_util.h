// Helpers shared by the C++ tests.
#pragma once

#include <cellroute/rules.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

namespace cellroute::testing {

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
