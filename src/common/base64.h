// The one base64 decoder: strict unpadded base64url for routable tokens, and the lenient form
// (either alphabet, padded or not) that the base64 transforms accept. Emits bytes to a sink so
// that the token path decodes into a fixed buffer without allocating.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace cellroute::internal {

enum class Base64Mode {
  kUrlUnpadded,  // A-Z a-z 0-9 - _, no '='
  kAny,          // also + / and trailing '=' padding
};

namespace detail {
// Value of each byte: 0..63, or -1 (not base64), -2 (standard-alphabet only), -3 ('=').
constexpr std::array<std::int8_t, 256> kBase64Values = [] {
  std::array<std::int8_t, 256> t{};
  t.fill(-1);
  for (int i = 0; i < 26; ++i) {
    t['A' + i] = static_cast<std::int8_t>(i);
    t['a' + i] = static_cast<std::int8_t>(26 + i);
  }
  for (int i = 0; i < 10; ++i) t['0' + i] = static_cast<std::int8_t>(52 + i);
  t['-'] = 62;
  t['_'] = 63;
  t['+'] = -2;
  t['/'] = -2;
  t['='] = -3;
  return t;
}();
}  // namespace detail

// Calls emit(byte) for every decoded byte. False on input that is not base64 in `mode`, or as
// soon as emit returns false (a full buffer).
template <typename Emit>
bool DecodeBase64(std::string_view in, Base64Mode mode, Emit&& emit) {
  // Whole quads of plain characters first, three bytes each (a token's payload is all of them);
  // the first quad holding anything else, and the tail, go byte by byte.
  const auto* u = reinterpret_cast<const unsigned char*>(in.data());
  std::size_t i = 0;
  for (; in.size() - i >= 4; i += 4) {
    const int a = detail::kBase64Values[u[i]], b = detail::kBase64Values[u[i + 1]],
              c = detail::kBase64Values[u[i + 2]], d = detail::kBase64Values[u[i + 3]];
    if ((a | b | c | d) < 0) break;
    const auto w = static_cast<std::uint32_t>(a << 18 | b << 12 | c << 6 | d);
    if (!emit(static_cast<std::uint8_t>(w >> 16)) || !emit(static_cast<std::uint8_t>(w >> 8)) ||
        !emit(static_cast<std::uint8_t>(w))) {
      return false;
    }
  }
  std::uint32_t acc = 0;
  int bits = 0;
  std::size_t pad = 0;
  for (char c : in.substr(i)) {
    int v = detail::kBase64Values[static_cast<unsigned char>(c)];
    if (v == -3 && mode == Base64Mode::kAny) {
      ++pad;
      continue;
    }
    if (v == -2 && mode == Base64Mode::kAny) v = c == '+' ? 62 : 63;
    if (v < 0 || pad > 0) return false;  // not base64, or data after padding
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (!emit(static_cast<std::uint8_t>((acc >> bits) & 0xFF))) return false;
    }
  }
  return pad <= 2 && (in.size() - pad) % 4 != 1;
}

}  // namespace cellroute::internal
