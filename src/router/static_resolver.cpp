// The resolver for a fixed topology and claims file: FIRST_CELL, SESSION_PREFIX and CELL_ID
// from the cell list, claims from the claims file, the legacy cell for everything unknown.
#include <charconv>
#include <cstring>

#include "cellroute/router.h"

namespace cellroute {

Resolver::~Resolver() = default;

void Resolution::SetAddress(std::string_view addr) noexcept {
  std::size_t n = addr.size() < kMaxAddressBytes ? addr.size() : kMaxAddressBytes;
  std::memcpy(address.data(), addr.data(), n);
  address[n] = '\0';
  address_size = static_cast<std::uint16_t>(n);
}

void Resolution::SetCell(const Cell& cell, Source from) noexcept {
  cell_id = cell.id;
  SetAddress(cell.address);
  source = from;
}

namespace {

class StaticResolver final : public Resolver {
 public:
  StaticResolver(Topology topology, Claims claims)
      : topology_(std::move(topology)), claims_(std::move(claims)) {}

  void Resolve(ClassifyType type, std::string_view value, Resolution* out) const noexcept override {
    const Cell* cell = nullptr;
    Source source = Source::kCellList;
    Fallback miss = Fallback::kUnknownCell;
    switch (type) {
      case ClassifyType::kFirstCell:
        cell = &topology_.legacy();
        break;
      case ClassifyType::kSessionPrefix:
        cell = topology_.FindBySessionPrefix(value);
        break;
      case ClassifyType::kCellId: {
        std::int64_t id = 0;
        auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), id);
        if (ec == std::errc() && end == value.data() + value.size()) cell = topology_.FindById(id);
        break;
      }
      default:
        if (IsClaim(type)) {
          source = Source::kClaims;
          miss = Fallback::kUnknownClaim;
          if (auto owner = claims_.Find(type, value)) cell = topology_.FindById(*owner);
        }
        break;
    }
    if (cell == nullptr) {
      ResolveLegacy(out);
      out->fallback = miss;
      return;
    }
    out->SetCell(*cell, source);
    out->fallback = Fallback::kNone;
    out->age_ms = 0;
  }

  void ResolveLegacy(Resolution* out) const noexcept override {
    out->SetCell(topology_.legacy(), Source::kFallback);
    out->age_ms = 0;
  }

 private:
  Topology topology_;
  Claims claims_;
};

}  // namespace

std::shared_ptr<const Resolver> MakeStaticResolver(Topology topology, Claims claims) {
  return std::make_shared<StaticResolver>(std::move(topology), std::move(claims));
}

}  // namespace cellroute
