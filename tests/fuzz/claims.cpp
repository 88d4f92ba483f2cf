// Claims JSON against the default topology: any bytes load or fail with a message; what
// loads answers for each of its entries.
#include <cellroute/router.h>
#include <cellroute/topology.h>

#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const cellroute::Topology topology =
      cellroute::Topology::ParseToml(cellroute::defaults::TopologyToml(), "<default>").value();
  auto claims = cellroute::Claims::Parse(AsText(data, size), "fuzz.json", topology);
  if (!claims.ok()) {
    FUZZ_CHECK(!claims.status().message().empty());
    return 0;
  }
  for (const auto& e : claims->Entries()) {
    FUZZ_CHECK(claims->Find(e.type, e.value) == e.cell_id);
    FUZZ_CHECK(topology.FindById(e.cell_id) != nullptr);
  }
  return 0;
}
