// Regexes of simple shapes are matched without RE2 (src/rules/simple_regex.h). Whatever
// matcher runs, a rule must match exactly when plain RE2 does and capture exactly what RE2
// captures: compared here over the shipped rules' patterns and generated ones.
#include <cellroute/rules.h>
#include <re2/re2.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <random>

#include "common/test_util.h"

using namespace cellroute;

namespace {

// Pieces of patterns, most of them in the shapes the fast matcher takes.
const std::vector<std::string> kPieces = {
    "a",      "b",     "-",       "\\.",   "\\d",     "\\d+",    "[a-c]",   "[a-c]+", "[0-9a-f]{2}",
    "b{1,3}", "a?",    "a*",      "x",     "[_-]",    "\\w+",    "(",       ")",      ")?",
    "(?:",    "(?P<", "[ab]{2,}", "\\s",   ".",       "|",       "[^a]",    "c",      "1",
    "\\-",    "[]a]",  "[a-]",    "(?i)",  "+",       "\\b",     "[[:alpha:]]"};

std::string RandomPattern(std::mt19937_64& rng, int* named) {
  std::string s = rng() % 4 ? "^" : "";
  std::size_t n = 1 + rng() % 7;
  for (std::size_t i = 0; i < n; ++i) {
    const std::string& p = kPieces[rng() % kPieces.size()];
    s += p == "(?P<" ? "(?P<g" + std::to_string(++*named) + ">" : p;
  }
  int r = static_cast<int>(rng() % 4);
  if (r == 0) s += "$";
  if (r == 1) s += ".*";
  return s;
}

std::string RandomText(std::mt19937_64& rng) {
  return cellroute::testing::RandomText(rng, "aabbcx-._1 9f", 10);
}

struct Compared {
  int patterns = 0;
  int texts = 0;
};

// Every named group of `pattern` against the rule's variables, as a path search and as a whole
// cookie name.
void Compare(const std::string& pattern, const std::vector<std::string>& texts, Compared* c) {
  RE2::Options opt;
  opt.set_log_errors(false);
  RE2 re(pattern, opt);
  if (!re.ok()) return;
  nlohmann::json path_rule = {{"id", "path"},
                              {"match", {{"type", "path"}, {"regex_value", pattern}}},
                              {"action", "proxy"}};
  nlohmann::json cookie_rule = {{"id", "cookie"},
                                {"match", {{"type", "cookie"}, {"regex_name", pattern}}},
                                {"action", "proxy"}};
  auto by_path = Ruleset::Parse(nlohmann::json::array({path_rule}).dump(), "gen.json");
  auto by_cookie = Ruleset::Parse(nlohmann::json::array({cookie_rule}).dump(), "gen.json");
  if (!by_path.ok() || !by_cookie.ok()) return;
  ++c->patterns;
  const int groups = re.NumberOfCapturingGroups();
  std::vector<re2::StringPiece> sub(static_cast<std::size_t>(groups) + 1);
  for (const std::string& text : texts) {
    ++c->texts;
    Request r;
    r.path = text;
    Outcome out;
    by_path->Evaluate(r.view(), &out);
    bool matched = re.Match(text, 0, text.size(), RE2::UNANCHORED, sub.data(), groups + 1);
    INFO("pattern /" << pattern << "/ on '" << text << "'");
    REQUIRE(out.matched() == matched);
    if (matched) {
      for (const auto& [name, index] : re.NamedCapturingGroups()) {
        std::string_view got;
        bool present = out.Find(name, &got);
        INFO("group " << name);
        REQUIRE(present == (sub[static_cast<std::size_t>(index)].data() != nullptr));
        if (present) REQUIRE(got == std::string_view(sub[static_cast<std::size_t>(index)].data(),
                                                      sub[static_cast<std::size_t>(index)].size()));
      }
    }
    Request cookie;
    cookie.AddCookie(text, "v");
    by_cookie->Evaluate(cookie.view(), &out);
    REQUIRE(out.matched() == RE2::FullMatch(text, re));
  }
}

}  // namespace

