// The resolver over a route table (router/table_resolver.h): what is not on the routing path,
// and the resolvers the library builds.
#include "router/table_resolver.h"

#include "common/prometheus.h"

namespace cellroute {

Resolver::~Resolver() = default;

bool Resolver::Wait(ClassifyType, std::string_view, std::chrono::milliseconds) const {
  return false;
}

void Resolver::WhenResolved(ClassifyType, std::string_view, std::function<void()> done) const {
  done();
}

void Resolver::AppendMetrics(std::string*) const {}

using internal::TableResolver;

bool TableResolver::Wait(ClassifyType type, std::string_view value,
                         std::chrono::milliseconds deadline) const {
  return client_ && client_->FetchWait(type, value, deadline);
}

void TableResolver::WhenResolved(ClassifyType type, std::string_view value,
                                 std::function<void()> done) const {
  if (client_) {
    client_->Fetch(type, value, std::move(done));
  } else {
    done();
  }
}

void TableResolver::AppendMetrics(std::string* out) const {
  internal::PromWriter w(out);
  std::string hash, source = client_ ? client_->status().topology_source : "static";
  std::size_t cells = 0;
  {
    Reader r(*table_);
    if (const Topology* t = r.topology()) {
      hash = t->ContentHash();
      cells = t->cells().size();
    }
  }
  if (unknown_claim_ == Fallback::kUnavailable) source = "frozen";
  w.Family("cellroute_topology_info", "gauge",
           "The cell list in use: a hash of its content (the same cells give the same hash "
           "in every process) and where it came from.");
  w.Sample("cellroute_topology_info", {{"hash", hash}, {"source", source}}, std::uint64_t{1});
  w.Gauge("cellroute_topology_cells", "Cells in the cell list in use.", static_cast<double>(cells));
  RouteTable::Stats st = table_->stats();
  w.Family("cellroute_route_table_entries", "gauge",
           "Entries of the route table: static (claims files), cached (answers of the "
           "Topology Service) and negative (claims nobody owns).");
  w.Sample("cellroute_route_table_entries", {{"kind", "static"}},
           static_cast<std::uint64_t>(st.entries - st.cached_entries));
  w.Sample("cellroute_route_table_entries", {{"kind", "cached"}},
           static_cast<std::uint64_t>(st.cached_entries - st.negative_entries));
  w.Sample("cellroute_route_table_entries", {{"kind", "negative"}},
           static_cast<std::uint64_t>(st.negative_entries));
  w.Counter("cellroute_route_table_evictions_total",
            "Cached entries evicted to stay within max_cached_entries.", st.evictions);
  w.Gauge("cellroute_route_table_bytes", "Memory the route table's entries and nodes use.",
          static_cast<double>(st.bytes));
  w.Gauge("cellroute_route_table_reserved_bytes",
          "Memory the route table holds from the system, free space it reuses included.",
          static_cast<double>(st.reserved_bytes));
  w.Gauge("cellroute_route_table_version", "Versions the route table has published.",
          static_cast<double>(st.version));
  if (client_) client_->AppendMetrics(out);
}

std::shared_ptr<const Resolver> MakeTableResolver(std::shared_ptr<const RouteTable> table) {
  return std::make_shared<TableResolver>(std::move(table));
}

std::shared_ptr<const Resolver> MakeFrozenResolver(std::shared_ptr<const RouteTable> table) {
  return std::make_shared<TableResolver>(std::move(table), nullptr, Fallback::kUnavailable);
}

std::shared_ptr<const Resolver> MakeServiceResolver(std::shared_ptr<TopologyServiceClient> client) {
  auto table = client->table();
  return std::make_shared<TableResolver>(std::move(table), std::move(client));
}

std::shared_ptr<const Resolver> MakeStaticResolver(Topology topology, Claims claims) {
  auto table = std::make_shared<RouteTable>();
  RouteTable::Batch batch;
  batch.SetTopology(std::move(topology));
  for (const ClaimEntry& e : claims.Entries()) batch.Put(e.type, e.value, e.cell_id);
  table->Apply(std::move(batch));
  return MakeTableResolver(std::move(table));
}

}  // namespace cellroute
