// The literal prefix, the rule index and the simple-regex matcher never disagree with plain
// RE2, on whether a text matches or on what a named group captures: the first line is a regex,
// the other lines are texts tried as a path and as a cookie name.
#include <cellroute/rules.h>
#include <re2/re2.h>

#include <nlohmann/json.hpp>

#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view rest = AsText(data, size);
  std::string rx(NextLine(&rest));
  RE2::Options opt;
  opt.set_log_errors(false);
  RE2 re(rx, opt);
  if (!re.ok() || rx.find("(?<") != std::string::npos) return 0;  // cellroute rewrites (?<
  auto dump = [](const nlohmann::json& j) {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  };
  std::string path_rules, cookie_rules;
  try {
    path_rules = dump(nlohmann::json::array(
        {{{"id", "p"}, {"match", {{"type", "path"}, {"regex_value", rx}}}, {"action", "proxy"}}}));
    cookie_rules = dump(nlohmann::json::array(
        {{{"id", "c"}, {"match", {{"type", "cookie"}, {"regex_name", rx}}}, {"action", "proxy"}}}));
  } catch (const nlohmann::json::exception&) {
    return 0;  // not UTF-8: no ruleset can hold this regex
  }
  auto by_path = cellroute::Ruleset::Parse(path_rules, "fuzz.json");
  auto by_cookie = cellroute::Ruleset::Parse(cookie_rules, "fuzz.json");
  if (!by_path.ok() || !by_cookie.ok()) return 0;
  for (int i = 0; i < 16 && !rest.empty(); ++i) {
    std::string text(NextLine(&rest));
    cellroute::Request r;
    r.path = text;
    cellroute::Outcome out;
    by_path->Evaluate(r.view(), &out);
    re2::StringPiece sub[21];
    int n = re.NumberOfCapturingGroups() + 1;
    bool matched = n <= 21 && re.Match(text, 0, text.size(), RE2::UNANCHORED, sub, n);
    FUZZ_CHECK(n > 21 || out.matched() == matched);
    if (matched) {
      for (const auto& [name, group] : re.NamedCapturingGroups()) {
        std::string_view got;
        bool present = out.Find(name, &got);
        FUZZ_CHECK(present == (sub[group].data() != nullptr));
        FUZZ_CHECK(!present || got == std::string_view(sub[group].data(), sub[group].size()));
      }
    }
    if (!text.empty()) {
      cellroute::Request c;
      c.AddCookie(text, "v");
      by_cookie->Evaluate(c.view(), &out);
      FUZZ_CHECK(out.matched() == RE2::FullMatch(text, re));
    }
  }
  return 0;
}
