// The literal prefix cellroute checks before running RE2, and the index built from it, must
// never drop a match that plain RE2 finds: compared over generated regexes and texts.
#include <cellroute/rules.h>
#include <re2/re2.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <random>

#include "common/test_util.h"

using namespace cellroute;

namespace {

const std::vector<std::string> kTokens = {
    "^",    "$",    "/",   "a",    "b",     "ab",  "(",     ")",           "|",    "[ab]",
    "[^a]", "\\Q",  "\\E", "\\d",  ".",     "*",   "+",     "?",           "(?:",  "(?i)",
    "(?m)", "(?s)", "{2}", "[]a]", "[^]a]", "\\(", "\\|",   "[[:alpha:]]", "(?i:", "\\/",
    "\\n",  "A",    "[(]", "[|]",  "\\[",   "x*",  "(?P<n>"};

std::string RandomRegex(std::mt19937_64& rng) {
  std::string s;
  std::size_t n = 1 + rng() % 8;
  for (std::size_t i = 0; i < n; ++i) s += kTokens[rng() % kTokens.size()];
  return s;
}

std::string RandomText(std::mt19937_64& rng) {
  return cellroute::testing::RandomText(rng, "/ab(|]A\n1x", 8);
}

}  // namespace

TEST_CASE("the prefix and the index never drop what plain RE2 matches") {
  // The reported case first: \Q...\E hid the top-level '|', so "/zz/ab" was refused.
  std::vector<std::string> regexes = {"^\\Q/a(\\E|/ab", "^[](]|/ab", "(?m)^/a",
                                      "^*/a",           "^/a(?i)b",  "^(?i)/A",
                                      "^\\ba?a*"};
  std::mt19937_64 rng(12345);
  for (int i = 0; i < 3000; ++i) regexes.push_back(RandomRegex(rng));
  int compiled = 0, compared = 0;
  for (const std::string& rx : regexes) {
    RE2::Options opt;
    opt.set_log_errors(false);
    RE2 re(rx, opt);
    if (!re.ok()) continue;
    nlohmann::json path_rule = {
        {"id", "path"}, {"match", {{"type", "path"}, {"regex_value", rx}}}, {"action", "proxy"}};
    nlohmann::json cookie_rule = {
        {"id", "cookie"}, {"match", {{"type", "cookie"}, {"regex_name", rx}}}, {"action", "proxy"}};
    auto path_rules = Ruleset::Parse(nlohmann::json::array({path_rule}).dump(), "gen.json");
    auto cookie_rules = Ruleset::Parse(nlohmann::json::array({cookie_rule}).dump(), "gen.json");
    if (!path_rules.ok() || !cookie_rules.ok()) continue;  // e.g. more groups than allowed
    ++compiled;
    std::vector<std::string> texts = {"/zz/ab", "/a(", "/ab", "", "\n/a"};
    for (int t = 0; t < 40; ++t) texts.push_back(RandomText(rng));
    for (const std::string& text : texts) {
      INFO("regex /" << rx << "/ on \"" << text << "\"");
      Request path_req;
      path_req.path = text;
      Outcome out;
      path_rules->Evaluate(path_req.view(), &out);
      CHECK(out.matched() == RE2::PartialMatch(text, re));
      if (text.find_first_of(";= \t") == std::string::npos && !text.empty()) {
        Request cookie_req;
        cookie_req.AddCookie(text, "v");
        cookie_rules->Evaluate(cookie_req.view(), &out);
        CHECK(out.matched() == RE2::FullMatch(text, re));
      }
      ++compared;
    }
  }
  CHECK(compiled > 500);
  CHECK(compared > 20000);
}
