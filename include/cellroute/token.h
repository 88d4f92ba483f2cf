// Routable tokens: decode them as GitLab's router does, encode them as GitLab's Rails does.
//
//   auto p = cellroute::token::Decode("EL25d_AKXDUtqLnIQHEpkG86MQM.01.0r1ajj2i3");
//   if (p.ok()) { std::optional<int64_t> org = p->Get("o"); }   // org == 1
//
//   cellroute::token::EncodeOptions opt;
//   opt.prefix = "glrt-";
//   opt.fields = {{"c", 2}, {"o", 1}};
//   auto token = cellroute::token::Encode(opt);                    // random bytes from the OS
//
// A token is `<prefix><B>.01.<LL><CRC7>` where B is unpadded base64url of 16 random bytes, the
// payload (`key:value` lines sorted by key, values in base 36) and one byte holding the payload
// length; LL is len(B) in base 36 and CRC7 the CRC-32 of everything before it, in base 36.
// Decoding never yields a partial payload: a token is routable as a whole or not at all. As
// GitLab's Rails does, encoding takes only the routing keys c, g, o, p, u and t and needs c or
// o; decoding refuses an empty payload and keys that are not lower-case letters, so whatever a
// decoded payload holds is plain ASCII.
// All functions are thread-safe and keep no state.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cellroute/export.h"
#include "cellroute/status.h"

namespace cellroute::token {

inline constexpr std::size_t kRandomBytes = 16;
inline constexpr std::size_t kMaxPayloadBytes = 159;
inline constexpr std::size_t kMaxPrefixBytes = 20;
inline constexpr std::size_t kMaxFields = 12;
inline constexpr std::size_t kMaxKeyBytes = 7;

// Keys are short (Rails writes one letter); a field is 16 bytes.
struct Field {
  std::array<char, kMaxKeyBytes> key_storage;
  std::uint8_t key_size;
  std::int64_t value;

  std::string_view key() const noexcept { return {key_storage.data(), key_size}; }
};

// The routing fields of one token, in the order the token lists them (sorted by key).
class CELLROUTE_EXPORT Payload {
 public:
  std::optional<std::int64_t> Get(std::string_view key) const noexcept;
  std::span<const Field> fields() const noexcept { return {fields_.data(), size_}; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }

  // Removes every field.
  void Clear() noexcept { size_ = 0; }
  // Appends a field; false when full or the key is empty or too long.
  bool Add(std::string_view key, std::int64_t value) noexcept;

  // {"c": 2, "o": 1}: the fields as a JSON object of integers.
  std::string ToJson() const;

 private:
  std::array<Field, kMaxFields> fields_;  // only the first size_ are set
  std::size_t size_ = 0;
};

// Decodes a whole token (prefix included), checking the CRC, the version and the length.
CELLROUTE_EXPORT Result<Payload> Decode(std::string_view token);

// Decodes only the base64 part as GitLab's `routable-token-payload` transform does: `text` ends
// with B and `length_base36` (LL) says how many of its last characters B is. With an empty
// `length_base36`, all of `text` is B.
CELLROUTE_EXPORT Result<Payload> DecodePayload(std::string_view text,
                                               std::string_view length_base36 = {});

// The keys Rails mints tokens with: cell, group, organization, project, user, runner type.
inline constexpr std::string_view kRoutingKeys = "cgoptu";

struct EncodeOptions {
  std::string prefix;
  // Keys (of kRoutingKeys, at least c or o) and values; sorted by key when encoded.
  std::vector<std::pair<std::string, std::int64_t>> fields;
  // The 16 random bytes; when absent, read from the operating system's secure source.
  std::optional<std::array<std::uint8_t, kRandomBytes>> random;
};

CELLROUTE_EXPORT Result<std::string> Encode(const EncodeOptions& options);

// 16 bytes from getrandom(2).
CELLROUTE_EXPORT Result<std::array<std::uint8_t, kRandomBytes>> SecureRandom();

// Helpers that tooling also needs: base 36 in lower case, as Ruby's Integer#to_s(36) writes it.
CELLROUTE_EXPORT std::string ToBase36(std::uint64_t value);
// Parses base 36 (either case). False on an empty string, a bad digit or overflow.
CELLROUTE_EXPORT bool ParseBase36(std::string_view text, std::uint64_t* out) noexcept;

}  // namespace cellroute::token
