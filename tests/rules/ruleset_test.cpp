#include <cellroute/rules.h>
#include <cellroute/token.h>

#include <catch2/catch.hpp>

#include "common/test_util.h"

using cellroute::Action;
using cellroute::ClassifyType;
using cellroute::Outcome;
using cellroute::Request;
using namespace cellroute::testing;

namespace {

std::string Token(const std::string& prefix, std::vector<std::pair<std::string, std::int64_t>> f) {
  cellroute::token::EncodeOptions opt;
  opt.prefix = prefix;
  opt.fields = std::move(f);
  opt.random = std::array<std::uint8_t, 16>{7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7};
  return cellroute::token::Encode(opt).value();
}

const char* kTokenRule = R"J([{
  "id": "runner",
  "match": {"type": "header", "name": "Runner-Token",
            "regex_value": "^glrtr?-(?<payload>[0-9A-Za-z_-]{27,300})\\.01\\.(?<payload_length>[0-9a-z]{2})[0-9a-z]{7}$"},
  "transform": {"type": "routable-token-payload", "input": "${payload}", "length": "${payload_length}", "output": "decoded"},
  "validate": {"exist": ["${decoded.c}"]},
  "action": "classify",
  "classify": {"type": "CELL_ID", "value": "${decoded.c}"}
}, {"id": "fallback", "action": "proxy"}])J";

// A ruleset whose one rule matches the header `name` being present.
std::string json_rule(const std::string& name) {
  return R"J([{"id": "h", "match": {"type": "header", "name": ")J" + name +
         R"J("}, "action": "classify", "classify": {"type": "FIRST_CELL"}}])J";
}

}  // namespace

TEST_CASE("first match wins, in order") {
  auto rules = MustParse(R"J([
    {"id": "a", "match": {"type": "header", "name": "x-a"}, "action": "classify",
     "classify": {"type": "FIRST_CELL"}},
    {"id": "b", "match": {"type": "header", "name": "x-b"}, "action": "classify",
     "classify": {"type": "CELL_ID", "value": "2"}},
    {"id": "c", "match": {"type": "header", "name": "x-b"}, "action": "classify",
     "classify": {"type": "CELL_ID", "value": "3"}}
  ])J");
  Request r;
  CHECK(Evaluate(rules, r).kind() == Outcome::Kind::kNoMatch);
  CHECK(Evaluate(rules, r).rule_index() == -1);
  r.AddHeader("X-B", "1");
  auto o = Evaluate(rules, r);
  CHECK(o.rule_id() == "b");
  CHECK(o.value() == "2");
  r.AddHeader("x-a", "");
  o = Evaluate(rules, r);
  CHECK(o.rule_id() == "a");
  CHECK(o.type() == ClassifyType::kFirstCell);
  CHECK(o.value().empty());
}

TEST_CASE("cookie rules with JavaScript named captures") {
  auto rules = MustParse(R"J({"rules": [
    {"id": "force", "match": {"type": "cookie", "name": "force-cell", "regex_value": "^(?<cell_name>cell-\\d+)$"},
     "action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${cell_name}"}},
    {"id": "session", "match": {"type": "cookie", "regex_name": "_gitlab_session(_[0-9a-f]+)?",
                                "regexValue": "^(?<cell_name>cell-\\d+)-.*"},
     "action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${cell_name}"}}
  ]})J");
  Request r;
  r.AddHeader("Cookie", "a=b; _gitlab_session=cell-1003abc; other=1");
  CHECK(Evaluate(rules, r).kind() == Outcome::Kind::kNoMatch);  // no '-' after the prefix

  Request s;
  s.AddHeader("cookie", "a=b;_gitlab_session_0fa3=cell-2-5cf865011acc ; z=1");
  auto o = Evaluate(rules, s);
  REQUIRE(o.matched());
  CHECK(o.rule_id() == "session");
  CHECK(o.value() == "cell-2");
  CHECK(Var(o, "cell_name") == "cell-2");

  SECTION("the cookie name must match as a whole") {
    Request t;
    t.AddHeader("cookie", "x_gitlab_session=cell-2-5cf8");
    CHECK_FALSE(Evaluate(rules, t).matched());
  }
  SECTION("cookies given apart from the Cookie header") {
    Request t;
    t.AddCookie("force-cell", "cell-7");
    auto f = Evaluate(rules, t);
    CHECK(f.rule_id() == "force");
    CHECK(f.value() == "cell-7");
  }
  SECTION("any of several cookies with the name may match") {
    Request t;
    t.AddHeader("cookie", "_gitlab_session=garbage; _gitlab_session=cell-3-aa");
    CHECK(Evaluate(rules, t).value() == "cell-3");
  }
}

