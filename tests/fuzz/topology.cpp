// Topology TOML: any bytes load or fail with a message; what loads writes back to TOML that
// loads to the same cells (the snapshot round trip fail-static depends on).
#include <cellroute/topology.h>

#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto topo = cellroute::Topology::ParseToml(AsText(data, size), "fuzz.toml");
  if (!topo.ok()) {
    FUZZ_CHECK(!topo.status().message().empty());
    return 0;
  }
  auto back = cellroute::Topology::ParseToml(topo->ToToml(), "snapshot.toml");
  FUZZ_CHECK(back.ok());
  FUZZ_CHECK(back->cells() == topo->cells());
  return 0;
}
