// Ruleset::Parse: validates a JSON ruleset completely and compiles it. Every problem found is
// reported, one per line, each naming the source, the rule and the field.
#include <algorithm>
#include <map>
#include <set>

#include "common/json.h"
#include "common/text.h"
#include "rules/compiled.h"

namespace cellroute {

namespace {

using internal::Matcher;
using internal::MatcherKind;
using internal::PathSegment;
using internal::Regex;
using internal::Rule;
using internal::Template;
using internal::TransformKind;
using json = nlohmann::json;

// GitLab's reserved top-level group names (doc/user/reserved_names.md in the GitLab monolith:
// paths that are never a namespace), plus "o", where organizations live, used when a ruleset
// does not list its own.
const char* const kDefaultReservedWords[] = {"-",
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
                                             "o",
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

bool IsIdentifier(std::string_view s) {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// Collects errors for one rule with a common prefix: "rules.json: rule 'x': ".
class Errors {
 public:
  void Add(const std::string& where, const std::string& what) { lines_.push_back(where + what); }
  bool empty() const { return lines_.empty(); }
  std::size_t size() const { return lines_.size(); }
  std::string Join() const {
    std::string s;
    for (const auto& l : lines_) {
      if (!s.empty()) s += '\n';
      s += l;
    }
    return s;
  }

 private:
  std::vector<std::string> lines_;
};

// The variables a rule can produce, and which namespaces accept which fields.
struct Scope {
  std::set<std::string> names;
  std::string transform_ns;
  bool token_fields = false;  // only a routable token's fields (TokenFieldRank); else any

  bool Has(const std::string& name) const {
    if (names.count(name)) return true;
    std::size_t dot = name.find('.');
    if (dot == std::string::npos || transform_ns.empty()) return false;
    if (name.substr(0, dot) != transform_ns) return false;
    return !token_fields || internal::TokenFieldRank(std::string_view(name).substr(dot + 1)) >= 0;
  }
};

class Compiler {
 public:
  Compiler(std::string_view text, std::string_view source) : text_(text), source_(source) {}

  Status Run(std::shared_ptr<Ruleset::Compiled>* out);

 private:
  void CompileRule(const json& r, std::size_t index, bool is_default);
  // Sets the ids of the rule's captures and parameters, what each template variable reads
  // (Template::Part: capture, field), Rule::produced and Rule::lean_variables.
  static void ResolveVariables(Rule* rule);
  bool CheckKeys(const json& obj, std::initializer_list<std::string_view> allowed,
                 const std::string& where);
  std::unique_ptr<Regex> CompileRegex(const json& value, const std::string& where,
                                      const std::string& field);
  bool ParseTemplate(const json& value, const std::string& where, const std::string& field,
                     Template* out);
  void CheckTemplate(const Template& t, const Scope& scope, const std::string& where,
                     const std::string& field);
  bool ParsePattern(const std::string& text, const std::string& where, Matcher* m);
  void CompileMatcher(const json& mj, const std::string& where, const std::string& field,
                      Scope* scope, Rule* rule);
  void CompileTransform(const json& tj, const std::string& where, Scope* scope, Rule* rule);
  std::string Where(const json& r, std::size_t index) const;

  std::string_view text_;
  std::string source_;
  Errors errors_;
  std::shared_ptr<Ruleset::Compiled> compiled_;
  std::map<std::string, std::size_t> ids_;
};

std::string Compiler::Where(const json& r, std::size_t index) const {
  std::string s = source_ + ": rule ";
  if (r.is_object() && r.contains("id") && r["id"].is_string() &&
      !r["id"].get<std::string>().empty()) {
    s += "'" + r["id"].get<std::string>() + "' (#" + std::to_string(index + 1) + ")";
  } else {
    s += "#" + std::to_string(index + 1);
  }
  return s + ": ";
}

bool Compiler::CheckKeys(const json& obj, std::initializer_list<std::string_view> allowed,
                         const std::string& where) {
  bool ok = true;
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (std::find(allowed.begin(), allowed.end(), it.key()) == allowed.end()) {
      std::string list;
      for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      errors_.Add(where, "unknown key '" + it.key() + "' (expected one of: " + list + ")");
      ok = false;
    }
  }
  return ok;
}

std::unique_ptr<Regex> Compiler::CompileRegex(const json& value, const std::string& where,
                                              const std::string& field) {
  if (!value.is_string()) {
    errors_.Add(where,
                field + ": expected a string, got " + std::string(internal::JsonTypeName(value)));
    return nullptr;
  }
  auto rx = std::make_unique<Regex>();
  rx->source = value.get<std::string>();
  RE2::Options options;
  options.set_log_errors(false);
  rx->re = std::make_unique<RE2>(internal::TranslateNamedGroups(rx->source), options);
  if (!rx->re->ok()) {
    errors_.Add(where, field + ": invalid regex /" + rx->source + "/: " + rx->re->error());
    return nullptr;
  }
  if (rx->re->ProgramSize() > kMaxRegexProgramSize) {
    errors_.Add(where, field + ": regex /" + rx->source + "/ compiles to " +
                           std::to_string(rx->re->ProgramSize()) + " instructions; at most " +
                           std::to_string(kMaxRegexProgramSize));
    return nullptr;
  }
  rx->groups = rx->re->NumberOfCapturingGroups();
  if (rx->groups > internal::kMaxRegexGroups) {
    errors_.Add(where, field + ": regex has " + std::to_string(rx->groups) +
                           " capturing groups; at most " +
                           std::to_string(internal::kMaxRegexGroups));
    return nullptr;
  }
  for (const auto& [name, group] : rx->re->NamedCapturingGroups()) {
    rx->captures.push_back({group, name});
  }
  std::sort(rx->captures.begin(), rx->captures.end(),
            [](const auto& a, const auto& b) { return a.group < b.group; });
  const bool whole = field.ends_with("regex_name");
  rx->prefix = internal::RegexLiteralPrefix(*rx, whole);
  rx->simple = internal::SimpleRegex::Compile(rx->re->pattern(), whole);
  if (rx->simple && rx->simple->groups() != rx->groups) rx->simple = nullptr;
  return rx;
}

bool Compiler::ParseTemplate(const json& value, const std::string& where, const std::string& field,
                             Template* out) {
  if (!value.is_string()) {
    errors_.Add(where,
                field + ": expected a string, got " + std::string(internal::JsonTypeName(value)));
    return false;
  }
  out->source = value.get<std::string>();
  out->present = true;
  const std::string& s = out->source;
  std::string literal;
  for (std::size_t i = 0; i < s.size();) {
    if (s.compare(i, 2, "${") == 0) {
      std::size_t close = s.find('}', i + 2);
      if (close == std::string::npos) {
        errors_.Add(where, field + ": unterminated '${' in template \"" + s + "\"");
        return false;
      }
      std::string name = s.substr(i + 2, close - i - 2);
      std::size_t dot = name.find('.');
      bool valid = dot == std::string::npos
                       ? IsIdentifier(name)
                       : IsIdentifier(name.substr(0, dot)) && !name.substr(dot + 1).empty() &&
                             IsIdentifier("_" + name.substr(dot + 1));
      if (!valid) {
        errors_.Add(where,
                    field + ": bad variable name '${" + name + "}' in template \"" + s + "\"");
        return false;
      }
      if (!literal.empty()) out->parts.push_back({false, std::move(literal)});
      literal.clear();
      out->parts.push_back({true, name});
      i = close + 1;
    } else {
      literal += s[i++];
    }
  }
  if (!literal.empty()) out->parts.push_back({false, std::move(literal)});
  return true;
}

void Compiler::CheckTemplate(const Template& t, const Scope& scope, const std::string& where,
                             const std::string& field) {
  for (const auto& part : t.parts) {
    if (part.variable && !scope.Has(part.text)) {
      std::string known;
      for (const auto& n : scope.names) known += (known.empty() ? "" : ", ") + n;
      if (!scope.transform_ns.empty()) {
        known += std::string(known.empty() ? "" : ", ") + scope.transform_ns + ".*";
      }
      errors_.Add(where, field + ": template uses ${" + part.text +
                             "}, which this rule never produces (it produces: " +
                             (known.empty() ? std::string("nothing") : known) + ")");
    }
  }
}

bool Compiler::ParsePattern(const std::string& text, const std::string& where, Matcher* m) {
  m->pattern_source = text;
  if (text.empty() || text[0] != '/') {
    errors_.Add(where, "pattern: must start with '/': \"" + text + "\"");
    return false;
  }
  std::string_view rest = std::string_view(text).substr(1);
  while (!rest.empty()) {
    std::size_t slash = rest.find('/');
    std::string_view seg = rest.substr(0, slash);
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    bool last = slash == std::string_view::npos || rest.empty();
    PathSegment ps;
    if (seg == "*") {
      if (!last) {
        errors_.Add(where, "pattern: '*' must be the last segment: \"" + text + "\"");
        return false;
      }
      ps.kind = PathSegment::Kind::kRest;
    } else if (!seg.empty() && seg[0] == ':') {
      ps.kind = PathSegment::Kind::kParam;
      ps.text = std::string(seg.substr(1));
      if (!IsIdentifier(ps.text)) {
        errors_.Add(where,
                    "pattern: bad parameter name '" + std::string(seg) + "' in \"" + text + "\"");
        return false;
      }
    } else if (seg.empty()) {
      errors_.Add(where, "pattern: empty segment in \"" + text + "\"");
      return false;
    } else {
      ps.text = std::string(seg);
    }
    m->pattern.push_back(std::move(ps));
  }
  return true;
}

void Compiler::CompileMatcher(const json& mj, const std::string& where, const std::string& field,
                              Scope* scope, Rule* rule) {
  std::string w = where + field + ".";
  if (!mj.is_object()) {
    errors_.Add(where,
                field + ": expected an object, got " + std::string(internal::JsonTypeName(mj)));
    return;
  }
  CheckKeys(mj, {"type", "name", "regex_name", "regex_value", "regexValue", "pattern"},
            where + field + ": ");
  if (!mj.contains("type") || !mj["type"].is_string()) {
    errors_.Add(where, field + ".type: required, one of header, cookie, path, method, host, query");
    return;
  }
  std::string type = mj["type"].get<std::string>();
  Matcher m;
  static const std::map<std::string, MatcherKind> kKinds = {
      {"header", MatcherKind::kHeader}, {"cookie", MatcherKind::kCookie},
      {"path", MatcherKind::kPath},     {"method", MatcherKind::kMethod},
      {"host", MatcherKind::kHost},     {"query", MatcherKind::kQuery}};
  auto kind = kKinds.find(type);
  if (kind == kKinds.end()) {
    errors_.Add(where, field + ".type: unknown matcher type '" + type +
                           "' (expected header, cookie, path, method, host or query)");
    return;
  }
  m.kind = kind->second;
  bool has_name = mj.contains("name"), has_regex_name = mj.contains("regex_name"),
       has_pattern = mj.contains("pattern");
  const json* value = nullptr;
  std::string value_field = field + ".regex_value";
  if (mj.contains("regex_value") && mj.contains("regexValue")) {
    errors_.Add(where, field + ": give regex_value or regexValue, not both");
    return;
  }
  if (mj.contains("regex_value")) value = &mj["regex_value"];
  if (mj.contains("regexValue")) {
    value = &mj["regexValue"];
    value_field = field + ".regexValue";
  }

  auto reject = [&](bool present, const char* key) {
    if (present) errors_.Add(where, field + "." + key + ": not allowed for a " + type + " matcher");
    return present;
  };
  bool bad = false;
  switch (m.kind) {
    case MatcherKind::kHeader:
      bad |= reject(has_regex_name, "regex_name") | reject(has_pattern, "pattern");
      if (!has_name) {
        errors_.Add(where, field + ".name: required for a header matcher");
        bad = true;
      }
      break;
    case MatcherKind::kCookie:
      bad |= reject(has_pattern, "pattern");
      if (has_name == has_regex_name) {
        errors_.Add(where, field + ": a cookie matcher needs exactly one of name, regex_name");
        bad = true;
      }
      break;
    case MatcherKind::kPath:
      bad |= reject(has_name, "name") | reject(has_regex_name, "regex_name");
      if ((value != nullptr) == has_pattern) {
        errors_.Add(where, field + ": a path matcher needs exactly one of regex_value, pattern");
        bad = true;
      }
      break;
    default:
      bad |= reject(has_name, "name") | reject(has_regex_name, "regex_name") |
             reject(has_pattern, "pattern");
      if (value == nullptr) {
        errors_.Add(where, field + ".regex_value: required for a " + type + " matcher");
        bad = true;
      }
      break;
  }
  if (bad) return;

  m.description = type;
  if (has_name) {
    if (!mj["name"].is_string() || mj["name"].get<std::string>().empty()) {
      errors_.Add(where, field + ".name: expected a non-empty string");
      return;
    }
    m.name = mj["name"].get<std::string>();
    if (m.kind == MatcherKind::kHeader) {
      m.header = internal::FoldedName(m.name);
      m.name = m.header.lower();
    }
    m.description += " '" + m.name + "'";
  }
  if (has_regex_name) {
    m.name_regex = CompileRegex(mj["regex_name"], where, field + ".regex_name");
    if (!m.name_regex) return;
    m.description += " named /" + m.name_regex->source + "/";
  }
  if (has_pattern) {
    if (!mj["pattern"].is_string()) {
      errors_.Add(where, field + ".pattern: expected a string");
      return;
    }
    if (!ParsePattern(mj["pattern"].get<std::string>(), where + field + ".", &m)) return;
    m.description += " pattern '" + m.pattern_source + "'";
    for (const auto& seg : m.pattern) {
      if (seg.kind == PathSegment::Kind::kParam && !scope->names.insert(seg.text).second) {
        errors_.Add(where, field + ".pattern: variable '" + seg.text + "' is produced twice");
      }
    }
  }
  if (value != nullptr) {
    m.value_regex = CompileRegex(*value, where, value_field);
    if (!m.value_regex) return;
  }
  for (const Regex* rx : {m.name_regex.get(), m.value_regex.get()}) {
    if (rx == nullptr) continue;
    for (const auto& c : rx->captures) {
      if (!scope->names.insert(c.name).second) {
        errors_.Add(where, field + ": named capture '" + c.name + "' is produced twice");
      }
    }
  }
  rule->matchers.push_back(std::move(m));
}

void Compiler::CompileTransform(const json& tj, const std::string& where, Scope* scope,
                                Rule* rule) {
  if (!tj.is_object()) {
    errors_.Add(where, "transform: expected an object");
    return;
  }
  CheckKeys(tj, {"type", "input", "length", "output"}, where + "transform: ");
  static const std::map<std::string, TransformKind> kKinds = {
      {"routable-token-payload", TransformKind::kRoutableTokenPayload},
      {"routable-token", TransformKind::kRoutableToken},
      {"base64-line-delimited", TransformKind::kBase64LineDelimited},
      {"base64-json", TransformKind::kBase64Json}};
  auto& t = rule->transform;
  if (!tj.contains("type") || !tj["type"].is_string() ||
      !kKinds.count(tj["type"].get<std::string>())) {
    errors_.Add(where,
                "transform.type: expected one of routable-token-payload, routable-token, "
                "base64-line-delimited, base64-json");
    return;
  }
  t.type_name = tj["type"].get<std::string>();
  t.kind = kKinds.at(t.type_name);
  if (!tj.contains("input")) {
    errors_.Add(where, "transform.input: required");
    return;
  }
  const json& input = tj["input"];
  if (input.is_array()) {
    // GitLab also writes the payload and its length as a pair.
    if (t.kind != TransformKind::kRoutableTokenPayload || input.size() != 2 ||
        tj.contains("length")) {
      errors_.Add(where,
                  "transform.input: an array is [payload, length], for "
                  "routable-token-payload only");
      return;
    }
    if (!ParseTemplate(input[0], where, "transform.input[0]", &t.input) ||
        !ParseTemplate(input[1], where, "transform.input[1]", &t.length)) {
      return;
    }
  } else if (!ParseTemplate(input, where, "transform.input", &t.input)) {
    return;
  }
  if (tj.contains("length")) {
    if (t.kind != TransformKind::kRoutableTokenPayload) {
      errors_.Add(where, "transform.length: only routable-token-payload takes a length");
      return;
    }
    if (!ParseTemplate(tj["length"], where, "transform.length", &t.length)) return;
  }
  CheckTemplate(t.input, *scope, where, "transform.input");
  CheckTemplate(t.length, *scope, where, "transform.length");
  if (tj.contains("output")) {
    if (!tj["output"].is_string() || !IsIdentifier(tj["output"].get<std::string>())) {
      errors_.Add(where, "transform.output: expected a name such as \"decoded\"");
      return;
    }
    t.output = tj["output"].get<std::string>();
  }
  scope->transform_ns = t.output;
  bool token =
      t.kind == TransformKind::kRoutableTokenPayload || t.kind == TransformKind::kRoutableToken;
  scope->token_fields = token;
}

void Compiler::CompileRule(const json& r, std::size_t index, bool is_default) {
  std::string where = Where(r, index);
  if (!r.is_object()) {
    errors_.Add(where, "expected an object, got " + std::string(internal::JsonTypeName(r)));
    return;
  }
  std::size_t errors_before = errors_.size();
  CheckKeys(r,
            {"id", "description", "match", "transform", "validate", "action", "classify", "proxy"},
            where);
  Rule rule;
  if (r.contains("id")) {
    if (!r["id"].is_string() || r["id"].get<std::string>().empty()) {
      errors_.Add(where, "id: expected a non-empty string");
    } else if (r["id"].get<std::string>().size() > kMaxRuleIdBytes) {
      errors_.Add(where, "id: longer than " + std::to_string(kMaxRuleIdBytes) + " bytes");
    } else {
      rule.id = r["id"].get<std::string>();
    }
  } else if (is_default) {
    rule.id = "default";
  } else {
    errors_.Add(where, "id: required");
  }
  if (!rule.id.empty()) {
    std::copy(rule.id.begin(), rule.id.end(), rule.id_bytes.begin());  // at most kMaxRuleIdBytes
    auto [it, inserted] = ids_.emplace(rule.id, index);
    if (!inserted) {
      errors_.Add(where, "id: duplicate id '" + rule.id + "', first used by rule #" +
                             std::to_string(it->second + 1));
    }
  }

  Scope scope;
  if (r.contains("match")) {
    if (is_default) {
      errors_.Add(where, "match: the default rule takes no matchers");
    } else if (r["match"].is_object()) {
      CompileMatcher(r["match"], where, "match", &scope, &rule);
    } else if (r["match"].is_array()) {
      for (std::size_t i = 0; i < r["match"].size(); ++i) {
        CompileMatcher(r["match"][i], where, "match[" + std::to_string(i) + "]", &scope, &rule);
      }
    } else {
      errors_.Add(where, "match: expected an object or an array of objects, got " +
                             std::string(internal::JsonTypeName(r["match"])));
    }
  }
  if (r.contains("transform")) CompileTransform(r["transform"], where, &scope, &rule);
  if (r.contains("validate")) {
    const json& v = r["validate"];
    if (!v.is_object()) {
      errors_.Add(where, "validate: expected an object such as {\"exist\": [\"${decoded.c}\"]}");
    } else {
      CheckKeys(v, {"exist"}, where + "validate: ");
      if (v.contains("exist")) {
        if (!v["exist"].is_array()) {
          errors_.Add(where, "validate.exist: expected an array of templates");
        } else {
          for (std::size_t i = 0; i < v["exist"].size(); ++i) {
            std::string f = "validate.exist[" + std::to_string(i) + "]";
            Template t;
            if (ParseTemplate(v["exist"][i], where, f, &t)) {
              CheckTemplate(t, scope, where, f);
              rule.validate_exist.push_back(std::move(t));
            }
          }
        }
      }
    }
  }

  std::string action = r.contains("action") && r["action"].is_string()
                           ? r["action"].get<std::string>()
                           : std::string();
  if (action == "classify") {
    rule.action = Action::kClassify;
  } else if (action == "proxy") {
    rule.action = Action::kProxy;
  } else {
    errors_.Add(where, "action: required, \"classify\" or \"proxy\"" +
                           (action.empty() ? std::string() : ", got \"" + action + "\""));
  }
  if (rule.action == Action::kClassify) {
    if (r.contains("proxy")) errors_.Add(where, "proxy: not allowed with action classify");
    if (!r.contains("classify") || !r["classify"].is_object()) {
      errors_.Add(where,
                  "classify: required with action classify, "
                  "e.g. {\"type\": \"SESSION_PREFIX\", \"value\": \"${cell_name}\"}");
    } else {
      const json& c = r["classify"];
      CheckKeys(c, {"type", "value"}, where + "classify: ");
      std::string type = c.contains("type") && c["type"].is_string() ? c["type"].get<std::string>()
                                                                     : std::string();
      if (!ParseClassifyType(type, &rule.type)) {
        errors_.Add(where,
                    "classify.type: expected FIRST_CELL, SESSION_PREFIX, CELL_ID or a "
                    "claim type (route, organization_path, ...)" +
                        (type.empty() ? std::string() : ", got \"" + type + "\""));
      } else if (c.contains("value")) {
        if (ParseTemplate(c["value"], where, "classify.value", &rule.value)) {
          CheckTemplate(rule.value, scope, where, "classify.value");
        }
      } else if (rule.type != ClassifyType::kFirstCell) {
        errors_.Add(where, "classify.value: required for " + type);
      }
    }
  } else if (rule.action == Action::kProxy) {
    if (r.contains("classify")) errors_.Add(where, "classify: not allowed with action proxy");
    if (r.contains("proxy")) {
      const json& p = r["proxy"];
      if (!p.is_object()) {
        errors_.Add(where, "proxy: expected an object such as {\"address\": \"host:port\"}");
      } else {
        CheckKeys(p, {"address"}, where + "proxy: ");
        if (p.contains("address") &&
            ParseTemplate(p["address"], where, "proxy.address", &rule.proxy_address)) {
          CheckTemplate(rule.proxy_address, scope, where, "proxy.address");
        }
      }
    }
  }
  if (errors_.size() == errors_before) {
    ResolveVariables(&rule);
    compiled_->rules.push_back(std::move(rule));
  }
}

void Compiler::ResolveVariables(Rule* rule) {
  // The order evaluation produces variables in: each matcher's captures (a cookie's name before
  // its value) or path parameters, in matcher order; then a token's fields, sorted by key. A
  // capture's or parameter's place is its id. Names are produced once per rule (a load error
  // otherwise), and so is each field of a token (its decoder refuses a key twice); the base64
  // transforms' fields are named by the data, so a template cannot know them in advance.
  std::vector<std::string_view> order;
  auto place = [&order](std::string_view name, int* id) {
    *id = static_cast<int>(order.size());
    order.push_back(name);
  };
  for (Matcher& m : rule->matchers) {
    if (m.name_regex) {
      for (auto& c : m.name_regex->captures) place(c.name, &c.id);
    }
    for (PathSegment& seg : m.pattern) {
      if (seg.kind == PathSegment::Kind::kParam) place(seg.text, &seg.id);
    }
    if (m.value_regex) {
      for (auto& c : m.value_regex->captures) place(c.name, &c.id);
    }
  }
  rule->produced = static_cast<int>(order.size());
  const internal::Transform& t = rule->transform;
  const bool token =
      t.kind == TransformKind::kRoutableTokenPayload || t.kind == TransformKind::kRoutableToken;
  rule->lean_variables =
      order.size() <= Outcome::kMaxVariables && (t.kind == TransformKind::kNone || token);
  auto resolve = [&](Template* tmpl) {
    for (auto& part : tmpl->parts) {
      if (!part.variable) continue;
      const std::string_view name = part.text;
      const auto at = std::find(order.begin(), order.end(), name);
      if (at != order.end()) {
        part.capture = static_cast<int>(at - order.begin());
      } else if (token && name.size() > t.output.size() + 1 &&
                 name.substr(0, t.output.size()) == t.output && name[t.output.size()] == '.') {
        part.field = internal::TokenFieldRank(name.substr(t.output.size() + 1));
      }
      if (part.capture < 0 && part.field < 0) rule->lean_variables = false;
    }
  };
  resolve(&rule->transform.input);
  resolve(&rule->transform.length);
  for (Template& v : rule->validate_exist) resolve(&v);
  resolve(&rule->value);
  resolve(&rule->proxy_address);
}

Status Compiler::Run(std::shared_ptr<Ruleset::Compiled>* out) {
  auto parsed = internal::ParseJson(text_, source_);
  if (!parsed.ok()) return parsed.status();
  const json& doc = parsed.value();
  compiled_ = std::make_shared<Ruleset::Compiled>();
  compiled_->source = source_;

  const json* rules = &doc;
  const json* default_rule = nullptr;
  bool reserved_given = false;
  if (doc.is_object()) {
    CheckKeys(doc, {"rules", "reserved_words", "default", "description"}, source_ + ": ");
    if (!doc.contains("rules") || !doc["rules"].is_array()) {
      errors_.Add(source_ + ": ", "rules: required, an array of rules");
      return Status::Invalid(errors_.Join());
    }
    rules = &doc["rules"];
    if (doc.contains("reserved_words")) {
      reserved_given = true;
      const json& rw = doc["reserved_words"];
      if (!rw.is_array()) {
        errors_.Add(source_ + ": ", "reserved_words: expected an array of strings");
      } else {
        for (std::size_t i = 0; i < rw.size(); ++i) {
          if (!rw[i].is_string() || rw[i].get<std::string>().empty()) {
            errors_.Add(source_ + ": ",
                        "reserved_words[" + std::to_string(i) + "]: expected a non-empty string");
          } else {
            compiled_->reserved_words.Add(rw[i].get<std::string>());
          }
        }
      }
    }
    if (doc.contains("default")) default_rule = &doc["default"];
  } else if (!doc.is_array()) {
    return Status::Invalid(source_ +
                           ": expected an array of rules or an object with \"rules\", "
                           "got " +
                           std::string(internal::JsonTypeName(doc)));
  }
  if (!reserved_given) {
    for (const char* w : kDefaultReservedWords) compiled_->reserved_words.Add(w);
  }
  compiled_->reserved_words.Seal();

  if (rules->size() > kMaxRules) {
    return Status::Invalid(source_ + ": " + std::to_string(rules->size()) + " rules; at most " +
                           std::to_string(kMaxRules));
  }
  for (std::size_t i = 0; i < rules->size(); ++i) CompileRule((*rules)[i], i, false);
  if (default_rule != nullptr) CompileRule(*default_rule, rules->size(), true);

  if (!errors_.empty()) return Status::Invalid(errors_.Join());
  compiled_->index.Build(compiled_->rules, &compiled_->reserved_words);
  *out = compiled_;
  return Status::Ok();
}

}  // namespace

std::string internal::TranslateNamedGroups(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 8);
  bool in_class = false;
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      out += c;
      out += pattern[++i];
      continue;
    }
    if (in_class) {
      if (c == ']') in_class = false;
      out += c;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == '(' && pattern.substr(i, 3) == "(?<" && i + 3 < pattern.size() &&
        pattern[i + 3] != '=' && pattern[i + 3] != '!') {
      out += "(?P<";
      i += 2;
      continue;
    }
    out += c;
  }
  return out;
}

