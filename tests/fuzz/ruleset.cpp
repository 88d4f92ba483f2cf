// Ruleset JSON: any bytes load or fail with a message; a ruleset that loads evaluates any
// request without crashing, and indexed evaluation agrees with the reference (Explain), with
// an outcome that records variables and one that does not.
#include <cellroute/rules.h>

#include "common/outcome_text.h"
#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto rules = cellroute::Ruleset::Parse(AsText(data, size), "fuzz.json");
  if (!rules.ok()) {
    FUZZ_CHECK(!rules.status().message().empty());
    return 0;
  }
  for (const char* target : {"/gitlab-org/gitlab", "/o/acme/x", "/api/v4/user", "/"}) {
    cellroute::Request r;
    r.SetTarget(target);
    r.AddHeader("Cookie", "_gitlab_session=cell-2-ab; force-cell=cell-3");
    r.AddHeader("Private-Token", "glpat-EL25d_AKXDUtqLnIQHEpkG86MQM.01.0r1ajj2i3");
    cellroute::Outcome fast;
    rules->Evaluate(r.view(), &fast);
    auto reference = rules->Explain(r.view());
    FUZZ_CHECK(fast.kind() == reference.outcome.kind());
    FUZZ_CHECK(fast.rule_id() == reference.outcome.rule_id());
    FUZZ_CHECK(fast.value() == reference.outcome.value());
    cellroute::Outcome lean;
    lean.RecordVariables(false);
    rules->Evaluate(r.view(), &lean);
    FUZZ_CHECK(cellroute::testing::DecisionText(lean) == cellroute::testing::DecisionText(fast));
    FUZZ_CHECK(lean.variable_count() == 0);
  }
  return 0;
}
