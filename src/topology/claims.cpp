// Claims: a local answer to "which cell owns this route / organization path / ...", for
// routing without a Topology Service.
#include <array>
#include <map>
#include <unordered_map>

#include "cellroute/topology.h"
#include "common/json.h"
#include "common/text.h"

namespace cellroute {

namespace {

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

constexpr int kClaimKinds = 13;  // Claim oneof field numbers 1..12

}  // namespace

struct Claims::Index {
  std::string source;
  std::array<std::unordered_map<std::string, std::int64_t, StringHash, std::equal_to<>>,
             kClaimKinds>
      by_kind;
  std::size_t size = 0;
};

Claims Claims::Empty() {
  auto index = std::make_shared<Index>();
  index->source = "<no claims>";
  return Claims(std::move(index));
}

Result<Claims> Claims::Parse(std::string_view text, std::string_view source,
                             const Topology& topology) {
  auto parsed = internal::ParseJson(text, source);
  if (!parsed.ok()) return parsed.status();
  const nlohmann::json& doc = parsed.value();
  std::string src(source);
  if (!doc.is_object()) {
    return Status::Invalid(src + ": expected an object such as {\"route\": {\"gitlab-org\": 2}}");
  }
  auto index = std::make_shared<Index>();
  index->source = src;
  std::vector<std::string> errors;
  // Where each claim was first given: "route" and "ROUTE" are one type, so the same value
  // under both is one claim given twice, which is refused naming both places.
  std::map<std::pair<int, std::string>, std::string> first_given;
  for (auto kind = doc.begin(); kind != doc.end(); ++kind) {
    if (kind.key() == "description") continue;
    ClassifyType type;
    if (!ParseClassifyType(kind.key(), &type) || !IsClaim(type)) {
      errors.push_back(src + ": '" + kind.key() +
                       "': not a claim type (route, organization_path, username, ...)");
      continue;
    }
    if (!kind->is_object()) {
      errors.push_back(src + ": " + kind.key() + ": expected an object of value -> cell id");
      continue;
    }
    auto& map = index->by_kind[ClaimFieldNumber(type)];
    for (auto entry = kind->begin(); entry != kind->end(); ++entry) {
      std::string w = src + ": " + kind.key() + "." + entry.key() + ": ";
      if (entry.key().empty()) {
        errors.push_back(src + ": " + kind.key() + ": empty claim value");
        continue;
      }
      if (!entry->is_number_integer()) {
        errors.push_back(w + "expected an integer cell id, got " +
                         std::string(internal::JsonTypeName(*entry)));
        continue;
      }
      std::int64_t cell = entry->get<std::int64_t>();
      if (topology.FindById(cell) == nullptr) {
        errors.push_back(w + "cell " + std::to_string(cell) + " is not in the topology (" +
                         std::string(topology.source()) + ")");
        continue;
      }
      std::string place = kind.key() + "." + entry.key();
      auto [first, fresh] =
          first_given.emplace(std::pair(ClaimFieldNumber(type), entry.key()), place);
      if (!fresh) {
        errors.push_back(src + ": " + place + ": claimed again (cell " + std::to_string(cell) +
                         "), also at " + first->second + " (cell " +
                         std::to_string(map.at(entry.key())) + ")");
        continue;
      }
      map.emplace(entry.key(), cell);
      ++index->size;
    }
  }
  if (!errors.empty()) {
    std::string msg;
    for (const auto& e : errors) msg += (msg.empty() ? "" : "\n") + e;
    return Status::Invalid(msg);
  }
  return Claims(std::move(index));
}

Result<Claims> Claims::LoadFile(const std::string& path, const Topology& topology) {
  auto text = internal::ReadFile(path);
  if (!text.ok()) return text.status();
  return Parse(text.value(), path, topology);
}

std::optional<std::int64_t> Claims::Find(ClassifyType type, std::string_view value) const noexcept {
  int kind = ClaimFieldNumber(type);
  if (kind <= 0 || kind >= kClaimKinds) return std::nullopt;
  const auto& map = index_->by_kind[kind];
  auto it = map.find(value);
  if (it == map.end()) return std::nullopt;
  return it->second;
}

std::vector<ClaimEntry> Claims::Entries() const {
  std::vector<ClaimEntry> out;
  for (int kind = 1; kind < kClaimKinds; ++kind) {
    for (const auto& [value, cell] : index_->by_kind[kind]) {
      out.push_back({static_cast<ClassifyType>(100 + kind), value, cell});
    }
  }
  return out;
}

std::size_t Claims::size() const noexcept { return index_->size; }
std::string_view Claims::source() const noexcept { return index_->source; }

}  // namespace cellroute