TEST_CASE("a cookie name's named captures are variables") {
  // Every named capture becomes a variable, the regex_name's included (before the value's).
  auto rules = MustParse(R"J([
    {"id": "by_name", "match": {"type": "cookie", "regex_name": "cell_(?<cell>cell-\\d+)"},
     "action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${cell}"}},
    {"id": "session", "match": {"type": "cookie", "regex_name": "_gitlab_session_(?<suffix>[0-9a-f]+)",
                                "regex_value": "^(?<cell_name>cell-\\d+)-"},
     "action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${cell_name}/${suffix}"}}
  ])J");
  Request a;
  a.AddHeader("cookie", "x=1; cell_cell-12=on");
  auto o = Evaluate(rules, a);
  REQUIRE(o.matched());
  CHECK(o.rule_id() == "by_name");
  CHECK(o.value() == "cell-12");

  SECTION("the name must still match as a whole") {
    Request t;
    t.AddHeader("cookie", "cell_cell-12x=on; xcell_cell-3=on");
    CHECK_FALSE(Evaluate(rules, t).matched());
  }
  SECTION("a cookie whose value fails leaves none of its name's captures") {
    Request t;
    t.AddHeader("cookie", "_gitlab_session_aa=garbage; _gitlab_session_bb=cell-4-x");
    auto s = Evaluate(rules, t);
    REQUIRE(s.matched());
    CHECK(s.rule_id() == "session");
    CHECK(s.value() == "cell-4/bb");
    REQUIRE(s.variable_count() == 2);
    CHECK(s.variable(0).name == "suffix");
    CHECK(s.variable(0).value == "bb");
    CHECK(s.variable(1).name == "cell_name");
    CHECK(s.variable(1).value == "cell-4");
  }
  SECTION("explain agrees") {
    auto e = rules.Explain(a.view());
    CHECK(e.outcome.value() == "cell-12");
    CHECK(Var(e.outcome, "cell") == "cell-12");
  }
}

TEST_CASE("routable token rule decodes the cell id") {
  auto rules = MustParse(kTokenRule);
  Request r;
  r.AddHeader("runner-token", Token("glrt-", {{"c", 5}, {"o", 1}}));
  auto o = Evaluate(rules, r);
  REQUIRE(o.matched());
  CHECK(o.rule_id() == "runner");
  CHECK(o.type() == ClassifyType::kCellId);
  CHECK(o.value() == "5");
  CHECK(Var(o, "decoded.o") == "1");

  SECTION("a token without a cell falls through (validate)") {
    Request t;
    t.AddHeader("runner-token", Token("glrt-", {{"o", 1}}));
    CHECK(Evaluate(rules, t).rule_id() == "fallback");
  }
  SECTION("a corrupt token is rejected, not routed") {
    std::string tok = Token("glrt-", {{"c", 5}});
    std::string bad = tok.substr(0, tok.size() - 9) + "zz" + tok.substr(tok.size() - 7);
    Request t;
    t.AddHeader("runner-token", bad);
    auto rej = Evaluate(rules, t);
    CHECK(rej.kind() == Outcome::Kind::kRejected);
    CHECK(rej.rule_id() == "runner");
    CHECK(rej.reason().find("routable token") != std::string_view::npos);
    CHECK(rej.value().empty());
  }
  SECTION("a header that does not look like a token does not match") {
    Request t;
    t.AddHeader("runner-token", "not-a-token");
    CHECK(Evaluate(rules, t).rule_id() == "fallback");
  }
}

