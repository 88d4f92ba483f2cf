// JSON input for the loaders: syntax errors with file:line:column, and objects that repeat a
// key rejected (nlohmann keeps the last one silently, which would hide a mistake in a ruleset).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "cellroute/status.h"

namespace cellroute::internal {

// Rulesets and claims files are shallow; deeper nesting is refused, never built.
inline constexpr int kMaxJsonDepth = 64;

Result<nlohmann::json> ParseJson(std::string_view text, std::string_view source);

// Compact JSON that is valid whatever bytes the strings hold: what is not UTF-8 is replaced
// with U+FFFD instead of throwing.
std::string DumpJson(const nlohmann::json& value);

// "string", "number", "object", ... as errors name JSON types.
std::string_view JsonTypeName(const nlohmann::json& value) noexcept;

}  // namespace cellroute::internal
