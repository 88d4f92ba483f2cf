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
  std::vector<Ruleset> by_name;
  for (const auto& r : rules) {
    by_name.push_back(Ruleset::Parse(nlohmann::json::array({r}).dump(), "cookies.json").value());
  }
  std::mt19937_64 rng(7);
  const std::string alphabet = "ka=; =;\t x";
  int compared = 0;
  for (int i = 0; i < 20000; ++i) {
    Request req;
    int headers = 1 + static_cast<int>(rng() % 2);
    for (int h = 0; h < headers; ++h) {
      req.AddHeader(h % 2 ? "cookie" : "Cookie",
                    testing::RandomText(rng, alphabet, i % 10 == 0 ? 400 : 60));
    }
    if (rng() % 4 == 0) req.AddCookie("k", "parsed");
    RequestView view = req.view();
    for (std::size_t r = 0; r < names.size(); ++r) {
      std::string expected;
      bool present = view.AnyCookie([&](std::string_view name, std::string_view value) {
        if (name != names[r]) return false;
        expected = std::string(value);
        return true;
      });
      Outcome out;
      by_name[r].Evaluate(view, &out);
      INFO("cookie header '" << req.view().headers[0].value << "', name '" << names[r] << "'");
      REQUIRE(out.matched() == present);
      if (present) REQUIRE(out.value() == expected);
      ++compared;
    }
  }
  CHECK(compared == 80000);
}
