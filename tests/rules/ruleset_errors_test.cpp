// Every class of bad ruleset gets a specific error naming where it is.
#include <cellroute/rules.h>

#include <catch2/catch.hpp>

#include "common/test_util.h"

using namespace cellroute::testing;
using Catch::Matchers::Contains;

TEST_CASE("malformed JSON names file, line and column") {
  std::string err = ParseError("[\n  {\"id\": \"a\",\n   \"action\": }\n]");
  CHECK_THAT(err, Contains("test.json:3:14:"));
  CHECK_THAT(err, Contains("syntax error"));
  CHECK_THAT(ParseError(""), Contains("test.json:1:1:"));
}

TEST_CASE("duplicate JSON keys are refused rather than silently dropped") {
  CHECK_THAT(ParseError(R"J([{"id": "a", "id": "b", "action": "proxy"}])J"),
             Contains("duplicate key 'id'"));
}

TEST_CASE("unknown keys and wrong types name the rule and the key") {
  CHECK_THAT(ParseError(R"J([{"id": "r1", "action": "proxy", "prxy": {}}])J"),
             Contains("rule 'r1' (#1): unknown key 'prxy'"));
  CHECK_THAT(
      ParseError(R"J([{"id": "r1", "action": "proxy", "match": {"type": "header", "nam": "x"}}])J"),
      Contains("rule 'r1' (#1): match: unknown key 'nam'"));
  CHECK_THAT(ParseError(R"J([{"id": 5, "action": "proxy"}])J"),
             Contains("rule #1: id: expected a non-empty string"));
  CHECK_THAT(ParseError(R"J([{"action": "proxy"}])J"), Contains("rule #1: id: required"));
  CHECK_THAT(ParseError(R"J([{"id": "r", "action": "route"}])J"),
             Contains("action: required, \"classify\" or \"proxy\", got \"route\""));
  CHECK_THAT(ParseError(R"J([{"id": "r", "action": "classify"}])J"),
             Contains("classify: required with action classify"));
  CHECK_THAT(ParseError(R"J([{"id": "r", "action": "classify", "classify": {"type": "CELL"}}])J"),
             Contains("classify.type: expected FIRST_CELL"));
  CHECK_THAT(
      ParseError(R"J([{"id": "r", "action": "classify", "classify": {"type": "CELL_ID"}}])J"),
      Contains("classify.value: required for CELL_ID"));
  CHECK_THAT(ParseError(R"J([{"id": "r", "match": {"type": "body"}, "action": "proxy"}])J"),
             Contains("match.type: unknown matcher type 'body'"));
  CHECK_THAT(ParseError(R"J([{"id": "r", "match": [{"type": "header"}], "action": "proxy"}])J"),
             Contains("match[0].name: required for a header matcher"));
  CHECK_THAT(
      ParseError(
          R"J([{"id": "r", "match": {"type": "cookie", "name": "a", "regex_name": "b"}, "action": "proxy"}])J"),
      Contains("exactly one of name, regex_name"));
  CHECK_THAT(ParseError(R"J([{"id": "r", "match": {"type": "path"}, "action": "proxy"}])J"),
             Contains("exactly one of regex_value, pattern"));
  CHECK_THAT(
      ParseError(
          R"J([{"id": "r", "match": {"type": "path", "pattern": "/a/*/b"}, "action": "proxy"}])J"),
      Contains("'*' must be the last segment"));
  CHECK_THAT(ParseError(R"J([{"id": "r", "action": "proxy", "proxy": {"address": 5}}])J"),
             Contains("proxy.address: expected a string, got integer"));
  CHECK_THAT(ParseError(R"J({"rules": {}})J"), Contains("rules: required, an array of rules"));
  CHECK_THAT(ParseError(R"J("rules")J"), Contains("expected an array of rules"));
}

TEST_CASE("an invalid regex names the rule and carries RE2's message") {
  std::string err = ParseError(
      R"J([{"id": "bad_re", "match": {"type": "header", "name": "x", "regex_value": "^(?<a>[0-9+$"}, "action": "proxy"}])J");
  CHECK_THAT(err, Contains("rule 'bad_re' (#1): match.regex_value: invalid regex /^(?<a>[0-9+$/"));
  CHECK_THAT(err, Contains("missing ]"));
  // Lookbehind is not a named group: it is passed through and RE2 refuses it.
  CHECK_THAT(
      ParseError(
          R"J([{"id": "lb", "match": {"type": "path", "regex_value": "(?<=a)b"}, "action": "proxy"}])J"),
      Contains("rule 'lb' (#1): match.regex_value: invalid regex"));
}

TEST_CASE("named groups are translated only where they are groups") {
  // Escaped parentheses and character classes keep their text.
  auto rules = MustParse(R"J([{"id": "r", "match": {"type": "header", "name": "x",
      "regex_value": "^\\(?<a>(?<b>[(?<]+)$"}, "action": "classify",
      "classify": {"type": "SESSION_PREFIX", "value": "${b}"}}])J");
  cellroute::Request r;
  r.AddHeader("x", "(<a>(?<");
  auto o = Evaluate(rules, r);
  REQUIRE(o.matched());
  CHECK(o.value() == "(?<");
}

TEST_CASE("a template naming a variable the rule cannot produce") {
  std::string err = ParseError(R"J([{"id": "t", "match": {"type": "cookie", "name": "c",
      "regex_value": "^(?<cell_name>cell-\\d+)"}, "action": "classify",
      "classify": {"type": "SESSION_PREFIX", "value": "${cellname}"}}])J");
  CHECK_THAT(err, Contains("rule 't' (#1): classify.value: template uses ${cellname}, which this "
                           "rule never produces (it produces: cell_name)"));
  // Token transforms produce only the token's fields.
  CHECK_THAT(
      ParseError(
          R"J([{"id": "t", "match": {"type": "header", "name": "h", "regex_value": "(?<p>.+)"},
      "transform": {"type": "routable-token-payload", "input": "${p}"},
      "action": "classify", "classify": {"type": "CELL_ID", "value": "${decoded.cell}"}}])J"),
      Contains("template uses ${decoded.cell}"));
  CHECK_THAT(  // one letter, but no key a token carries
      ParseError(
          R"J([{"id": "t", "match": {"type": "header", "name": "h", "regex_value": "(?<p>.+)"},
      "transform": {"type": "routable-token-payload", "input": "${p}"},
      "action": "classify", "classify": {"type": "CELL_ID", "value": "${decoded.x}"}}])J"),
      Contains("template uses ${decoded.x}"));
  CHECK_THAT(
      ParseError(
          R"J([{"id": "t", "match": {"type": "header", "name": "h", "regex_value": "(?<p>.+)"},
      "transform": {"type": "routable-token-payload", "input": "${payload}"},
      "action": "classify", "classify": {"type": "CELL_ID", "value": "${decoded.c}"}}])J"),
      Contains("transform.input: template uses ${payload}"));
  CHECK_THAT(ParseError(R"J([{"id": "t", "action": "classify", "validate": {"exist": ["${x}"]},
      "classify": {"type": "FIRST_CELL"}}])J"),
             Contains("validate.exist[0]: template uses ${x}"));
  CHECK_THAT(ParseError(R"J([{"id": "t", "action": "proxy", "proxy": {"address": "${oops"}}])J"),
             Contains("unterminated '${'"));
}

TEST_CASE("duplicate rule ids name both places") {
  std::string err = ParseError(R"J([
    {"id": "same", "action": "proxy"},
    {"id": "other", "action": "proxy"},
    {"id": "same", "action": "proxy"}])J");
  CHECK_THAT(err, Contains("rule 'same' (#3): id: duplicate id 'same', first used by rule #1"));
}

TEST_CASE("every error is reported, not just the first") {
  std::string err = ParseError(R"J([
    {"id": "a", "action": "nope"},
    {"id": "b", "match": {"type": "header", "name": "x", "regex_value": "("}, "action": "proxy"},
    {"id": "c", "action": "classify", "classify": {"type": "CELL_ID", "value": "${n}"}}])J");
  CHECK(std::count(err.begin(), err.end(), '\n') == 2);
  CHECK_THAT(err, Contains("rule 'a'"));
  CHECK_THAT(err, Contains("rule 'b'"));
  CHECK_THAT(err, Contains("rule 'c'"));
}

TEST_CASE("a missing file is reported with its path") {
  auto r = cellroute::Ruleset::LoadFile("/nonexistent/rules.json");
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == cellroute::StatusCode::kUnavailable);
  CHECK_THAT(r.status().message(), Contains("/nonexistent/rules.json: cannot open"));
}
