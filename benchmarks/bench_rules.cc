// Classification and routing speed against a baseline that runs every rule's regexes in
// order with RE2, the way Envoy matches regex routes: no index, no prefilter, captures and
// transforms only for the winner.
#include <benchmark/benchmark.h>
#include <re2/re2.h>

#include <array>
#include <charconv>
#include <memory>
#include <set>
#include <unordered_map>

#include "workload.h"

namespace cellroute::bench {

namespace {

// Distinct requests cycled through: their headers stay in L2, as a request a proxy has just
// parsed would be.
constexpr std::size_t kDistinctRequests = 512;

// The views the classifiers read, of requests that outlive them.
std::vector<RequestView> Views(const std::vector<Request>& requests) {
  std::vector<RequestView> views;
  views.reserve(requests.size());
  for (const auto& r : requests) views.push_back(r.view());
  return views;
}

class BaselineClassifier {
 public:
  explicit BaselineClassifier(const std::string& rules_json) {
    auto doc = nlohmann::json::parse(rules_json);
    for (const auto& r : doc["rules"]) {
      Rule rule;
      rule.token = r.contains("transform");
      if (r.contains("match")) {
        const auto& ms = r["match"].is_array() ? r["match"] : nlohmann::json::array({r["match"]});
        for (const auto& mj : ms) rule.matchers.push_back(Compile(mj));
      }
      rules_.push_back(std::move(rule));
    }
    for (const char* w : {"-", "admin", "api", "assets", "dashboard", "explore", "favicon.ico",
                          "help", "o", "oauth", "uploads", "users"}) {
      reserved_.insert(w);
    }
  }

  // The index of the winning rule, or -1.
  int Classify(const RequestView& req) const {
    for (std::size_t i = 0; i < rules_.size(); ++i) {
      const Rule& rule = rules_[i];
      bool all = true;
      for (const Matcher& m : rule.matchers) {
        if (!Match(m, req)) {
          all = false;
          break;
        }
      }
      if (!all) continue;
      if (rule.token) {
        // Captures and the token transform, for the winner only.
        const Matcher& m = rule.matchers[0];
        std::string_view value;
        req.FindHeader(m.name, &value);
        re2::StringPiece sub[3];
        if (!m.value->Match(re2::StringPiece(value.data(), value.size()), 0, value.size(),
                            RE2::UNANCHORED, sub, 3)) {
          continue;
        }
        auto payload = token::DecodePayload({sub[1].data(), sub[1].size()},
                                            {sub[2].data(), sub[2].size()});
        if (!payload.ok()) return static_cast<int>(i);  // rejected
        if (!payload->Get("c")) continue;                // validate.exist fails
      }
      return static_cast<int>(i);
    }
    return -1;
  }

 private:
  struct Matcher {
    std::string type, name;
    std::unique_ptr<RE2> name_re, value;
    bool reserved_first_segment = false;
  };
  struct Rule {
    std::vector<Matcher> matchers;
    bool token = false;
  };

  static std::string PatternToRegex(const std::string& pattern, bool* param_first) {
    std::string re = "^";
    std::size_t start = 1;
    bool first = true;
    *param_first = false;
    while (start <= pattern.size()) {
      std::size_t slash = pattern.find('/', start);
      std::string seg = pattern.substr(start, slash - start);
      if (seg == "*") {
        re += "(?:/.*)?";
      } else if (!seg.empty() && seg[0] == ':') {
        re += "/(?P<" + seg.substr(1) + ">[^/]+)";
        if (first) *param_first = true;
      } else {
        re += "/" + RE2::QuoteMeta(seg);
      }
      first = false;
      if (slash == std::string::npos) break;
      start = slash + 1;
    }
    return re + "/?$";
  }