TEST_CASE("the whole-token transform checks the CRC") {
  auto rules = MustParse(R"J([{
    "id": "pat", "match": {"type": "header", "name": "private-token", "regex_value": "^(?<token>glpat-.*)$"},
    "transform": {"type": "routable-token", "input": "${token}"},
    "action": "classify", "classify": {"type": "CELL_ID", "value": "${decoded.c}"}}])J");
  std::string tok = Token("glpat-", {{"c", 4}});
  Request r;
  r.AddHeader("private-token", tok);
  CHECK(Evaluate(rules, r).value() == "4");
  tok[8] = tok[8] == 'A' ? 'B' : 'A';
  Request bad;
  bad.AddHeader("private-token", tok);
  CHECK(Evaluate(rules, bad).kind() == Outcome::Kind::kRejected);
}

TEST_CASE("base64 transforms") {
  auto rules = MustParse(R"J([
    {"id": "lines", "match": {"type": "header", "name": "x-lines", "regex_value": "^(?<b>.+)$"},
     "transform": {"type": "base64-line-delimited", "input": "${b}", "output": "d"},
     "action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${d.cell}"}},
    {"id": "jwt", "match": {"type": "header", "name": "authorization", "regex_value": "^Bearer (?<jwt>.+)$"},
     "transform": {"type": "base64-json", "input": "${jwt}", "output": "claims"},
     "action": "classify", "classify": {"type": "CELL_ID", "value": "${claims.cell_id}"}}
  ])J");
  Request r;
  r.AddHeader("x-lines", "Y2VsbDpjZWxsLTIKb3JnOjE=");  // "cell:cell-2\norg:1"
  auto o = Evaluate(rules, r);
  CHECK(o.value() == "cell-2");
  CHECK(Var(o, "d.org") == "1");

  Request j;
  // {"alg":"none"} . {"cell_id":7,"sub":"x"} . sig
  j.AddHeader("authorization", "Bearer eyJhbGciOiJub25lIn0.eyJjZWxsX2lkIjo3LCJzdWIiOiJ4In0.c2ln");
  CHECK(Evaluate(rules, j).value() == "7");

  Request bad;
  bad.AddHeader("authorization", "Bearer eyJhbGciOiJub25lIn0.bm90IGpzb24.c2ln");  // "not json"
  CHECK(Evaluate(rules, bad).kind() == Outcome::Kind::kRejected);
}

