// Classification and routing speed against a baseline that runs every rule's regexes in
// order with RE2, the way Envoy matches regex routes: no index, no prefilter, captures and
// transforms only for the winner.
#include <benchmark/benchmark.h>
#include <re2/re2.h>

#include <memory>
#include <set>

#include "workload.h"

namespace cellroute::bench {

namespace {

// Distinct requests cycled through: their headers stay in L2, as a request a proxy has just
// parsed would be.
constexpr std::size_t kDistinctRequests = 512;

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

void BM_Classify_cellroute(benchmark::State& state) {
  Fixture& f = FixtureFor(static_cast<int>(state.range(0)));
  std::vector<RequestView> views;
  for (const auto& r : f.requests) views.push_back(r.view());
  Outcome out;
  std::size_t i = 0;
  for (auto _ : state) {
    f.ruleset.Evaluate(views[i++ % kDistinctRequests], &out);
    benchmark::DoNotOptimize(out.rule_index());
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["rules"] = static_cast<double>(f.ruleset.size());
}

void BM_Classify_baseline(benchmark::State& state) {
  Fixture& f = FixtureFor(static_cast<int>(state.range(0)));
  std::vector<RequestView> views;
  for (const auto& r : f.requests) views.push_back(r.view());
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(f.baseline.Classify(views[i++ % kDistinctRequests]));
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["rules"] = static_cast<double>(f.ruleset.size());
}

// The whole decision, rules and resolution through the route table, on the default set.
void BM_Route_cellroute(benchmark::State& state) {
  Router router = Router::FromDefaults().value();
  auto requests = RequestMix(kDistinctRequests);
  std::vector<RequestView> views;
  for (const auto& r : requests) views.push_back(r.view());
  Decision d;
  std::size_t i = 0;
  for (auto _ : state) {
    router.Route(views[i++ % kDistinctRequests], &d);
    benchmark::DoNotOptimize(d.cell_id());
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

void RegisterRuleBenchmarks(bool short_mode) {
  (void)short_mode;
  for (int rules : {0, 16, 64, 256}) {
    // 0: the embedded GitLab-style set as shipped.
    benchmark::RegisterBenchmark("Classify/cellroute", BM_Classify_cellroute)->Arg(rules);
    benchmark::RegisterBenchmark("Classify/baseline", BM_Classify_baseline)->Arg(rules);
  }
  benchmark::RegisterBenchmark("Route/cellroute", BM_Route_cellroute);
}

}  // namespace cellroute::bench
