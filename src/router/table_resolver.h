// The resolver over a route table: FIRST_CELL, SESSION_PREFIX and CELL_ID from the published
// cell list, claims from the table's entries, the legacy cell for everything unknown. One
// table Reader per request session, so a request sees one version.
//
// Declared here, with its routing methods inline, so that the router calls them directly (the
// class is final) when its resolver is one of these, as it is for every router the library
// builds; other resolvers are called through the Resolver interface.
#pragma once

#include <charconv>
#include <memory>
#include <new>

#include "cellroute/router.h"
#include "cellroute/table.h"
#include "cellroute/topology_service.h"
#include "table/reader_in_section.h"

namespace cellroute::internal {

class TableResolver final : public Resolver {
 public:
  using Reader = RouteTable::Reader;

  // `unknown_claim`: what a claim the table lacks means with no client to ask: unowned for a
  // claims file (the rules below decide), unavailable for a table frozen after a fork.
  explicit TableResolver(std::shared_ptr<const RouteTable> table,
                         std::shared_ptr<TopologyServiceClient> client = nullptr,
                         Fallback unknown_claim = Fallback::kUnknownClaim)
      : table_(std::move(table)), client_(std::move(client)), unknown_claim_(unknown_claim) {}

  bool Wait(ClassifyType type, std::string_view value,
            std::chrono::milliseconds deadline) const override;
  void WhenResolved(ClassifyType type, std::string_view value,
                    std::function<void()> done) const override;
  void AppendMetrics(std::string* out) const override;

  void Begin(Session* session) const noexcept override {
    if (session->in_read_section()) {
      ReaderInSection::Place(session->storage, *table_);
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
  static_assert(sizeof(Reader) <= sizeof(Session::storage));
  static_assert(alignof(Reader) <= 16);

  std::shared_ptr<const RouteTable> table_;
  std::shared_ptr<TopologyServiceClient> client_;
  Fallback unknown_claim_;
};

}  // namespace cellroute::internal
