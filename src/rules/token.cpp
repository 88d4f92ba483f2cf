#include "cellroute/token.h"

#include <sys/random.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/base64.h"
#include "common/json.h"
#include "common/text.h"
#include "rules/token_decode.h"

namespace cellroute::token {

namespace {

constexpr std::string_view kVersion = "01";
constexpr std::size_t kCrcChars = 7;
// 16 random bytes + the payload + its length byte, as unpadded base64.
constexpr std::size_t kMaxRawBytes = kRandomBytes + kMaxPayloadBytes + 1;
constexpr std::size_t kMaxEncodedChars = (kMaxRawBytes * 4 + 2) / 3;

constexpr char kBase64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

// Decodes unpadded base64url into out (capacity kMaxRawBytes). Returns the byte count, or -1.
int DecodeBase64Url(std::string_view in, std::uint8_t* out) noexcept {
  // Four characters carry three bytes at most: an input that fits cannot overflow `out`, so
  // the bytes are stored unchecked.
  if (in.size() / 4 * 3 + (in.size() % 4) * 3 / 4 > kMaxRawBytes) return -1;
  std::size_t n = 0;
  bool ok = internal::DecodeBase64(in, internal::Base64Mode::kUrlUnpadded, [&](std::uint8_t b) {
    out[n++] = b;
    return true;
  });
  return ok ? static_cast<int>(n) : -1;
}

std::string EncodeBase64Url(const std::uint8_t* data, std::size_t size) {
  std::string out;
  out.reserve((size * 4 + 2) / 3);
  std::uint32_t acc = 0;
  int bits = 0;
  for (std::size_t i = 0; i < size; ++i) {
    acc = (acc << 8) | data[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kBase64Url[(acc >> bits) & 0x3F]);
    }
  }
  if (bits > 0) out.push_back(kBase64Url[(acc << (6 - bits)) & 0x3F]);
  return out;
}

std::uint32_t Crc32(std::string_view text) noexcept {
  return static_cast<std::uint32_t>(
      crc32(0L, reinterpret_cast<const Bytef*>(text.data()), static_cast<uInt>(text.size())));
}

std::string PadLeft(std::string s, std::size_t width) {
  if (s.size() < width) s.insert(0, width - s.size(), '0');
  return s;
}

}  // namespace

std::optional<std::int64_t> Payload::Get(std::string_view key) const noexcept {
  for (std::size_t i = 0; i < size_; ++i) {
    const Field& f = fields_[i];
    if (f.key_size == key.size() &&
        internal::EqualBytes(f.key_storage.data(), key.data(), key.size()))
      return f.value;
  }
  return std::nullopt;
}

std::string Payload::ToJson() const {
  nlohmann::json j = nlohmann::json::object();
  for (const Field& f : fields()) j[std::string(f.key())] = f.value;
  return internal::DumpJson(j);
}

bool Payload::Add(std::string_view key, std::int64_t value) noexcept {
  if (size_ == kMaxFields || key.empty() || key.size() > kMaxKeyBytes) return false;
  Field& f = fields_[size_++];
  internal::CopyBytes(f.key_storage.data(), key.data(), key.size());
  f.key_size = static_cast<std::uint8_t>(key.size());
  f.value = value;
  return true;
}