TEST_CASE("path segment patterns and reserved words") {
  auto rules = MustParse(R"J({"rules": [
    {"id": "org", "match": {"type": "path", "pattern": "/o/:organization_path/*"},
     "action": "classify", "classify": {"type": "organization_path", "value": "${organization_path}"}},
    {"id": "route", "match": {"type": "path", "pattern": "/:route/*"},
     "action": "classify", "classify": {"type": "ROUTE", "value": "${route}"}},
    {"id": "fallback", "action": "proxy"}
  ]})J");
  auto route = [&](const std::string& target) {
    Request r;
    r.SetTarget(target);
    return Evaluate(rules, r);
  };
  CHECK(route("/o/acme/projects").rule_id() == "org");
  CHECK(route("/o/acme/projects").value() == "acme");
  CHECK(route("/o/acme").value() == "acme");
  CHECK(route("/o/acme/").value() == "acme");
  CHECK(route("/o").rule_id() == "fallback");  // "o" is reserved for top-level routes
  CHECK(route("/o/").rule_id() == "fallback");
  CHECK(route("/gitlab-org/gitlab/-/issues?x=1").type() == ClassifyType::kClaimRoute);
  CHECK(route("/gitlab-org/gitlab/-/issues?x=1").value() == "gitlab-org");
  CHECK(route("/gitlab-org").value() == "gitlab-org");
  for (const char* reserved :
       {"/api/v4/projects", "/users/sign_in", "/-/health", "/help", "/explore", "/admin",
        "/dashboard", "/assets/app.js", "/oauth/token", "/uploads/x", "/API/v4"}) {
    INFO(reserved);
    CHECK(route(reserved).rule_id() == "fallback");
  }
  CHECK(route("/").rule_id() == "fallback");
  CHECK(route("//x").rule_id() == "fallback");
  CHECK(route("relative").rule_id() == "fallback");
  // Every reserved top-level group name of GitLab's documentation (doc/user/reserved_names.md),
  // and nothing else but "o".
  const char* documented[] = {"-",
                              ".well-known",
                              "404.html",
                              "422.html",
                              "500.html",
                              "502.html",
                              "503.html",
                              "admin",
                              "api",
                              "apple-touch-icon-precomposed.png",
                              "apple-touch-icon.png",
                              "assets",
                              "dashboard",
                              "deploy.html",
                              "explore",
                              "favicon.ico",
                              "favicon.png",
                              "files",
                              "groups",
                              "health_check",
                              "help",
                              "import",
                              "jwt",
                              "login",
                              "oauth",
                              "profile",
                              "projects",
                              "public",
                              "robots.txt",
                              "s",
                              "search",
                              "sitemap",
                              "sitemap.xml",
                              "sitemap.xml.gz",
                              "slash-command-logo.png",
                              "snippets",
                              "unsubscribes",
                              "uploads",
                              "users",
                              "v2"};
  for (const char* word : documented) {
    INFO(word);
    CHECK(route(std::string("/") + word + "/x").rule_id() == "fallback");
  }
  for (const char* not_reserved : {"gitlab-org", "user", "apple-touch-icon", "v3", "sitemaps"}) {
    INFO(not_reserved);
    CHECK(route(std::string("/") + not_reserved + "/x").rule_id() == "route");
  }
}

TEST_CASE("a ruleset's own reserved words replace the built-in list") {
  auto rules = MustParse(R"J({"reserved_words": ["private"], "rules": [
    {"id": "route", "match": {"type": "path", "pattern": "/:route/*"},
     "action": "classify", "classify": {"type": "route", "value": "${route}"}}]})J");
  Request r;
  r.SetTarget("/api/v4");
  CHECK(Evaluate(rules, r).value() == "api");
  r.SetTarget("/Private/x");
  CHECK_FALSE(Evaluate(rules, r).matched());
  // No length limit: a long reserved word is still reserved, in any case.
  std::string long_word(100, 'w');
  auto long_rules = MustParse(R"J({"reserved_words": [")J" + long_word + R"J("], "rules": [
    {"id": "route", "match": {"type": "path", "pattern": "/:route/*"},
     "action": "classify", "classify": {"type": "route", "value": "${route}"}}]})J");
  r.SetTarget("/" + std::string(100, 'W') + "/x");
  CHECK_FALSE(Evaluate(long_rules, r).matched());
  CHECK_FALSE(long_rules.Explain(r.view()).outcome.matched());
  r.SetTarget("/" + std::string(99, 'w') + "/x");
  CHECK(Evaluate(long_rules, r).matched());
}

TEST_CASE("path regex, method, host and query matchers, all of an array must match") {
  auto rules = MustParse(R"J([
    {"id": "git", "match": [
        {"type": "method", "regex_value": "^(GET|POST)$"},
        {"type": "host", "regex_value": "^gitlab\\.example\\.com$"},
        {"type": "path", "regex_value": "^/(?<ns>[^/]+)/[^/]+\\.git/"},
        {"type": "query", "regex_value": "service=git-(?<svc>upload|receive)-pack"}],
     "action": "classify", "classify": {"type": "route", "value": "${ns}"}}
  ])J");
  Request r;
  r.host = "gitlab.example.com";
  r.SetTarget("/acme/widgets.git/info/refs?service=git-upload-pack");
  auto o = Evaluate(rules, r);
  REQUIRE(o.matched());
  CHECK(o.value() == "acme");
  CHECK(Var(o, "svc") == "upload");
  r.method = "DELETE";
  CHECK_FALSE(Evaluate(rules, r).matched());
  r.method = "GET";
  r.host = "evil.example.com";
  CHECK_FALSE(Evaluate(rules, r).matched());
}

