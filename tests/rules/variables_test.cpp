// An outcome that does not record its variables (Outcome::RecordVariables(false), what the C
// API, Ruby and the nginx module route with) must decide exactly as one that does: the same
// rule, value, address and rejection, the buffer's bounds included. Rules here read their
// variables every way templates can: alone, among literals, repeated, through every transform.
#include <cellroute/rules.h>
#include <cellroute/token.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <random>

#include "common/test_util.h"

using cellroute::Outcome;
using cellroute::Request;
using cellroute::testing::DecisionText;
using json = nlohmann::json;

namespace {

// Standard base64, padded: what the base64 transforms read.
std::string Base64(const std::string& in) {
  static constexpr char kDigits[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < in.size(); i += 3) {
    std::uint32_t v = 0;
    for (std::size_t k = 0; k < 3; ++k) {
      v = v << 8 | (i + k < in.size() ? static_cast<unsigned char>(in[i + k]) : 0u);
    }
    const std::size_t chars = std::min<std::size_t>(in.size() - i, 3) + 1;
    for (std::size_t k = 0; k < 4; ++k) out += k < chars ? kDigits[v >> (18 - 6 * k) & 63] : '=';
  }
  return out;
}

class Generator : public cellroute::testing::Dice {
 public:
  using Dice::Dice;

  json Rule(int i) {
    json r = {{"id", "r" + std::to_string(i)}};
    auto classify = [&](const std::string& value) {
      r["action"] = "classify";
      r["classify"] = {{"type", Pick<std::string>({"SESSION_PREFIX", "route", "CELL_ID"})},
                       {"value", value}};
    };
    switch (rng_() % 8) {
      case 0:
        r["match"] = {{"type", "header"},
                      {"name", "x-a"},
                      {"regex_value", "^(?<a>[a-z]*)(?<b>\\d*)(?:-(?<c>.*))?$"}};
        classify(Pick<std::string>(
            {"${a}", "${b}", "${a}-${b}", "cell-${b}", "${a}${a}${a}", "${c}", "${c}${a}"}));
        break;
      case 1:
        r["match"] = {{"type", "header"}, {"name", "x-tok"}, {"regex_value", "^(?<t>.+)$"}};
        r["transform"] = {{"type", "routable-token"}, {"input", "${t}"}};
        if (Coin(50))
          r["validate"] = {
              {"exist", {Pick<std::string>({"${decoded.u}", "${decoded.o}", "x${t}"})}}};
        classify(Pick<std::string>(
            {"${decoded.c}", "${decoded.o}/${decoded.c}", "${t}", "c${decoded.c}"}));
        break;
      case 2:
        r["match"] = {{"type", "header"}, {"name", "x-lines"}, {"regex_value", "^(?<b>.+)$"}};
        r["transform"] = {{"type", "base64-line-delimited"}, {"input", "${b}"}, {"output", "l"}};
        classify(Pick<std::string>({"${l.k}", "${l.k}-${l.v}", "${b}"}));
        break;
      case 3:
        r["match"] = {{"type", "header"}, {"name", "x-json"}, {"regex_value", "^(?<j>.+)$"}};
        r["transform"] = {{"type", "base64-json"}, {"input", "${j}"}};
        classify(Pick<std::string>({"${decoded.sub}", "${decoded.sub}${decoded.n}"}));
        break;
      case 4:
        r["match"] = {
            {"type", "cookie"}, {"regex_name", "s_(?<n>[a-z]+)"}, {"regex_value", "^(?<v>.*)$"}};
        classify(Pick<std::string>({"${n}:${v}", "${v}", "${n}"}));
        break;
      case 5:
        r["match"] = {{"type", "path"}, {"pattern", "/o/:org/*"}};
        if (Coin(50)) {
          r["action"] = "proxy";
          r["proxy"] = {{"address", Pick<std::string>({"${org}.internal:80", "${org}"})}};
        } else {
          classify("${org}");
        }
        break;
      case 6:
        r["match"] = {{"type", "path"}, {"regex_value", "^/p/(?<x>[^/]*)(?:/(?<y>.*))?$"}};
        classify(Pick<std::string>({"${x}${y}", "${y}", "${x}"}));
        break;
      default:
        r["action"] = "proxy";
        break;
    }
    return r;
  }

  std::string Ruleset() {
    json rules = json::array();
    int n = 1 + static_cast<int>(rng_() % 6);
    for (int i = 0; i < n; ++i) rules.push_back(Rule(i));
    return rules.dump();
  }

