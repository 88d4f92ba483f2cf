#include <cellroute/token.h>

#include <catch2/catch.hpp>
#include <random>
#include <string>

using cellroute::token::Decode;
using cellroute::token::DecodePayload;
using cellroute::token::Encode;
using cellroute::token::EncodeOptions;

namespace {

constexpr const char* kPublishedExample = "EL25d_AKXDUtqLnIQHEpkG86MQM.01.0r1ajj2i3";

// CRC-32 (zlib polynomial), written out so the test does not share the library's code.
std::uint32_t Crc32(const std::string& s) {
  std::uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char c : s) {
    crc ^= c;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

std::string Base36Padded(std::uint64_t v, std::size_t width) {
  std::string s = cellroute::token::ToBase36(v);
  return std::string(width > s.size() ? width - s.size() : 0, '0') + s;
}

std::array<std::uint8_t, 16> Counting() {
  std::array<std::uint8_t, 16> r{};
  for (std::size_t i = 0; i < r.size(); ++i) r[i] = static_cast<std::uint8_t>(i);
  return r;
}

}  // namespace

TEST_CASE("the published example decodes to o:1") {
  auto p = Decode(kPublishedExample);
  REQUIRE(p.ok());
  REQUIRE(p->size() == 1);
  CHECK(p->Get("o") == 1);
  CHECK_FALSE(p->Get("c").has_value());
}

TEST_CASE("the payload part alone decodes with its base 36 length") {
  // What the routable-token-payload transform receives: B and LL ("0r" = 27).
  auto p = DecodePayload("EL25d_AKXDUtqLnIQHEpkG86MQM", "0r");
  REQUIRE(p.ok());
  CHECK(p->Get("o") == 1);
  // With a prefix in front, LL picks the last 27 characters.
  auto q = DecodePayload("glpat-EL25d_AKXDUtqLnIQHEpkG86MQM", "0r");
  REQUIRE(q.ok());
  CHECK(q->Get("o") == 1);
}

TEST_CASE("encode is deterministic given the random bytes and round-trips") {
  EncodeOptions opt;
  opt.prefix = "glrt-";
  opt.fields = {{"o", 1}, {"c", 2}, {"g", 5}, {"u", 123456789}};
  opt.random = Counting();
  auto a = Encode(opt);
  auto b = Encode(opt);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a.value() == b.value());
  CHECK(a.value().rfind("glrt-", 0) == 0);
  auto p = Decode(a.value());
  REQUIRE(p.ok());
  CHECK(p->Get("c") == 2);
  CHECK(p->Get("o") == 1);
  CHECK(p->Get("g") == 5);
  CHECK(p->Get("u") == 123456789);
  // Sorted by key, as Rails writes them.
  REQUIRE(p->size() == 4);
  CHECK(p->fields()[0].key() == "c");
  CHECK(p->fields()[3].key() == "u");
}

TEST_CASE("encoding the published example's payload reproduces its layout") {
  // Same payload and a fixed random: the version, the length and the CRC fields are in place.
  EncodeOptions opt;
  opt.fields = {{"o", 1}};
  opt.random = Counting();
  auto t = Encode(opt);
  REQUIRE(t.ok());
  const std::string& s = t.value();
  REQUIRE(s.size() == 27 + 4 + 2 + 7);
  CHECK(s.substr(27, 4) == ".01.");
  CHECK(s.substr(31, 2) == "0r");
}