  static Matcher Compile(const nlohmann::json& mj) {
    Matcher m;
    m.type = mj["type"];
    if (mj.contains("name")) m.name = mj["name"];
    std::string value;
    if (mj.contains("regex_value")) value = mj["regex_value"];
    if (mj.contains("pattern")) value = PatternToRegex(mj["pattern"], &m.reserved_first_segment);
    std::string translated;
    for (std::size_t i = 0; i < value.size(); ++i) {  // JavaScript named groups for RE2
      if (value.compare(i, 3, "(?<") == 0 && value[i + 3] != '=' && value[i + 3] != '!') {
        translated += "(?P<";
        i += 2;
      } else {
        translated += value[i];
      }
    }
    if (!translated.empty()) m.value = std::make_unique<RE2>(translated);
    if (mj.contains("regex_name")) {
      m.name_re = std::make_unique<RE2>(mj["regex_name"].get<std::string>());
    }
    return m;
  }

  bool Match(const Matcher& m, const RequestView& req) const {
    if (m.type == "header") {
      std::string_view v;
      if (!req.FindHeader(m.name, &v)) return false;
      return !m.value || RE2::PartialMatch(re2::StringPiece(v.data(), v.size()), *m.value);
    }
    if (m.type == "cookie") {
      std::string_view cookie;
      if (!req.FindHeader("cookie", &cookie)) return false;
      return req.AnyCookie([&](std::string_view name, std::string_view v) {
        bool name_ok = m.name_re ? RE2::FullMatch(re2::StringPiece(name.data(), name.size()),
                                                  *m.name_re)
                                 : name == m.name;
        return name_ok &&
               (!m.value || RE2::PartialMatch(re2::StringPiece(v.data(), v.size()), *m.value));
      });
    }
    if (m.type == "path") {
      re2::StringPiece path(req.path.data(), req.path.size());
      if (!m.reserved_first_segment) return RE2::PartialMatch(path, *m.value);
      std::string first;
      if (!RE2::PartialMatch(path, *m.value, &first)) return false;
      return reserved_.count(first) == 0;
    }
    return false;
  }

  std::vector<Rule> rules_;
  std::set<std::string> reserved_;
};

// The default ruleset written by hand, as an engineer would for one proxy: prefix and length
// checks, a byte loop for the token and `cell-N` shapes, each header found by name, the same
// token decode. What it returns (the rule index, the classify value) must equal cellroute's
// for every request of the mix; the fixture checks that before anything is timed.
class HandwrittenClassifier {
 public:
  struct Result {
    int rule = -1;
    bool rejected = false;
    std::string_view value;
    char digits[24];
  };

  static void Classify(const RequestView& req, Result* out) {
    out->rule = -1;
    out->rejected = false;
    out->value = {};
    // 0 force_cell_cookie: a force-cell cookie that is exactly cell-<digits>.
    if (req.AnyCookie([&](std::string_view name, std::string_view value) {
          return name == "force-cell" && CellName(value) == value.size();
        })) {
      return Set(out, 0, req, "force-cell");
    }
    // 1 organization_path: /o/<segment>...
    std::string_view path = req.path;
    if (path.size() > 3 && path.compare(0, 3, "/o/") == 0 && path[3] != '/') {
      out->rule = 1;
      out->value = path.substr(3, path.find('/', 3) - 3);
      return;
    }
    // 2 top_level_namespace: /<segment>... unless the segment is reserved.
    if (path.size() > 1 && path[0] == '/' && path[1] != '/') {
      std::string_view seg = path.substr(1, path.find('/', 1) - 1);
      if (!Reserved(seg)) {
        out->rule = 2;
        out->value = seg;
        return;
      }
    }
    BelowClaims(req, out);
  }
  // Rules 3 to 7, where a router goes on below a claim nobody owns (below rule 1 as well: its
  // paths start with "/o/", and "o" is reserved, so rule 2 never takes them). `out` as the
  // claim left it: not rejected.
  [[gnu::always_inline]] static void BelowClaims(const RequestView& req, Result* out) {
    // 3-5 routable tokens in headers.
    if (Token(req, "runner-token", 3, out, [](std::string_view v) {
          return Skip(v, "glrt-") ? 5 : Skip(v, "glrtr-") ? 6 : 0;
        }) ||
        Token(req, "private-token", 4, out,
              [](std::string_view v) { return Skip(v, "glpat-") ? 6 : 0; }) ||
        Token(req, "authorization", 5, out, [](std::string_view v) -> std::size_t {
          if (!Skip(v, "Bearer gl")) return 0;
          std::size_t i = 9, start = i;
          while (i < v.size() && v[i] >= 'a' && v[i] <= 'z') ++i;
          return i > start && i < v.size() && v[i] == '-' ? i + 1 : 0;
        })) {
      return;
    }
    // 6 session_cookie: _gitlab_session or _gitlab_session_<hex>, value cell-<digits>-...
    if (req.AnyCookie([&](std::string_view name, std::string_view value) {
          if (!SessionName(name)) return false;
          std::size_t n = CellName(value);
          if (n == 0 || n >= value.size() || value[n] != '-') return false;
          out->value = value.substr(0, n);
          return true;
        })) {
      out->rule = 6;
      return;
    }
    out->rule = 7;  // fallback: proxy to the legacy cell
  }