TEST_CASE("templates interpolate several variables and literals") {
  auto rules = MustParse(R"J([
    {"id": "t", "match": {"type": "header", "name": "x-cell", "regex_value": "^(?<n>\\d+)(?:-(?<suffix>[a-z]+))?$"},
     "action": "proxy", "proxy": {"address": "cell-${n}.internal:8080"}},
    {"id": "u", "match": {"type": "header", "name": "x-other", "regex_value": "^(?<n>\\d+)(?:-(?<suffix>[a-z]+))?$"},
     "action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${suffix}-${n}"}}
  ])J");
  Request r;
  r.AddHeader("x-cell", "12");
  auto o = Evaluate(rules, r);
  CHECK(o.action() == Action::kProxy);
  CHECK(o.proxy_address() == "cell-12.internal:8080");
  // An optional group that did not take part leaves its variable absent: the rule does not match.
  Request s;
  s.AddHeader("x-other", "3");
  CHECK_FALSE(Evaluate(rules, s).matched());
  Request t;
  t.AddHeader("x-other", "3-cell");
  CHECK(Evaluate(rules, t).value() == "cell-3");
}

TEST_CASE("a variable is found wherever the groups before it left it") {
  // Templates look first where a variable lands when everything before it was produced; an
  // optional group that did not take part, or a token without a field, moves it.
  auto rules = MustParse(R"J([
    {"id": "two", "match": [
       {"type": "header", "name": "x-a", "regex_value": "^(?:(?<a>[a-z]+)-)?(?<n>\\d+)$"},
       {"type": "header", "name": "x-b", "regex_value": "^(?<b>[a-z]+)(?:-(?<c>[a-z]+))?$"}],
     "action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${b}:${n}"}},
    {"id": "token", "match": {"type": "header", "name": "x-token",
       "regex_value": "^(?:(?<kind>[A-Z]+):)?(?<t>.+)$"},
     "transform": {"type": "routable-token", "input": "${t}", "output": "f"},
     "action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${f.o}/${f.u}"}}
  ])J");
  for (const char* a : {"x-7", "7"}) {
    for (const char* b : {"y-z", "y"}) {
      Request r;
      r.AddHeader("x-a", a);
      r.AddHeader("x-b", b);
      auto o = Evaluate(rules, r);
      INFO(a << " " << b);
      REQUIRE(o.matched());
      CHECK(o.value() == "y:7");
    }
  }
  for (const char* kind : {"GL:", ""}) {
    Request r;
    r.AddHeader("x-token", kind + Token("glrt-", {{"o", 5}, {"u", 9}}));
    auto o = Evaluate(rules, r);
    INFO(kind);
    REQUIRE(o.matched());
    CHECK(o.value() == "5/9");
    Request c;
    c.AddHeader("x-token", kind + Token("glrt-", {{"c", 2}, {"g", 3}, {"o", 5}, {"u", 9}}));
    CHECK(Evaluate(rules, c).value() == "5/9");
  }
}

