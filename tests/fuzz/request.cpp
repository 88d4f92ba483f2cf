// Arbitrary requests through the default router: Route never crashes, its JSON is valid, and
// Explain (every rule, the reference) reaches the same decision.
#include <cellroute/router.h>

#include <nlohmann/json.hpp>

#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const cellroute::Router router = cellroute::Router::FromDefaults().value();
  // Lines: method, host, target, then "name: value" headers (a line without ':' is a cookie).
  std::string_view rest = AsText(data, size);
  cellroute::Request r;
  r.method = std::string(NextLine(&rest));
  r.host = std::string(NextLine(&rest));
  r.SetTarget(NextLine(&rest));
  while (!rest.empty()) {
    std::string_view line = NextLine(&rest);
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      std::size_t eq = line.find('=');
      r.AddCookie(std::string(line.substr(0, eq)),
                  eq == std::string_view::npos ? "" : std::string(line.substr(eq + 1)));
    } else {
      r.AddHeader(std::string(line.substr(0, colon)), std::string(line.substr(colon + 1)));
    }
  }
  cellroute::Decision d = router.Route(r.view());
  auto routed = nlohmann::json::parse(d.ToJson());
  auto explained = router.Explain(r.view());
  FUZZ_CHECK(nlohmann::json::parse(explained.decision.ToJson()) == routed);
  FUZZ_CHECK(nlohmann::json::parse(explained.ToJson()).contains("trace"));
  FUZZ_CHECK(d.rejected() || !d.address().empty());
  return 0;
}
