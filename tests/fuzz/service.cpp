// Topology Service answers from fuzz bytes, through the validation the client applies: a
// GetCells answer is a valid topology (which then survives the snapshot round trip) or is
// refused; a Classify answer names a known cell or is refused.
#include <cellroute/router.h>
#include <cellroute/topology_service.h>

#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const cellroute::Topology known =
      cellroute::Topology::ParseToml(cellroute::defaults::TopologyToml(), "<default>").value();
  std::string_view bytes = AsText(data, size);
  auto cells = cellroute::wire::ParseGetCellsResponse(bytes, "GetCells");
  if (cells.ok()) {
    auto back = cellroute::Topology::ParseToml(cells->ToToml(), "snapshot.toml");
    FUZZ_CHECK(back.ok());
    FUZZ_CHECK(back->cells() == cells->cells());
  } else {
    FUZZ_CHECK(!cells.status().message().empty());
  }
  auto owner = cellroute::wire::ParseClassifyResponse(bytes, known);
  if (owner.ok()) FUZZ_CHECK(known.FindById(owner.value()) != nullptr);
  return 0;
}