TEST_CASE("simple regexes match and capture exactly what RE2 does") {
  std::vector<std::string> patterns = {
      // The shipped rules' shapes and their near misses.
      "^(?P<cell_name>cell-\\d+)$",
      "^(?P<cell_name>cell-\\d+)-.*",
      "^glrtr?-(?P<payload>[0-9A-Za-z_-]{27,300})\\.01\\.(?P<payload_length>[0-9a-z]{2})"
      "[0-9a-z]{7}$",
      "^Bearer gl[a-z]+-(?P<payload>[0-9A-Za-z_-]{27,300})\\.01\\.(?P<payload_length>[0-9a-z]{2})"
      "[0-9a-z]{7}$",
      "_gitlab_session(_[0-9a-f]+)?",
      "^/api/v4/internal/feature-7/(?P<id>\\d+)",
      // Choices the next byte cannot decide: RE2 must keep them.
      "^a*a",
      "^(?P<g1>a+)(?P<g2>a)",
      "^(ab)?a",
      "^a(bc)?",
      "^a(bc)?$",
      "^(a(bc)?)",
      "^(?P<g1>a(?P<g2>b)?c)?d",
      "^(?P<g1>a+b)?",
      "^x(?:a{2,3}){1}",
      // Groups folded into the nodes they begin and end with: nested, sharing a first or a
      // last node, inside (?:...), and right after an optional group (where its skip lands).
      "^((?P<g1>a)b)c",
      "^(?P<g1>(?P<g2>a+)b)",
      "^(?P<g1>a(?P<g2>b))",
      "^(?P<g1>(?P<g2>a))$",
      "^(x)?(?P<g1>a)b",
      "^(x)?(?:a)(?P<g1>b+)",
      "^a(?:(?P<g1>b)c)?d",
      "^(?:(?P<g1>a)(?P<g2>b))?(?P<g3>c)",
      "^[]a]+b",
      "^[a-]+b",
      "^a{0}b",
      "^\\d{2,}",
      "^$",
      "^",
      "",
  };
  std::mt19937_64 rng(20261202);
  for (int i = 0; i < 4000; ++i) {
    int named = 0;
    patterns.push_back(RandomPattern(rng, &named));
  }
  std::vector<std::string> fixed = {"",
                                    "cell-2",
                                    "cell-12-abc",
                                    "cell-",
                                    "_gitlab_session",
                                    "_gitlab_session_0af",
                                    "_gitlab_session_",
                                    "_gitlab_session_0ag",
                                    "aaa",
                                    "abcd",
                                    "abx",
                                    "abc",
                                    "/api/v4/internal/feature-7/12/x",
                                    "]]ab",
                                    "--ab",
                                    "glrt-abcdefghijklmnopqrstuvwxyz0.01.0r1234567",
                                    "Bearer glpat-abcdefghijklmnopqrstuvwxyz0_.01.0r1234567"};
  Compared c;
  for (const std::string& p : patterns) {
    std::vector<std::string> texts = fixed;
    for (int t = 0; t < 30; ++t) texts.push_back(RandomText(rng));
    Compare(p, texts, &c);
  }
  // Most generated patterns must compile, or the comparison says little.
  CHECK(c.patterns > 1500);
  CHECK(c.texts > 50000);
}

TEST_CASE("a long run stops at exactly the byte where RE2 stops") {
  // A run is tested eight bytes at a time while they all belong, then byte by byte: a byte
  // outside the class at every position of texts up to 72 bytes must end the run where RE2
  // ends it. The outside bytes are those just beyond each of the class's ranges, and the ends
  // of the byte range (NUL, DEL, the first and last non-ASCII bytes).
  const std::vector<std::string> classes = {
      "[0-9A-Za-z_-]", "\\d",       "\\w",       "[a-c]",    "[ -~]",
      "[ace]",         "[acegikm]", "[\\x01-b]", "[0-9a-f]", "[!-/:-@\\[-`{-~]"};
  Compared c;
  int parsed = 0;
  for (const std::string& cls : classes) {
    RE2 one(cls);
    REQUIRE(one.ok());
    auto member = [&](int b) {
      const char ch = static_cast<char>(b);
      return RE2::FullMatch(std::string_view(&ch, 1), one);
    };
    std::string members;
    std::string outside = {'\0', '\x7f', '\x80', '\xff'};
    for (int b = 0; b < 256; ++b) {
      if (member(b)) {
        members += static_cast<char>(b);
        if (b > 0 && !member(b - 1)) outside += static_cast<char>(b - 1);
        if (b < 255 && !member(b + 1)) outside += static_cast<char>(b + 1);
      }
    }
    REQUIRE_FALSE(members.empty());
    std::vector<std::string> texts;
    for (std::size_t len = 0; len <= 72; ++len) {
      // Consecutive members side by side, so that neighbouring lanes hold different bytes.
      std::string run;
      for (std::size_t i = 0; i < len; ++i) run += members[i % members.size()];
      texts.push_back(run);
      for (std::size_t at = 0; at < len; ++at) {
        for (char o : outside) {
          if (member(static_cast<unsigned char>(o))) continue;
          std::string t = run;
          t[at] = o;
          texts.push_back(t);
        }
      }
    }
    for (const std::string& p :
         {"^(?P<run>" + cls + "+)", "^(?P<run>" + cls + "{16,40})(?P<next>x?)", "^" + cls + "*$"}) {
      const int before = c.patterns;
      Compare(p, texts, &c);
      parsed += c.patterns - before;
    }
  }
  // Compare skips a pattern that does not load as a rule: every one here must.
  CHECK(parsed == static_cast<int>(classes.size()) * 3);
}
