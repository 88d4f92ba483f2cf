// Rules read cookies from a split made once per evaluation (16 bytes at a time); every rule
// must still see exactly the cookies RequestView::AnyCookie yields, in the same order.
#include <cellroute/rules.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <random>

#include "common/test_util.h"

using namespace cellroute;

TEST_CASE("rules see the cookies RequestView::AnyCookie yields") {
  const std::vector<std::string> names = {"k", "a", "ka", "k k"};
  nlohmann::json rules = nlohmann::json::array();
  for (const auto& n : names) {
    rules.push_back({{"id", "cookie " + n},
                     {"match", {{"type", "cookie"}, {"name", n}, {"regex_value", "^(?<v>.*)$"}}},
                     {"action", "classify"},
                     {"classify", {{"type", "SESSION_PREFIX"}, {"value", "${v}"}}}});
  }
  // One name a ruleset: the index searches the Cookie headers for it. All four in one: past
  // two names the index splits the cookies instead, and the first present name's rule wins.
  std::vector<Ruleset> by_name;
  for (const auto& r : rules) {
    by_name.push_back(Ruleset::Parse(nlohmann::json::array({r}).dump(), "cookies.json").value());
  }
  const Ruleset all = Ruleset::Parse(rules.dump(), "cookies.json").value();
  // Cookie headers are named in any case, among other headers (some with names that are not
  // quite "cookie", whose values must be ignored), at times past the 64th header.
  const std::vector<std::string> cookie_names = {"Cookie", "cookie", "COOKIE", "cOoKiE"};
  const std::vector<std::string> other_names = {"accept", "cookiE2", "cookies", "bookie",
                                                "c0okie", "cookie ", "cooki",  "x-cookie"};
  std::mt19937_64 rng(7);
  const std::string alphabet = "ka=; =;\t x";
  int compared = 0, past_64 = 0;
  for (int i = 0; i < 20000; ++i) {
    Request req;
    auto others = [&](std::size_t n) {
      for (std::size_t k = 0; k < n; ++k) req.AddHeader(other_names[rng() % other_names.size()], "k=decoy; a=decoy");
    };
    others(i % 8 == 0 ? 60 + rng() % 10 : rng() % 3);
    int headers = 1 + static_cast<int>(rng() % 2);
    for (int h = 0; h < headers; ++h) {
      if (req.view().headers.size() >= 64) ++past_64;
      req.AddHeader(cookie_names[rng() % cookie_names.size()],
                    testing::RandomText(rng, alphabet, i % 10 == 0 ? 400 : 60));
      others(rng() % 3);
    }
    if (rng() % 4 == 0) req.AddCookie("k", "parsed");
    RequestView view = req.view();
    std::string first_present;
    for (std::size_t r = 0; r < names.size(); ++r) {
      std::string expected;
      bool present = view.AnyCookie([&](std::string_view name, std::string_view value) {
        if (name != names[r]) return false;
        expected = std::string(value);
        return true;
      });
      Outcome out;
      by_name[r].Evaluate(view, &out);
      INFO("request " << i << ", name '" << names[r] << "'");
      REQUIRE(out.matched() == present);
      if (present) REQUIRE(out.value() == expected);
      if (present && first_present.empty()) first_present = "cookie " + names[r];
      ++compared;
    }
    Outcome out;
    all.Evaluate(view, &out);
    INFO("request " << i << ", all names");
    REQUIRE(out.matched() == !first_present.empty());
    if (out.matched()) REQUIRE(out.rule_id() == first_present);
  }
  CHECK(compared == 80000);
  CHECK(past_64 > 1000);
}