 private:
  static bool Skip(std::string_view v, std::string_view prefix) {
    return v.size() >= prefix.size() && v.compare(0, prefix.size(), prefix) == 0;
  }
  // The length of a leading cell-<digits>, or 0.
  static std::size_t CellName(std::string_view v) {
    if (!Skip(v, "cell-")) return 0;
    std::size_t i = 5;
    while (i < v.size() && v[i] >= '0' && v[i] <= '9') ++i;
    return i > 5 ? i : 0;
  }
  static bool SessionName(std::string_view n) {
    if (!Skip(n, "_gitlab_session")) return false;
    if (n.size() == 15) return true;
    if (n.size() < 17 || n[15] != '_') return false;
    for (char c : n.substr(16)) {
      if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
  }
  // GitLab's reserved top-level names, bucketed by length (the longest has 32 bytes).
  static bool Reserved(std::string_view seg) {
    static const auto by_length = [] {
      std::array<std::vector<std::string_view>, 33> b;
      for (std::string_view r :
           {"-", ".well-known", "404.html", "422.html", "500.html", "502.html", "503.html",
            "admin", "api", "apple-touch-icon-precomposed.png", "apple-touch-icon.png", "assets",
            "dashboard", "deploy.html", "explore", "favicon.ico", "favicon.png", "files", "groups",
            "health_check", "help", "import", "jwt", "login", "o", "oauth", "profile", "projects",
            "public", "robots.txt", "s", "search", "sitemap", "sitemap.xml", "sitemap.xml.gz",
            "slash-command-logo.png", "snippets", "unsubscribes", "uploads", "users", "v2"}) {
        b[r.size()].push_back(r);
      }
      return b;
    }();
    if (seg.size() >= by_length.size()) return false;
    for (std::string_view w : by_length[seg.size()]) {
      std::size_t k = 0;
      while (k < w.size() && (seg[k] >= 'A' && seg[k] <= 'Z' ? seg[k] + 32 : seg[k]) == w[k]) ++k;
      if (k == w.size()) return true;
    }
    return false;
  }
  static bool Alnum36(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z'); }
  // A header carrying <prefix><payload 27-300>.01.<2 length><7 crc>: decode it as GitLab does.
  template <typename Prefix>
  static bool Token(const RequestView& req, std::string_view header, int rule, Result* out,
                    Prefix prefix) {
    return req.AnyHeader(header, [&](std::string_view v) {
      std::size_t start = prefix(v);
      if (start == 0) return false;
      std::size_t i = start;
      while (i < v.size() && (Alnum36(v[i]) || (v[i] >= 'A' && v[i] <= 'Z') || v[i] == '_' ||
                              v[i] == '-')) {
        ++i;
      }
      std::size_t payload = i - start;
      if (payload < 27 || payload > 300 || v.size() - i != 13 || v.compare(i, 4, ".01.") != 0)
        return false;
      for (std::size_t k = i + 4; k < v.size(); ++k) {
        if (!Alnum36(v[k])) return false;
      }
      auto decoded = token::DecodePayload(v.substr(start, payload), v.substr(i + 4, 2));
      if (!decoded.ok()) {
        out->rule = rule;
        out->rejected = true;
        return true;
      }
      auto c = decoded->Get("c");
      if (!c) return false;  // validate: ${decoded.c} must exist
      auto end = std::to_chars(out->digits, out->digits + sizeof out->digits, *c).ptr;
      out->rule = rule;
      out->value = std::string_view(out->digits, static_cast<std::size_t>(end - out->digits));
      return true;
    });
  }
  static void Set(Result* out, int rule, const RequestView& req, std::string_view cookie) {
    out->rule = rule;
    req.AnyCookie([&](std::string_view name, std::string_view value) {
      if (name != cookie) return false;
      out->value = value;
      return true;
    });
  }
};

// The default rules and their resolution written by hand, as one proxy would: the hand-written
// classifier, then the embedded cell list and claims in plain containers (claims in a hash
// map, cells found by id or session prefix in a vector), going on below a claim nobody owns
// as the router does. Its answer is the cell, not a copy of the address.
class HandwrittenRouter {
 public:
  HandwrittenRouter() {
    auto topology = Topology::ParseToml(defaults::TopologyToml(), "defaults").value();
    cells_ = topology.cells();
    auto claims = Claims::Parse(defaults::ClaimsJson(), "defaults", topology).value();
    for (const ClaimEntry& e : claims.Entries()) {
      (e.type == ClassifyType::kClaimRoute ? routes_ : organizations_)[e.value] = e.cell_id;
    }
  }
  // The cell for the request; nullptr when it is refused (a malformed token). `fell`, when
  // given, counts the claims nobody owned.
  const Cell* Route(const RequestView& req, int* fell = nullptr) const {
    HandwrittenClassifier::Result r;
    HandwrittenClassifier::Classify(req, &r);
    for (;;) {
      if (r.rejected) return nullptr;
      switch (r.rule) {
        case 0:
        case 6:  // SESSION_PREFIX
          for (const Cell& c : cells_) {
            if (!c.session_prefix.empty() && c.session_prefix == r.value) return &c;
          }
          return &cells_.front();
        case 1:
        case 2: {  // claims: a claim nobody owns goes on below
          const auto& claims = r.rule == 1 ? organizations_ : routes_;
          auto it = claims.find(r.value);
          if (it == claims.end()) {
            HandwrittenClassifier::BelowClaims(req, &r);
            if (fell != nullptr) ++*fell;
            continue;
          }
          return ById(it->second);
        }
        case 3:
        case 4:
        case 5: {  // CELL_ID
          std::int64_t id = 0;
          std::from_chars(r.value.data(), r.value.data() + r.value.size(), id);
          return ById(id);
        }
        default:  // the fallback rule: the legacy cell
          return &cells_.front();
      }
    }
  }

 private:
  const Cell* ById(std::int64_t id) const {
    for (const Cell& c : cells_) {
      if (c.id == id) return &c;
    }
    return &cells_.front();
  }
  // Hashed with the standard hash, looked up without building a string.
  struct Hash : std::hash<std::string_view> {
    using is_transparent = void;
  };
  std::vector<Cell> cells_;
  std::unordered_map<std::string, std::int64_t, Hash, std::equal_to<>> routes_, organizations_;
};

struct Fixture {
  explicit Fixture(int rules)
      : json(rules == 0 ? std::string(defaults::RulesJson()) : Ruleset(rules)),
        ruleset(Ruleset::Parse(json, "bench").value()),
        baseline(json),
        requests(RequestMix(kDistinctRequests)) {
    // Both must choose the same rule for every request, or the comparison means nothing.
    for (const auto& r : requests) {
      Outcome o;
      ruleset.Evaluate(r.view(), &o);
      if (o.rule_index() != baseline.Classify(r.view())) {
        std::fprintf(stderr, "baseline disagrees on %s\n", r.path.c_str());
        std::abort();
      }
    }
  }
  // The hand-written classifier must agree too, on the default rules, including the requests
  // that only a later rule decides.
  void CheckHandwritten() const {
    int by_rule[8] = {};
    for (const auto& r : requests) {
      Outcome o;
      ruleset.Evaluate(r.view(), &o);
      HandwrittenClassifier::Result h;
      HandwrittenClassifier::Classify(r.view(), &h);
      bool same = o.rule_index() == h.rule && o.kind() == (h.rejected ? Outcome::Kind::kRejected
                                                                       : Outcome::Kind::kMatched) &&
                  (h.rejected || o.value() == h.value);
      if (!same) {
        std::fprintf(stderr, "hand-written classifier disagrees on %s: rule %d '%.*s', not %d\n",
                     r.path.c_str(), h.rule, static_cast<int>(h.value.size()), h.value.data(),
                     o.rule_index());
        std::abort();
      }
      ++by_rule[h.rule];
    }
    std::fprintf(stderr, "hand-written classifier agrees; requests per rule:");
    for (int n : by_rule) std::fprintf(stderr, " %d", n);
    std::fprintf(stderr, "\n");
  }
  std::string json;
  cellroute::Ruleset ruleset;
  BaselineClassifier baseline;
  std::vector<Request> requests;
};

Fixture& FixtureFor(int rules) {
  static std::map<int, std::unique_ptr<Fixture>> cache;
  auto& f = cache[rules];
  if (!f) f = std::make_unique<Fixture>(rules);
  return *f;
}

// `record`: whether the outcome records the rule's variables. Classify/cellroute does not, as
// a proxy routes (the nginx module, which shows none); Classify/cellroute-variables does, as
// the bindings' decisions do.
void BM_Classify_cellroute(benchmark::State& state, bool record) {
  Fixture& f = FixtureFor(static_cast<int>(state.range(0)));
  std::vector<RequestView> views = Views(f.requests);
  Outcome out;
  out.RecordVariables(record);
  std::size_t i = 0;
  for (auto _ : state) {
    f.ruleset.Evaluate(views[i++ % kDistinctRequests], &out);
    benchmark::DoNotOptimize(out.rule_index());
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["rules"] = static_cast<double>(f.ruleset.size());
}

void BM_Classify_handwritten(benchmark::State& state) {
  Fixture& f = FixtureFor(0);
  static bool checked = (f.CheckHandwritten(), true);
  (void)checked;
  std::vector<RequestView> views = Views(f.requests);
  HandwrittenClassifier::Result out;
  std::size_t i = 0;
  for (auto _ : state) {
    HandwrittenClassifier::Classify(views[i++ % kDistinctRequests], &out);
    benchmark::DoNotOptimize(out.rule);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Classify_baseline(benchmark::State& state) {
  Fixture& f = FixtureFor(static_cast<int>(state.range(0)));
  std::vector<RequestView> views = Views(f.requests);
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(f.baseline.Classify(views[i++ % kDistinctRequests]));
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["rules"] = static_cast<double>(f.ruleset.size());
}

// The whole decision, rules and resolution through the route table, on the default set, into
// a decision that does not record variables (as a proxy routes); Route/uncounted: the same
// with decision counting (metrics) turned off, to show its cost.
void BM_Route_cellroute(benchmark::State& state) {
  Router router = Router::FromDefaults().value();
  router.SetCounting(state.range(0) != 0);
  auto requests = RequestMix(kDistinctRequests);
  std::vector<RequestView> views = Views(requests);
  Decision d;
  d.RecordVariables(false);
  std::size_t i = 0;
  for (auto _ : state) {
    router.Route(views[i++ % kDistinctRequests], &d);
    benchmark::DoNotOptimize(d.cell_id());
  }
  state.SetItemsProcessed(state.iterations());
}

// Route/handwritten: the same decisions by hand (checked first to name the same cell and
// address as the router for every request of the mix).
void BM_Route_handwritten(benchmark::State& state) {
  static const HandwrittenRouter hand;
  auto requests = RequestMix(kDistinctRequests);
  std::vector<RequestView> views = Views(requests);
  static const bool checked = [&] {
    Router router = Router::FromDefaults().value();
    int fell = 0;
    for (const RequestView& v : views) {
      Decision d = router.Route(v);
      const Cell* cell = hand.Route(v, &fell);
      if ((cell == nullptr) != d.rejected() ||
          (cell != nullptr && (cell->id != d.cell_id() || cell->address != d.address()))) {
        std::fprintf(stderr, "hand-written router disagrees on %.*s\n",
                     static_cast<int>(v.path.size()), v.path.data());
        std::abort();
      }
    }
    if (fell == 0) {
      std::fprintf(stderr, "the request mix has no claim nobody owns: nothing goes below one\n");
      std::abort();
    }
    std::fprintf(stderr, "hand-written router agrees, %d claims nobody owns gone below\n", fell);
    return true;
  }();
  (void)checked;
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(hand.Route(views[i++ % kDistinctRequests]));
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

long ClassifyOnly(std::string_view what, int rules, std::size_t count) {
  Fixture& f = FixtureFor(what == "handwritten" ? 0 : rules);
  if (what == "handwritten") f.CheckHandwritten();
  std::vector<RequestView> views = Views(f.requests);
  long sum = 0;  // of the rules chosen: printed, so that no classification can be left out
  // One loop per classifier, as in the benchmarks: nothing but the classification is counted.
  if (what == "cellroute" || what == "cellroute-variables") {
    Outcome out;
    out.RecordVariables(what == "cellroute-variables");
    for (std::size_t i = 0; i < count; ++i) {
      f.ruleset.Evaluate(views[i % kDistinctRequests], &out);
      sum += out.rule_index();
    }
  } else if (what == "handwritten") {
    HandwrittenClassifier::Result out;
    for (std::size_t i = 0; i < count; ++i) {
      HandwrittenClassifier::Classify(views[i % kDistinctRequests], &out);
      sum += out.rule;
    }
  } else {
    for (std::size_t i = 0; i < count; ++i) sum += f.baseline.Classify(views[i % kDistinctRequests]);
  }
  return sum;
}

long RouteOnly(std::string_view what, std::size_t count) {
  static const HandwrittenRouter hand;
  auto requests = RequestMix(kDistinctRequests);
  std::vector<RequestView> views = Views(requests);
  long sum = 0;  // of the cells chosen, as ClassifyOnly's sum
  if (what == "cellroute") {
    Router router = Router::FromDefaults().value();
    Decision d;
    d.RecordVariables(false);
    for (std::size_t i = 0; i < count; ++i) {
      router.Route(views[i % kDistinctRequests], &d);
      sum += d.cell_id();
    }
  } else {
    for (std::size_t i = 0; i < count; ++i) {
      const Cell* cell = hand.Route(views[i % kDistinctRequests]);
      sum += cell == nullptr ? 0 : cell->id;
    }
  }
  return sum;
}

void RegisterRuleBenchmarks(bool short_mode) {
  (void)short_mode;
  for (int rules : {0, 16, 64, 256}) {
    // 0: the embedded GitLab-style set as shipped.
    benchmark::RegisterBenchmark("Classify/cellroute", BM_Classify_cellroute, false)->Arg(rules);
    benchmark::RegisterBenchmark("Classify/baseline", BM_Classify_baseline)->Arg(rules);
    if (rules == 0) {
      benchmark::RegisterBenchmark("Classify/cellroute-variables", BM_Classify_cellroute, true)
          ->Arg(0);
      benchmark::RegisterBenchmark("Classify/handwritten", BM_Classify_handwritten)->Arg(0);
    }
  }
  benchmark::RegisterBenchmark("Route/cellroute", BM_Route_cellroute)->Arg(1);
  benchmark::RegisterBenchmark("Route/uncounted", BM_Route_cellroute)->Arg(0);
  benchmark::RegisterBenchmark("Route/handwritten", BM_Route_handwritten);
}

}  // namespace cellroute::bench