TEST_CASE("values are written in base 36") {
  CHECK(cellroute::token::ToBase36(0) == "0");
  CHECK(cellroute::token::ToBase36(35) == "z");
  CHECK(cellroute::token::ToBase36(36) == "10");
  CHECK(cellroute::token::ToBase36(1000000000000ULL) == "cre66i9s");
  std::uint64_t v = 0;
  CHECK(cellroute::token::ParseBase36("CRE66I9S", &v));
  CHECK(v == 1000000000000ULL);
  CHECK_FALSE(cellroute::token::ParseBase36("", &v));
  CHECK_FALSE(cellroute::token::ParseBase36("12-3", &v));
  CHECK_FALSE(cellroute::token::ParseBase36("zzzzzzzzzzzzzzzzzzzzzzzzz", &v));  // overflow
  // The largest value that fits, and one more.
  CHECK(cellroute::token::ParseBase36("3w5e11264sgsf", &v));
  CHECK(v == UINT64_MAX);
  CHECK(cellroute::token::ParseBase36("3W5E11264SGSF", &v));
  CHECK(v == UINT64_MAX);
  CHECK_FALSE(cellroute::token::ParseBase36("3w5e11264sgsg", &v));
  CHECK_FALSE(cellroute::token::ParseBase36("1" + std::string(13, '0'), &v));  // 36^13
  CHECK_FALSE(cellroute::token::ParseBase36("12 3", &v));
  CHECK_FALSE(cellroute::token::ParseBase36(std::string_view("12\0", 3), &v));
}

TEST_CASE("malformed tokens are not routable, never partially decoded") {
  std::string good = kPublishedExample;
  SECTION("a changed character breaks the CRC") {
    std::string t = good;
    t[3] = t[3] == 'a' ? 'b' : 'a';
    auto p = Decode(t);
    REQUIRE_FALSE(p.ok());
    CHECK(p.status().message().find("CRC") != std::string::npos);
  }
  SECTION("truncated") {
    for (std::size_t n = 0; n < good.size(); ++n) CHECK_FALSE(Decode(good.substr(0, n)).ok());
  }
  SECTION("wrong version") {
    EncodeOptions opt;
    opt.fields = {{"c", 1}};
    opt.random = Counting();
    std::string t = Encode(opt).value();
    CHECK(Decode(t).ok());
    // Rewrite ".01." as ".02." and fix the CRC so only the version is wrong.
    std::string body = t.substr(0, t.size() - 7);
    CHECK(Base36Padded(Crc32(body), 7) == t.substr(t.size() - 7));
    body.replace(body.find(".01."), 4, ".02.");
    auto p = Decode(body + Base36Padded(Crc32(body), 7));
    REQUIRE_FALSE(p.ok());
    CHECK(p.status().message().find("version") != std::string::npos);
  }
  SECTION("a length byte that disagrees with the payload") {
    CHECK_FALSE(DecodePayload("EL25d_AKXDUtqLnIQHEpkG86MQM", "0q").ok());
    CHECK_FALSE(DecodePayload("EL25d_AKXDUtqLnIQHEpkG86MQM", "zz").ok());
  }
  SECTION("bad base64") {
    CHECK_FALSE(DecodePayload("EL25d_AKXDUtqLnIQHEpkG86MQ*", "0r").ok());
    CHECK_FALSE(DecodePayload("EL25d_AKXDUtqLnIQHEpkG86MQM=", "").ok());
  }
  SECTION("random garbage never crashes and never half-decodes") {
    std::mt19937 rng(12345);
    const std::string alphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:\n";
    int decoded = 0;
    for (int i = 0; i < 20000; ++i) {
      std::string t(rng() % 120, 'x');
      for (char& c : t) c = alphabet[rng() % alphabet.size()];
      auto p = DecodePayload(t, "");
      if (p.ok()) ++decoded;
      CHECK_FALSE(Decode(t).ok());  // 2^-32 odds of a valid CRC by chance: none here
    }
    // A random base64 string almost never carries a consistent length byte and lines.
    CHECK(decoded < 200);
  }
}

