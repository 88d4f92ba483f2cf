// The indexed evaluation (Evaluate) must decide exactly as the straightforward one (Explain,
// which tries every rule in order) on many generated rulesets and requests.
#include <cellroute/rules.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <random>

#include "common/test_util.h"

using cellroute::Outcome;
using cellroute::Request;
using json = nlohmann::json;

namespace {

class Generator : public cellroute::testing::Dice {
 public:
  using Dice::Dice;

  json Matcher() {
    switch (rng_() % 9) {
      case 0:
        return {{"type", "header"}, {"name", Pick(headers_)}};
      case 1:
        return {
            {"type", "header"}, {"name", Pick(headers_)}, {"regex_value", Pick(value_regexes_)}};
      case 2:
        return {{"type", "cookie"}, {"name", Pick(cookies_)}};
      case 3:
        return {{"type", "cookie"},
                {"regex_name", Pick(cookie_name_regexes_)},
                {"regex_value", Pick(value_regexes_)}};
      case 4:
        return {{"type", "path"}, {"regex_value", Pick(path_regexes_)}};
      case 5:
        return {{"type", "path"}, {"pattern", Pick(patterns_)}};
      case 6:
        return {{"type", "method"}, {"regex_value", "^(GET|HEAD)$"}};
      case 7:
        return {{"type", "host"}, {"regex_value", "example"}};
      default:
        return {{"type", "query"}, {"regex_value", "(^|&)page=(?<page>\\d+)"}};
    }
  }

  std::string Ruleset(int rules) {
    json r = json::array();
    for (int i = 0; i < rules; ++i) {
      json rule = {{"id", "r" + std::to_string(i)}, {"action", "proxy"}};
      int matchers = static_cast<int>(rng_() % 3);  // 0: matches everything
      if (matchers == 1) rule["match"] = Matcher();
      if (matchers == 2) {
        // Two matchers must not capture the same name; draw again until they do not.
        do {
          rule["match"] = json::array({Matcher(), Matcher()});
        } while (!cellroute::Ruleset::Parse(json::array({rule}).dump(), "probe").ok());
      }
      if (matchers == 0 && Coin(80)) rule["match"] = Matcher();  // keep catch-alls rare
      r.push_back(rule);
    }
    json doc = {{"rules", r}};
    if (Coin(30)) doc["reserved_words"] = json::array({"api", "v4", "X"});
    return doc.dump();
  }

  Request Req() {
    Request q;
    q.method = Pick(std::vector<std::string>{"GET", "POST", "HEAD", "get"});
    q.host = Pick(std::vector<std::string>{"", "gitlab.example.com", "other.org"});
    q.SetTarget(Pick(paths_));
    if (Coin(30)) q.query = "a=1&page=" + std::to_string(rng_() % 9);
    int headers = static_cast<int>(rng_() % 4);
    for (int i = 0; i < headers; ++i) {
      std::string name = Pick(headers_);
      if (Coin(30)) name[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(name[0])));
      if (Coin(10)) name = "x-unrelated";
      q.AddHeader(name, Pick(values_));
    }
    if (Coin(60)) {
      std::string cookie;
      int n = static_cast<int>(rng_() % 4);
      for (int i = 0; i < n; ++i) {
        cookie += (i ? "; " : "") + Pick(cookie_names_in_requests_) + "=" + Pick(values_);
      }
      q.AddHeader(Coin(50) ? "Cookie" : "cookie", cookie);
    }
    if (Coin(10)) q.AddCookie(Pick(cookies_), Pick(values_));
    return q;
  }

