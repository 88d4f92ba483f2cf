// Shared by the fuzz targets: each defines LLVMFuzzerTestOneInput; libFuzzer drives it in the
// fuzz build (make fuzz), and replay_main.cpp runs the committed corpus through it as an
// ordinary test in every build. A finding is a crash, a sanitizer report, or a broken
// property, which FUZZ_CHECK turns into an abort with the reason.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#define FUZZ_CHECK(cond)                                                               \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: property broken: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

inline std::string_view AsText(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Splits off the next line (without its '\n').
inline std::string_view NextLine(std::string_view* rest) {
  std::size_t nl = rest->find('\n');
  std::string_view line = rest->substr(0, nl);
  *rest = nl == std::string_view::npos ? std::string_view() : rest->substr(nl + 1);
  return line;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
