// The resolver over a route table: FIRST_CELL, SESSION_PREFIX and CELL_ID from the published
// cell list, claims from the table's entries, the legacy cell for everything unknown. One
// table Reader per request session, so a request sees one version.
#include <charconv>
#include <cstring>
#include <new>

#include "cellroute/router.h"
#include "cellroute/table.h"
#include "cellroute/topology_service.h"
#include "common/prometheus.h"
#include "table/reader_in_section.h"

namespace cellroute {

Resolver::~Resolver() = default;

bool Resolver::Wait(ClassifyType, std::string_view, std::chrono::milliseconds) const {
  return false;
}

void Resolver::WhenResolved(ClassifyType, std::string_view, std::function<void()> done) const {
  done();
}

void Resolver::AppendMetrics(std::string*) const {}

void Resolution::SetAddress(std::string_view addr) noexcept {
  std::size_t n = addr.size() < kMaxAddressBytes ? addr.size() : kMaxAddressBytes;
  if (n > 0) std::memcpy(address.data(), addr.data(), n);  // an empty view may have no data
  address[n] = '\0';
  address_size = static_cast<std::uint16_t>(n);
}

void Resolution::SetCell(const Cell& cell, Source from) noexcept {
  cell_id = cell.id;
  SetAddress(cell.address);
  source = from;
}

namespace {

using Reader = RouteTable::Reader;
static_assert(sizeof(Reader) <= sizeof(Resolver::Session::storage));
static_assert(alignof(Reader) <= 16);

class TableResolver final : public Resolver {
 public:
  // `unknown_claim`: what a claim the table lacks means with no client to ask: unowned for a
  // claims file (the rules below decide), unavailable for a table frozen after a fork.
  explicit TableResolver(std::shared_ptr<const RouteTable> table,
                         std::shared_ptr<TopologyServiceClient> client = nullptr,
                         Fallback unknown_claim = Fallback::kUnknownClaim)
      : table_(std::move(table)), client_(std::move(client)), unknown_claim_(unknown_claim) {}

  bool Wait(ClassifyType type, std::string_view value,
            std::chrono::milliseconds deadline) const override {
    return client_ && client_->FetchWait(type, value, deadline);
  }
  void WhenResolved(ClassifyType type, std::string_view value,
                    std::function<void()> done) const override {
    if (client_) {
      client_->Fetch(type, value, std::move(done));
    } else {
      done();
    }
  }

  void Begin(Session* session) const noexcept override {
    if (session->in_read_section()) {
      internal::ReaderInSection::Place(session->storage, *table_);
    } else {
      new (session->storage) Reader(*table_);
    }
  }
  void End(Session* session) const noexcept override { reader(*session).~Reader(); }

  void Resolve(Session& session, ClassifyType type, std::string_view value,
               Resolution* out) const noexcept override {
    const Reader& r = reader(session);
    const Topology* topo = r.topology();
    if (topo == nullptr) {
      ResolveLegacy(session, out);
      if (client_) client_->CountFallback();
      return;
    }
    const Cell* cell = nullptr;
    Source source = Source::kCellList;
    Fallback miss = Fallback::kUnknownCell;
    std::int64_t age = 0;
    switch (type) {
      case ClassifyType::kFirstCell:
        cell = &topo->legacy();
        break;
      case ClassifyType::kSessionPrefix:
        cell = topo->FindBySessionPrefix(value);
        break;
      case ClassifyType::kCellId: {
        std::int64_t id = 0;
        auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), id);
        if (ec == std::errc() && end == value.data() + value.size()) cell = topo->FindById(id);
        break;
      }
      default: {
        if (!IsClaim(type)) break;
        TableHit hit = r.Lookup(type, value);
        age = hit.is_static ? 0 : hit.age_ms;  // configuration has no age; answers do
        miss = hit.kind == TableHit::Kind::kMiss ? unknown_claim_ : Fallback::kUnknownClaim;
        if (client_) {
          client_->CountLookup(hit.kind);
          // A miss is asked for now; an answer past its refresh time is refreshed in the
          // background while it keeps serving.
          // A claim the client cannot queue (the queue is full) decides now, as unavailable.
          if (hit.kind == TableHit::Kind::kMiss) {
            miss = client_->Fetch(type, value) ? Fallback::kPending : Fallback::kUnavailable;
          } else if (hit.needs_refresh) {
            client_->Fetch(type, value);
          }
        }
        if (hit.kind == TableHit::Kind::kPositive) {
          source = hit.is_static ? Source::kClaims : Source::kTable;
          cell = topo->FindById(hit.cell_id);
          if (cell == nullptr) miss = Fallback::kUnknownCell;  // owner left the topology
        }
        break;
      }
    }
    if (cell == nullptr) {
      ResolveLegacy(session, out);
      out->fallback = miss;
      out->age_ms = age;
      if (client_) client_->CountFallback();
      return;
    }
    out->SetCell(*cell, source);
    out->fallback = Fallback::kNone;
    out->age_ms = age;
  }

  void AppendMetrics(std::string* out) const override {
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
    w.Gauge("cellroute_topology_cells", "Cells in the cell list in use.",
            static_cast<double>(cells));
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

  void ResolveLegacy(Session& session, Resolution* out) const noexcept override {
    const Topology* topo = reader(session).topology();
    if (topo == nullptr) {  // nothing published yet: no cell to name, and the decision says so
      out->cell_id = 0;
      out->SetAddress({});
      out->source = Source::kNone;
      out->fallback = Fallback::kNoTopology;
      out->age_ms = 0;
      return;
    }
    out->SetCell(topo->legacy(), Source::kFallback);
    out->age_ms = 0;
  }

 private:
  static Reader& reader(Session& s) noexcept {
    return *std::launder(reinterpret_cast<Reader*>(s.storage));
  }
  std::shared_ptr<const RouteTable> table_;
  std::shared_ptr<TopologyServiceClient> client_;
  Fallback unknown_claim_;
};

}  // namespace

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
