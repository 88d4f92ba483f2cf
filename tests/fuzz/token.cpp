// Routable tokens: decoding any bytes never crashes; what decodes is ASCII JSON; a payload of
// Rails's keys encodes back to a token that decodes to the same fields (the round trip).
#include <cellroute/token.h>

#include <nlohmann/json.hpp>

#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace cellroute::token;
  std::string_view text = AsText(data, size);
  (void)DecodePayload(text, {});
  auto p = Decode(text);
  if (p.ok()) {
    auto j = nlohmann::json::parse(p->ToJson());  // throws, and so aborts, when not valid JSON
    FUZZ_CHECK(j.is_object() && j.size() == p->size() && !p->empty());
    EncodeOptions opt;
    opt.prefix = "glpat-";
    opt.random = std::array<std::uint8_t, kRandomBytes>{};
    bool rails_keys = true;
    for (const Field& f : p->fields()) {
      rails_keys = rails_keys && f.key().size() == 1 &&
                   kRoutingKeys.find(f.key()[0]) != std::string_view::npos;
      opt.fields.emplace_back(std::string(f.key()), f.value);
    }
    bool owner = p->Get("c") || p->Get("o");
    auto token = Encode(opt);
    FUZZ_CHECK(token.ok() == (rails_keys && owner));
    if (token.ok()) {
      auto again = Decode(token.value());
      FUZZ_CHECK(again.ok());
      FUZZ_CHECK(again->ToJson() == p->ToJson());
    }
  }
  // Encoding whatever the bytes say: refused or round-tripped, never a crash.
  std::string_view rest = text;
  EncodeOptions opt;
  opt.prefix = std::string(NextLine(&rest));
  while (!rest.empty() && opt.fields.size() < 16) {
    std::string_view line = NextLine(&rest);
    std::int64_t value = static_cast<std::int64_t>(line.size()) * 977 - 3;
    opt.fields.emplace_back(std::string(line.substr(0, 2)), value);
  }
  opt.random = std::array<std::uint8_t, kRandomBytes>{};
  auto token = Encode(opt);
  if (token.ok()) FUZZ_CHECK(Decode(token.value()).ok());
  return 0;
}