Result<Ruleset> Ruleset::Parse(std::string_view json_text, std::string_view source) {
  Compiler compiler(json_text, source);
  std::shared_ptr<Compiled> compiled;
  try {
    Status status = compiler.Run(&compiled);
    if (!status.ok()) return status;
  } catch (const std::exception& e) {
    return Status(StatusCode::kInternal, std::string(source) + ": " + e.what());
  }
  return Ruleset(std::move(compiled));
}

Result<Ruleset> Ruleset::LoadFile(const std::string& path) {
  auto text = internal::ReadFile(path);
  if (!text.ok()) return text.status();
  return Parse(text.value(), path);
}

std::size_t Ruleset::size() const noexcept { return compiled_->rules.size(); }
std::string_view Ruleset::rule_id(std::size_t index) const noexcept {
  return index < compiled_->rules.size() ? std::string_view(compiled_->rules[index].id) : "";
}
Action Ruleset::rule_action(std::size_t index) const noexcept {
  return index < compiled_->rules.size() ? compiled_->rules[index].action : Action::kNone;
}
ClassifyType Ruleset::rule_type(std::size_t index) const noexcept {
  return index < compiled_->rules.size() ? compiled_->rules[index].type : ClassifyType::kNone;
}
std::string_view Ruleset::source() const noexcept { return compiled_->source; }

}  // namespace cellroute