std::string ToBase36(std::uint64_t value) {
  constexpr char kDigits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  if (value == 0) return "0";
  std::string out;
  while (value > 0) {
    out.push_back(kDigits[value % 36]);
    value /= 36;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

namespace {
// The value of each byte as a base 36 digit (either case), or -1.
constexpr std::array<std::int8_t, 256> kBase36Values = [] {
  std::array<std::int8_t, 256> t{};
  t.fill(-1);
  for (int i = 0; i < 10; ++i) t['0' + i] = static_cast<std::int8_t>(i);
  for (int i = 0; i < 26; ++i) {
    t['a' + i] = static_cast<std::int8_t>(10 + i);
    t['A' + i] = static_cast<std::int8_t>(10 + i);
  }
  return t;
}();
}  // namespace

bool ParseBase36(std::string_view text, std::uint64_t* out) noexcept {
  if (text.empty()) return false;
  std::uint64_t v = 0;
  for (char c : text) {
    const int d = kBase36Values[static_cast<unsigned char>(c)];
    if (d < 0) return false;
    if (__builtin_mul_overflow(v, std::uint64_t{36}, &v) ||
        __builtin_add_overflow(v, static_cast<std::uint64_t>(d), &v)) {
      return false;
    }
  }
  *out = v;
  return true;
}

Result<Payload> DecodePayload(std::string_view text, std::string_view length_base36) {
  Payload payload;
  internal::TokenError error;
  if (!internal::DecodeTokenPayload(text, length_base36, &payload, &error)) {
    return Status::Invalid(error.Message());
  }
  return payload;
}

Result<Payload> Decode(std::string_view token) {
  Payload payload;
  internal::TokenError error;
  if (!internal::DecodeToken(token, &payload, &error)) return Status::Invalid(error.Message());
  return payload;
}

Result<std::array<std::uint8_t, kRandomBytes>> SecureRandom() {
  std::array<std::uint8_t, kRandomBytes> out{};
  std::size_t got = 0;
  while (got < out.size()) {
    ssize_t n = getrandom(out.data() + got, out.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::Unavailable(std::string("getrandom: ") + std::strerror(errno));
    }
    got += static_cast<std::size_t>(n);
  }
  return out;
}

Result<std::string> Encode(const EncodeOptions& options) {
  if (options.prefix.size() > kMaxPrefixBytes) {
    return Status::Invalid("prefix is longer than " + std::to_string(kMaxPrefixBytes) + " bytes");
  }
  for (char c : options.prefix) {
    // A token travels in HTTP headers and URLs: its prefix is visible ASCII.
    if (c < '!' || c > '~') return Status::Invalid("prefix: only visible ASCII characters");
  }
  auto fields = options.fields;
  std::sort(fields.begin(), fields.end());
  // As Rails's RoutableToken generator refuses them, with its words.
  std::string invalid;
  bool cell_or_org = false;
  for (const auto& [key, value] : fields) {
    if (key.size() != 1 || kRoutingKeys.find(key[0]) == std::string_view::npos) {
      std::string shown =
          nlohmann::json(key).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
      invalid += (invalid.empty() ? ":" : ", :") + shown.substr(1, shown.size() - 2);
    } else if (key == "c" || key == "o") {
      cell_or_org = true;
    }
  }
  if (!invalid.empty()) {
    return Status::Invalid("Invalid routing keys: " + invalid +
                           ". Valid routing keys are: :c, :g, :o, :p, :u, :t.");
  }
  if (!cell_or_org) return Status::Invalid("At least one routing key must be present: :c or :o.");
  std::string payload;
  for (std::size_t i = 0; i < fields.size(); ++i) {
    const auto& [key, value] = fields[i];
    if (i > 0 && fields[i - 1].first == key) {
      return Status::Invalid("duplicate field key '" + key + "'");
    }
    if (value < 0) return Status::Invalid("field '" + key + "' is negative");
    if (!payload.empty()) payload += '\n';
    payload += key;
    payload += ':';
    payload += ToBase36(static_cast<std::uint64_t>(value));
  }
  if (payload.size() > kMaxPayloadBytes) {
    return Status::Invalid("payload is longer than " + std::to_string(kMaxPayloadBytes) + " bytes");
  }
  std::array<std::uint8_t, kRandomBytes> random{};
  if (options.random) {
    random = *options.random;
  } else {
    auto r = SecureRandom();
    if (!r.ok()) return r.status();
    random = r.value();
  }
  std::uint8_t raw[kMaxRawBytes];
  std::memcpy(raw, random.data(), kRandomBytes);
  std::memcpy(raw + kRandomBytes, payload.data(), payload.size());
  raw[kRandomBytes + payload.size()] = static_cast<std::uint8_t>(payload.size());
  std::string b = EncodeBase64Url(raw, kRandomBytes + payload.size() + 1);

  std::string token = options.prefix;
  token += b;
  token += '.';
  token += kVersion;
  token += '.';
  token += PadLeft(ToBase36(b.size()), 2);
  token += PadLeft(ToBase36(Crc32(token)), kCrcChars);
  return token;
}

}  // namespace cellroute::token

namespace cellroute::internal {

std::string TokenError::Message() const {
  std::string m = "token is not routable: " + std::string(what);
  if (key_size > 0) m += " '" + std::string(key.data(), key_size) + "'";
  return m;
}

namespace {
bool Fail(TokenError* error, std::string_view what, std::string_view key = {}) noexcept {
  error->what = what;
  error->key_size = std::min(key.size(), error->key.size());
  if (error->key_size > 0) std::memcpy(error->key.data(), key.data(), error->key_size);
  return false;
}
}  // namespace

bool DecodeTokenPayload(std::string_view text, std::string_view length_base36, token::Payload* out,
                        TokenError* error) noexcept {
  std::size_t b_size = text.size();
  if (!length_base36.empty()) {
    std::uint64_t n = 0;
    if (!token::ParseBase36(length_base36, &n)) return Fail(error, "length is not base 36");
    if (n > text.size()) return Fail(error, "length exceeds the token");
    b_size = static_cast<std::size_t>(n);
  }
  if (b_size > token::kMaxEncodedChars) return Fail(error, "payload too long");
  std::string_view b = text.substr(text.size() - b_size);

  std::uint8_t raw[token::kMaxRawBytes];
  int raw_size = token::DecodeBase64Url(b, raw);
  if (raw_size < 0) return Fail(error, "bad base64");
  if (static_cast<std::size_t>(raw_size) < token::kRandomBytes + 1) return Fail(error, "too short");
  std::size_t payload_size = static_cast<std::size_t>(raw_size) - token::kRandomBytes - 1;
  if (raw[raw_size - 1] != payload_size) return Fail(error, "payload length byte mismatch");

  out->Clear();
  // One pass per line ("key:value", lines joined by '\n'), with the checks in this order:
  // no trailing newline, exactly one ':', a key of lower-case letters, no key twice, a base 36
  // value.
  const char* q = reinterpret_cast<const char*>(raw + token::kRandomBytes);
  const char* const end = q + payload_size;
  std::uint32_t letters = 0;  // the one-letter keys seen (every key Rails writes has one)
  while (q < end) {
    const char* line = q;
    const char* colon = nullptr;
    int colons = 0;
    for (; q < end && *q != '\n'; ++q) {
      if (*q == ':') {
        if (colon == nullptr) colon = q;
        ++colons;
      }
    }
    const char* line_end = q;
    if (q < end && ++q == end) return Fail(error, "trailing newline");
    if (colons != 1) return Fail(error, "a payload line has no single ':'");
    std::string_view key(line, static_cast<std::size_t>(colon - line));
    if (key.empty()) return Fail(error, "empty key");
    for (char c : key) {
      if (c < 'a' || c > 'z') return Fail(error, "a payload key is not lower-case letters");
    }
    if (key.size() == 1) {
      const std::uint32_t bit = std::uint32_t{1} << (key[0] - 'a');
      if (letters & bit) return Fail(error, "duplicate key", key);
      letters |= bit;
    } else if (out->Get(key)) {
      return Fail(error, "duplicate key", key);
    }
    std::uint64_t value = 0;
    if (!token::ParseBase36({colon + 1, static_cast<std::size_t>(line_end - colon - 1)}, &value) ||
        value > static_cast<std::uint64_t>(INT64_MAX)) {
      return Fail(error, "value is not base 36 for key", key);
    }
    if (!out->Add(key, static_cast<std::int64_t>(value))) {
      return Fail(error, "too many fields or key too long");
    }
  }
  // Rails's decoder answers nil for a token that routes nowhere.
  if (out->empty()) return Fail(error, "empty payload");
  return true;
}

bool DecodeToken(std::string_view token, token::Payload* out, TokenError* error) noexcept {
  if (token.size() <= token::kCrcChars) return Fail(error, "too short");
  std::string_view body = token.substr(0, token.size() - token::kCrcChars);
  std::uint64_t crc = 0;
  if (!token::ParseBase36(token.substr(body.size()), &crc) || crc != token::Crc32(body)) {
    return Fail(error, "CRC mismatch");
  }
  std::size_t last_dot = body.rfind('.');
  if (last_dot == std::string_view::npos || last_dot == 0) return Fail(error, "no version");
  std::size_t version_dot = body.rfind('.', last_dot - 1);
  if (version_dot == std::string_view::npos) return Fail(error, "no version");
  if (body.substr(version_dot + 1, last_dot - version_dot - 1) != token::kVersion) {
    return Fail(error, "unknown version");
  }
  return DecodeTokenPayload(body.substr(0, version_dot), body.substr(last_dot + 1), out, error);
}

}  // namespace cellroute::internal