TEST_CASE("payload lines must be key:value in base 36") {
  auto encode_raw = [](const std::string& payload) {
    // Build B by hand: 16 zero bytes, the payload, its length.
    std::string raw(16, '\0');
    raw += payload;
    raw += static_cast<char>(payload.size());
    static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    std::uint32_t acc = 0;
    int bits = 0;
    for (unsigned char c : raw) {
      acc = (acc << 8) | c;
      bits += 8;
      while (bits >= 6) {
        bits -= 6;
        out += k[(acc >> bits) & 63];
      }
    }
    if (bits) out += k[(acc << (6 - bits)) & 63];
    return out;
  };
  CHECK(DecodePayload(encode_raw("c:2\no:1"), "").ok());
  CHECK_FALSE(DecodePayload(encode_raw("c:2:3"), "").ok());
  CHECK_FALSE(DecodePayload(encode_raw("c2"), "").ok());
  CHECK_FALSE(DecodePayload(encode_raw("c:"), "").ok());
  CHECK_FALSE(DecodePayload(encode_raw(":2"), "").ok());
  CHECK_FALSE(DecodePayload(encode_raw("c:2\n"), "").ok());
  CHECK_FALSE(DecodePayload(encode_raw("c:2\nc:3"), "").ok());
  // Longer keys are checked for duplicates too, and never taken for the one-letter key they
  // start with.
  auto twice = DecodePayload(encode_raw("ab:1\nc:2\nab:2"), "");
  REQUIRE_FALSE(twice.ok());
  CHECK_THAT(twice.status().message(), Catch::Contains("duplicate key 'ab'"));
  auto both = DecodePayload(encode_raw("a:1\nab:2"), "");
  REQUIRE(both.ok());
  CHECK(both->Get("a") == 1);
  CHECK(both->Get("ab") == 2);
  CHECK_FALSE(both->Get("b").has_value());
  CHECK_FALSE(DecodePayload(encode_raw("c:!"), "").ok());
  // Rails's decoder answers nil for an empty payload: no routing fields is not routable.
  auto empty = DecodePayload(encode_raw(""), "");
  REQUIRE_FALSE(empty.ok());
  CHECK_THAT(empty.status().message(), Catch::Contains("empty payload"));
  // Keys are lower-case letters, so a decoded payload is plain ASCII whatever the bytes were.
  auto binary_key = DecodePayload(encode_raw("\xff:2"), "");
  REQUIRE_FALSE(binary_key.ok());
  CHECK_THAT(binary_key.status().message(), Catch::Contains("not lower-case letters"));
  CHECK_FALSE(DecodePayload(encode_raw("C:2"), "").ok());
}

TEST_CASE("encode refuses what Rails would never mint") {
  EncodeOptions opt;
  opt.random = Counting();
  opt.prefix = std::string(21, 'x');
  CHECK_FALSE(Encode(opt).ok());
  opt.prefix = "glpat-";
  opt.fields = {{"c", -1}};
  CHECK_FALSE(Encode(opt).ok());
  opt.fields = {{"c", 1}, {"c", 2}};
  CHECK_FALSE(Encode(opt).ok());
  opt.fields = {{"a:b", 1}};
  CHECK_FALSE(Encode(opt).ok());
  // GitLab's generator: only c g o p u t, and c or o among them, with its own words.
  opt.fields = {{"o", 1}, {"q", 2}, {"k", 3}};
  auto invalid = Encode(opt);
  REQUIRE_FALSE(invalid.ok());
  CHECK(invalid.status().message() ==
        "Invalid routing keys: :k, :q. Valid routing keys are: :c, :g, :o, :p, :u, :t.");
  opt.fields = {{"\xff", 2}};
  REQUIRE_FALSE(Encode(opt).ok());
  CHECK_THAT(Encode(opt).status().message(), Catch::Contains("Invalid routing keys"));
  opt.fields = {{"p", 7}, {"u", 8}};
  auto no_owner = Encode(opt);
  REQUIRE_FALSE(no_owner.ok());
  CHECK(no_owner.status().message() == "At least one routing key must be present: :c or :o.");
  opt.fields = {};
  CHECK_FALSE(Encode(opt).ok());
  opt.fields = {{"c", 1}, {"g", 2}, {"o", 3}, {"p", 4}, {"t", 5}, {"u", 6}};
  auto all = Encode(opt);
  REQUIRE(all.ok());
  CHECK(Decode(all.value())->size() == 6);
  // The prefix goes into HTTP headers: visible ASCII only.
  opt.prefix = "gl\xffpat-";
  CHECK_FALSE(Encode(opt).ok());
  opt.prefix = "gl pat-";
  CHECK_FALSE(Encode(opt).ok());
}

TEST_CASE("the secure default draws fresh random bytes") {
  EncodeOptions opt;
  opt.fields = {{"c", 1}};
  auto a = Encode(opt);
  auto b = Encode(opt);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(a.value() != b.value());
  CHECK(Decode(a.value())->Get("c") == 1);
}