TEST_CASE("header names match ignoring ASCII case, and nothing else") {
  // Names shorter than four bytes (compared byte by byte), of four to seven (two overlapping
  // words of four), as long as and longer than the eight bytes compared at a time.
  for (std::string name : {"a", "x-b@", "x-6@[z", "ab-cd_e", "abcdefgh", "private-token",
                           "x-long-header-name_0[9]"}) {
    auto rules = MustParse(json_rule(name));
    auto matches = [&](const std::string& sent) {
      Request r;
      r.AddHeader("x-other", "1");
      r.AddHeader(sent, "v");
      return Evaluate(rules, r).matched();
    };
    INFO(name);
    CHECK(matches(name));
    std::string upper = name, mixed = name;
    for (std::size_t i = 0; i < name.size(); ++i) {
      upper[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(name[i])));
      if (i % 2 == 0) mixed[i] = upper[i];
    }
    CHECK(matches(upper));
    CHECK(matches(mixed));
    for (std::size_t i = 0; i < name.size(); ++i) {
      // Any other byte at any place: one bit off (0x20 included, where no letter is), or none.
      for (char flip : {'\x01', '\x20', '\x40'}) {
        std::string other = name;
        other[i] = static_cast<char>(other[i] ^ flip);
        bool same_letter = std::tolower(static_cast<unsigned char>(other[i])) ==
                           static_cast<unsigned char>(name[i]);
        if (!same_letter) CHECK_FALSE(matches(other));
      }
    }
    CHECK_FALSE(matches(name + "x"));
    CHECK_FALSE(matches(name.substr(1)));
  }
}

TEST_CASE("values of every length are copied whole, recorded or not") {
  // Values are copied in words of several sizes, by length: every length up to and past them,
  // each byte different, lands whole and nothing more.
  auto rules = MustParse(R"J([{"id": "v",
    "match": {"type": "header", "name": "x-v", "regex_value": "^(?<v>.*)$"},
    "action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${v}"}},
    {"id": "p", "match": {"type": "header", "name": "x-p", "regex_value": "^(?<p>.*)$"},
    "action": "proxy", "proxy": {"address": "${p}"}}])J");
  for (std::size_t n = 0; n <= 300; ++n) {
    std::string value;
    for (std::size_t i = 0; i < n; ++i) value += static_cast<char>('!' + (i * 7 + n) % 90);
    for (bool record : {true, false}) {
      INFO("length " << n << (record ? ", recorded" : ", not recorded"));
      Request r;
      r.AddHeader("x-v", value);
      Outcome out;
      out.RecordVariables(record);
      rules.Evaluate(r.view(), &out);
      REQUIRE(out.matched());
      CHECK(out.value() == value);
      if (n == 0 || n > 255) continue;  // a proxy address has 1 to 255 bytes
      Request p;
      p.AddHeader("x-p", value);
      rules.Evaluate(p.view(), &out);
      REQUIRE(out.matched());
      CHECK(out.proxy_address() == value);
    }
  }
}

TEST_CASE("hostile input is handled, never a crash or an overflow") {
  auto rules = MustParse(R"J([
    {"id": "greedy", "match": {"type": "header", "name": "x-big", "regex_value": "^(?<all>.*)$"},
     "action": "classify", "classify": {"type": "SESSION_PREFIX", "value": "${all}${all}"}},
    {"id": "fallback", "action": "proxy"}])J");
  Request r;
  r.AddHeader("x-big", std::string(10000, 'a'));
  auto o = Evaluate(rules, r);
  CHECK(o.kind() == Outcome::Kind::kRejected);
  CHECK(o.reason().find("exceed") != std::string_view::npos);
  Request huge;  // past the request bound: refused before any rule runs
  huge.AddHeader("x-big", std::string(100000, 'a'));
  CHECK(Evaluate(rules, huge).reason() == "request is larger than 65536 bytes");

  Request s;
  s.AddHeader("x-big", std::string(700, 'b'));  // fits once, not twice
  auto t = Evaluate(rules, s);
  CHECK(t.kind() == Outcome::Kind::kRejected);

  Request u;
  u.AddHeader("x-big", "short");
  CHECK(Evaluate(rules, u).value() == "shortshort");

  // A proxy address rendered past its bound is refused, and the outcome shows no address.
  auto px = MustParse(R"J([{"id": "p", "match": {"type": "header", "name": "x-to",
                                                  "regex_value": "^(?<to>.*)$"},
                           "action": "proxy", "proxy": {"address": "${to}.internal:80"}}])J");
  Request far;
  far.AddHeader("x-to", std::string(300, 'h'));
  auto refused = Evaluate(px, far);
  CHECK(refused.kind() == Outcome::Kind::kRejected);
  CHECK(refused.reason() == "proxy address is longer than 255 bytes");
  CHECK(refused.proxy_address().empty());
  CHECK(refused.value().empty());

  // Pathological regex inputs run in linear time with RE2.
  auto re = MustParse(R"J([{"id": "r", "match": {"type": "path", "regex_value": "^(a+)+$"},
                          "action": "classify", "classify": {"type": "FIRST_CELL"}}])J");
  Request p;
  p.SetTarget(std::string(50000, 'a') + "!");
  CHECK_FALSE(Evaluate(re, p).matched());

  // Cookie headers with odd shapes.
  auto ck = MustParse(R"J([{"id": "c", "match": {"type": "cookie", "name": "k"},
                          "action": "classify", "classify": {"type": "FIRST_CELL"}}])J");
  for (const char* cookie : {"", ";;;", "=", "k", "=k", " ; k ; ", "a=b;;=c"}) {
    Request c;
    c.AddHeader("cookie", cookie);
    INFO(cookie);
    CHECK_FALSE(Evaluate(ck, c).matched());
  }
  Request c;
  c.AddHeader("cookie", " a=1 ;k= ");
  CHECK(Evaluate(ck, c).matched());
}