  std::string Text() {
    static const std::vector<std::size_t> sizes = {0, 1, 5, 30, 300, 700, 1000, 1100, 2100};
    std::size_t n = Pick(sizes) + rng_() % 3;
    std::string s;
    for (std::size_t i = 0; i < n; ++i) s += "abc123-x"[rng_() % 8];
    return s;
  }

  std::string Token() {
    cellroute::token::EncodeOptions opt;
    opt.prefix = "glrt-";
    for (const char* k : {"c", "o", "u"}) {
      // Every magnitude: a field's digits count towards the buffer's bound.
      if (Coin(70))
        opt.fields.push_back({k, static_cast<std::int64_t>(rng_() >> (1 + rng_() % 63))});
    }
    if (opt.fields.empty() || opt.fields[0].first == "u") opt.fields.push_back({"o", 7});
    std::string t = cellroute::token::Encode(opt).value();
    if (Coin(10)) t[6] = t[6] == 'A' ? 'B' : 'A';  // a corrupt one
    return t;
  }

  Request Req() {
    Request q;
    q.SetTarget(Pick<std::string>(
        {"/", "/o/" + Text() + "/x", "/o/acme", "/p/" + Text(), "/p/a/" + Text(), "/api/v4/x"}));
    if (Coin(40)) q.AddHeader("x-a", Text());
    if (Coin(30)) q.AddHeader("x-tok", Token());
    if (Coin(20)) {
      std::string lines = "k:" + Text() + "\nv:" + Text() + (Coin(20) ? "\nbad" : "");
      q.AddHeader("x-lines", Base64(lines));
    }
    if (Coin(20)) {
      json j = {{"sub", Text()}, {"n", static_cast<int>(rng_() % 1000)}};
      q.AddHeader("x-json", "e30." + Base64(j.dump()) + ".sig");
    }
    if (Coin(30)) q.AddHeader("cookie", "s_" + Pick<std::string>({"ab", "q", "zz"}) + "=" + Text());
    return q;
  }
};

}  // namespace

TEST_CASE("a decision is the same whether or not it records its variables") {
  Generator gen(20261203);
  int compared = 0, matched = 0, rejected = 0, too_long = 0;
  for (int set = 0; set < 300; ++set) {
    std::string text = gen.Ruleset();
    auto rules = cellroute::testing::MustParse(text);
    Outcome lean;
    lean.RecordVariables(false);
    for (int q = 0; q < 100; ++q) {
      Request req = gen.Req();
      Outcome full;
      rules.Evaluate(req.view(), &full);
      rules.Evaluate(req.view(), &lean);  // reused, as routers reuse decisions
      INFO("rules: " << text);
      INFO("path: " << req.path);
      REQUIRE(DecisionText(lean) == DecisionText(full));
      REQUIRE(lean.variable_count() == 0);
      REQUIRE_FALSE(lean.records_variables());
      // And as the reference evaluation, which always records.
      auto explained = rules.Explain(req.view());
      REQUIRE(explained.outcome.value() == full.value());
      REQUIRE(explained.outcome.variable_count() == full.variable_count());
      ++compared;
      matched += full.matched();
      rejected += full.kind() == Outcome::Kind::kRejected;
      too_long += full.rejection() == Outcome::Rejection::kValueTooLong;
    }
  }
  CHECK(compared == 30000);
  // The generator must reach matches, transform refusals and the buffer's bound.
  CHECK(matched > 5000);
  CHECK(rejected - too_long > 100);
  CHECK(too_long > 100);
}

TEST_CASE("an outcome that does not record variables shows none, and may record again") {
  auto rules = cellroute::testing::MustParse(R"J([
    {"id": "t", "match": {"type": "header", "name": "x-a", "regex_value": "^(?<a>\\w+)$"},
     "action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "cell-${a}"}}])J");
  Request r;
  r.AddHeader("x-a", "7");
  Outcome o;
  CHECK(o.records_variables());
  o.RecordVariables(false);
  rules.Evaluate(r.view(), &o);
  CHECK(o.value() == "cell-7");
  CHECK(o.variable_count() == 0);
  std::string_view v;
  CHECK_FALSE(o.Find("a", &v));
  o.RecordVariables(true);
  rules.Evaluate(r.view(), &o);
  REQUIRE(o.variable_count() == 1);
  CHECK(o.variable(0).name == "a");
  CHECK(o.variable(0).value == "7");
  // Explain always records.
  CHECK(rules.Explain(r.view()).outcome.variable_count() == 1);
}