 private:
  std::vector<std::string> headers_ = {"runner-token", "private-token", "authorization", "x-a",
                                       "x-feature-flag-long-name"};
  std::vector<std::string> cookies_ = {"force-cell", "_gitlab_session", "pref"};
  std::vector<std::string> cookie_names_in_requests_ = {"force-cell",
                                                        "_gitlab_session",
                                                        "_gitlab_session_0af3",
                                                        "_gitlab_sessionx",
                                                        "pref",
                                                        "x_gitlab_session",
                                                        "other"};
  std::vector<std::string> cookie_name_regexes_ = {"_gitlab_session(_[0-9a-f]+)?", "pref|other",
                                                   "(?i)FORCE-cell", ".*"};
  std::vector<std::string> value_regexes_ = {"^(?<cell>cell-\\d+)", "\\d",  "^$", "token",
                                             "(?<all>.*)",          "^a|b$"};
  std::vector<std::string> path_regexes_ = {"^/api/v4/",
                                            "^/api/v4/(?<rest>.*)$",
                                            "api",
                                            "^/API/",
                                            "(?i)^/api/",
                                            "^/api|^/help",
                                            "^/(api|help)/",
                                            "^/o/(?<org>[^/]+)",
                                            "^/",
                                            "^/-/health$",
                                            "x$",
                                            "^/api\\/v4/",
                                            "^/[a]pi/",
                                            "/api/v4/"};
  std::vector<std::string> patterns_ = {"/o/:org/*", "/:route/*", "/api/*", "/api/v4/:id",
                                        "/*",        "/",         "/help"};
  std::vector<std::string> paths_ = {"/",
                                     "",
                                     "relative",
                                     "//x",
                                     "/api/v4/projects",
                                     "/API/v4/x",
                                     "/api",
                                     "/api/",
                                     "/apix/v4/",
                                     "/o/acme/x",
                                     "/o",
                                     "/o/",
                                     "/help",
                                     "/help/x",
                                     "/-/health",
                                     "/gitlab-org/x",
                                     "/Users/sign_in",
                                     "/users",
                                     "/api/v4/a?b=c",
                                     "/x",
                                     "/v4/x",
                                     "/x/api/v4/y"};
  std::vector<std::string> values_ = {"",  "cell-2-abc", "cell-x", "token-1",
                                      "b", "a",          "9",      "glrt-123"};
};

void RequireSame(const Outcome& fast, const Outcome& slow) {
  REQUIRE(fast.kind() == slow.kind());
  REQUIRE(fast.rule_index() == slow.rule_index());
  REQUIRE(fast.rule_id() == slow.rule_id());
  REQUIRE(fast.value() == slow.value());
  REQUIRE(fast.proxy_address() == slow.proxy_address());
  REQUIRE(fast.variable_count() == slow.variable_count());
  for (std::size_t i = 0; i < fast.variable_count(); ++i) {
    REQUIRE(fast.variable(i).name == slow.variable(i).name);
    REQUIRE(fast.variable(i).value == slow.variable(i).value);
  }
}

}  // namespace

TEST_CASE("indexed evaluation decides exactly as rule-by-rule evaluation") {
  Generator gen(20261129);
  int compared = 0, matched = 0;
  for (int set = 0; set < 150; ++set) {
    std::string text = gen.Ruleset(1 + set % 70);
    auto rules = cellroute::testing::MustParse(text);
    for (int q = 0; q < 200; ++q) {
      Request req = gen.Req();
      Outcome fast;
      rules.Evaluate(req.view(), &fast);
      auto slow = rules.Explain(req.view());
      INFO("ruleset: " << text);
      INFO("path: " << req.path);
      RequireSame(fast, slow.outcome);
      // Starting part-way, as the router does after an unowned claim.
      std::size_t from = rules.size() / 2;
      Outcome fast_from;
      rules.Evaluate(req.view(), &fast_from, from);
      RequireSame(fast_from, rules.Explain(req.view(), from).outcome);
      ++compared;
      matched += fast.matched();
    }
  }
  CHECK(compared == 30000);
  // The generator must exercise both outcomes.
  CHECK(matched > 3000);
  CHECK(compared - matched > 1000);
}

TEST_CASE("the default ruleset agrees too, including rule 300-sized sets") {
  Generator gen(7);
  auto defaults = cellroute::testing::MustParse(
      cellroute::testing::ReadText(CELLROUTE_EXAMPLES_DIR "/rules.json"));
  auto big = cellroute::testing::MustParse(gen.Ruleset(300));
  for (int q = 0; q < 3000; ++q) {
    Request req = gen.Req();
    for (const auto* rules : {&defaults, &big}) {
      Outcome fast;
      rules->Evaluate(req.view(), &fast);
      RequireSame(fast, rules->Explain(req.view()).outcome);
    }
  }
}
