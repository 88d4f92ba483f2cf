#include "common/json.h"

#include <set>
#include <vector>

#include "common/text.h"

namespace cellroute::internal {

Result<nlohmann::json> ParseJson(std::string_view text, std::string_view source) {
  std::vector<std::set<std::string>> keys_by_depth;
  std::vector<std::string> duplicates;
  bool too_deep = false;
  auto track = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (depth > kMaxJsonDepth) {
      too_deep = true;
      return false;  // dropped: nothing deeper than the limit is ever built
    }
    switch (event) {
      case E::object_start:
        keys_by_depth.emplace_back();
        break;
      case E::object_end:
        if (!keys_by_depth.empty()) keys_by_depth.pop_back();
        break;
      case E::key:
        if (!keys_by_depth.empty() &&
            !keys_by_depth.back().insert(parsed.get<std::string>()).second) {
          duplicates.push_back(parsed.get<std::string>());
        }
        break;
      default:
        break;
    }
    return true;
  };
  try {
    nlohmann::json doc = nlohmann::json::parse(text.begin(), text.end(), track);
    if (too_deep) {
      return Status::Invalid(std::string(source) + ": JSON nested deeper than " +
                             std::to_string(kMaxJsonDepth) + " levels");
    }
    if (!duplicates.empty()) {
      std::string msg;
      for (const std::string& k : duplicates) {
        if (!msg.empty()) msg += '\n';
        msg += std::string(source) + ": duplicate key '" + k + "' in one JSON object";
      }
      return Status::Invalid(msg);
    }
    return doc;
  } catch (const nlohmann::json::parse_error& e) {
    std::string what = e.what();
    std::size_t col = what.find("column ");
    std::size_t colon = col == std::string::npos ? std::string::npos : what.find(": ", col);
    std::string detail = colon == std::string::npos ? what : what.substr(colon + 2);
    std::size_t offset = e.byte > 0 ? e.byte - 1 : 0;
    return Status::Invalid(FormatLocation(source, LocateOffset(text, offset)) + ": " + detail);
  } catch (const std::exception& e) {
    return Status::Invalid(std::string(source) + ": " + e.what());
  }
}

std::string DumpJson(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string_view JsonTypeName(const nlohmann::json& value) noexcept {
  switch (value.type()) {
    case nlohmann::json::value_t::null:
      return "null";
    case nlohmann::json::value_t::object:
      return "object";
    case nlohmann::json::value_t::array:
      return "array";
    case nlohmann::json::value_t::string:
      return "string";
    case nlohmann::json::value_t::boolean:
      return "boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return "integer";
    case nlohmann::json::value_t::number_float:
      return "number";
    default:
      return "value";
  }
}

}  // namespace cellroute::internal
