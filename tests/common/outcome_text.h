// What a decision shows, as text, for the tests and fuzz targets that compare two ways of
// deciding. No test framework here: the fuzz targets include it too.
#pragma once

#include <cellroute/rules.h>

#include <string>

namespace cellroute::testing {

// Everything an outcome shows but its variables, on one line: two outcomes that decided alike
// have the same text, and a test that finds them different prints both.
inline std::string DecisionText(const Outcome& o) {
  return "kind " + std::to_string(static_cast<int>(o.kind())) + ", rule #" +
         std::to_string(o.rule_index()) + " '" + std::string(o.rule_id()) + "', action " +
         std::string(ActionName(o.action())) + ", type " + std::string(ClassifyTypeName(o.type())) +
         ", value '" + std::string(o.value()) + "', proxy '" + std::string(o.proxy_address()) +
         "', rejection " + std::to_string(static_cast<int>(o.rejection())) + " '" +
         std::string(o.reason()) + "'";
}

}  // namespace cellroute::testing