TEST_CASE("an outcome is a self-contained value") {
  auto rules = MustParse(kTokenRule);
  Outcome copy;
  {
    Request r;
    r.AddHeader("runner-token", Token("glrt-", {{"c", 9}}));
    copy = Evaluate(rules, r);
  }  // the request's memory is gone
  CHECK(copy.value() == "9");
  CHECK(Var(copy, "decoded.c") == "9");
  CHECK(copy.rule_id() == "runner");
}

TEST_CASE("explain lists every rule tried and why") {
  auto rules = MustParse(kTokenRule);
  Request r;
  r.AddHeader("runner-token", "glrt-short");
  auto e = rules.Explain(r.view());
  REQUIRE(e.rules.size() == 2);
  CHECK(e.rules[0].rule_id == "runner");
  CHECK(e.rules[0].result == Outcome::Kind::kNoMatch);
  CHECK(e.rules[0].reason.find("does not match") != std::string::npos);
  CHECK(e.rules[1].result == Outcome::Kind::kMatched);
  CHECK(e.outcome.rule_id() == "fallback");

  Request none;
  e = rules.Explain(none.view());
  CHECK(e.rules[0].reason == "header 'runner-token' is absent");

  // Explain and Evaluate agree.
  Request good;
  good.AddHeader("runner-token", Token("glrt-", {{"c", 3}}));
  e = rules.Explain(good.view());
  auto o = Evaluate(rules, good);
  CHECK(e.outcome.rule_id() == o.rule_id());
  CHECK(e.outcome.value() == o.value());
}

TEST_CASE("classify type names") {
  ClassifyType t;
  REQUIRE(cellroute::ParseClassifyType("SESSION_PREFIX", &t));
  CHECK(t == ClassifyType::kSessionPrefix);
  REQUIRE(cellroute::ParseClassifyType("ORGANIZATION_PATH", &t));
  CHECK(t == ClassifyType::kClaimOrganizationPath);
  CHECK(cellroute::ClaimFieldNumber(t) == 2);
  CHECK(cellroute::ClassifyTypeName(ClassifyType::kClaimServiceDeskCustomEmail) ==
        "service_desk_custom_email");
  CHECK(cellroute::ClaimFieldNumber(ClassifyType::kClaimServiceDeskCustomEmail) == 12);
  CHECK_FALSE(cellroute::ParseClassifyType("session_prefix", &t));
  CHECK_FALSE(cellroute::ParseClassifyType("NOPE", &t));
}

TEST_CASE("the shipped example ruleset loads") {
  auto r = cellroute::Ruleset::LoadFile(CELLROUTE_EXAMPLES_DIR "/rules.json");
  INFO(r.status().message());
  REQUIRE(r.ok());
  CHECK(r->size() == 8);
  CHECK(r->rule_id(7) == "fallback");
}
