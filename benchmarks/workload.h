// What the benchmarks route: GitLab-style rulesets grown to a given size, and a request mix
// shaped like GitLab.com traffic (namespace pages, API calls with routable tokens, runners,
// session-cookie pages, assets and sign-in pages, health checks).
#pragma once

#include <cellroute/router.h>
#include <cellroute/token.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace cellroute::bench {

// The embedded GitLab-style ruleset with `extra` product rules inserted after the override
// cookie: per-feature headers, preference cookies, internal API paths and feature paths.
inline std::string Ruleset(int total_rules) {
  auto doc = nlohmann::json::parse(defaults::RulesJson());
  auto& rules = doc["rules"];
  int extra = total_rules - static_cast<int>(rules.size());
  nlohmann::json added = nlohmann::json::array();
  for (int i = 0; i < extra; ++i) {
    std::string n = std::to_string(i);
    nlohmann::json r = {{"id", "product_rule_" + n}, {"action", "classify"}};
    switch (i % 4) {
      case 0:
        r["match"] = {{"type", "header"}, {"name", "x-feature-" + n},
                      {"regex_value", "^(?<cell_name>cell-\\d+)$"}};
        r["classify"] = {{"type", "SESSION_PREFIX"}, {"value", "${cell_name}"}};
        break;
      case 1:
        r["match"] = {{"type", "cookie"}, {"name", "pref_" + n},
                      {"regex_value", "^(?<cell_name>cell-\\d+)$"}};
        r["classify"] = {{"type", "SESSION_PREFIX"}, {"value", "${cell_name}"}};
        break;
      case 2:
        r["match"] = {{"type", "path"},
                      {"regex_value", "^/api/v4/internal/feature-" + n + "/(?<id>\\d+)"}};
        r["classify"] = {{"type", "CELL_ID"}, {"value", "${id}"}};
        break;
      default:
        r["match"] = {{"type", "path"}, {"pattern", "/-/feature-" + n + "/:route/*"}};
        r["classify"] = {{"type", "route"}, {"value", "${route}"}};
        break;
    }
    added.push_back(r);
  }
  rules.insert(rules.begin() + 1, added.begin(), added.end());
  return doc.dump();
}

inline std::string Token(const std::string& prefix, std::int64_t cell, std::uint64_t seed) {
  token::EncodeOptions opt;
  opt.prefix = prefix;
  opt.fields = {{"c", cell}, {"o", 1}, {"u", static_cast<std::int64_t>(seed % 100000)}};
  std::array<std::uint8_t, 16> random{};
  for (std::size_t i = 0; i < random.size(); ++i) {
    random[i] = static_cast<std::uint8_t>(seed >> (i % 8 * 8));
  }
  opt.random = random;
  return token::Encode(opt).value();
}

// `count` requests; the same seed gives the same mix.
inline std::vector<Request> RequestMix(std::size_t count, std::uint64_t seed = 42) {
  std::mt19937_64 rng(seed);
  std::vector<Request> out;
  out.reserve(count);
  const char* namespaces[] = {"gitlab-org", "gitlab-com", "acme", "someone", "another-group"};
  for (std::size_t i = 0; i < count; ++i) {
    Request r;
    r.host = "gitlab.example.com";
    r.AddHeader("Host", "gitlab.example.com");
    r.AddHeader("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0");
    r.AddHeader("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8");
    r.AddHeader("Accept-Encoding", "gzip, deflate, br");
    r.AddHeader("Accept-Language", "en-US,en;q=0.5");
    r.AddHeader("X-Forwarded-For", "203.0.113.7");
    r.AddHeader("X-Request-Id", "01HZX3" + std::to_string(rng()));
    std::uint64_t kind = rng() % 100;
    std::uint64_t cell = 1 + rng() % 3;
    if (kind < 30) {  // namespace pages, some unclaimed
      r.SetTarget("/" + std::string(namespaces[rng() % 5]) + "/project/-/issues/" +
                  std::to_string(rng() % 1000));
      r.AddHeader("Cookie", "_gitlab_session=cell-" + std::to_string(cell) +
                                "-5cf865011acc4b2c9e3a; preferred_language=en; event_filter=all");
    } else if (kind < 45) {  // pages under reserved words, routed by the session cookie
      r.SetTarget(rng() % 2 ? "/dashboard/projects" : "/-/user_settings/profile");
      r.AddHeader("Cookie", "preferred_language=en; _gitlab_session=cell-" +
                                std::to_string(cell) + "-0a1b2c3d4e5f; sidebar_collapsed=false");
    } else if (kind < 65) {  // API with a routable personal access token
      r.SetTarget("/api/v4/projects/" + std::to_string(rng() % 100000) + "/merge_requests");
      r.AddHeader("Private-Token", Token("glpat-", static_cast<std::int64_t>(cell), rng()));
    } else if (kind < 75) {  // runners asking for jobs
      r.method = "POST";
      r.SetTarget("/api/v4/jobs/request");
      r.AddHeader("Runner-Token", Token("glrt-", static_cast<std::int64_t>(cell), rng()));
    } else if (kind < 85) {  // sign-in pages and assets: nothing to route by
      r.SetTarget(rng() % 2 ? "/users/sign_in" : "/assets/application-3f2a1b.css");
    } else if (kind < 90) {  // organization paths
      r.SetTarget(rng() % 2 ? "/o/acme-corp/projects" : "/o/default/groups");
    } else if (kind < 94) {  // health checks and oddities
      r.SetTarget(rng() % 2 ? "/-/health" : "/favicon.ico");
    } else if (kind < 97) {  // API with a token as a bearer
      r.SetTarget("/api/v4/user");
      r.AddHeader("Authorization", "Bearer " + Token("gloas-", static_cast<std::int64_t>(cell),
                                                     rng()));
    } else if (kind < 98) {  // an operator's override cookie
      r.SetTarget("/gitlab-org/gitlab");
      r.AddHeader("Cookie", "force-cell=cell-" + std::to_string(cell));
    } else {  // a token whose length field lies: rejected (400)
      std::string t = Token("glpat-", static_cast<std::int64_t>(cell), rng());
      t.replace(t.size() - 9, 2, "zz");
      r.SetTarget("/api/v4/projects");
      r.AddHeader("Private-Token", t);
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace cellroute::bench
