#include "router/metrics.h"

#include <algorithm>

#include "common/shard.h"

namespace cellroute::internal {

namespace {
std::uint64_t Load(const std::atomic<std::uint64_t>& a) noexcept {
  return a.load(std::memory_order_relaxed);
}
std::string_view FallbackLabel(Fallback f) noexcept {
  return f == Fallback::kNone ? std::string_view("none") : FallbackName(f);
}
}  // namespace

void SlotOutcome(std::size_t slot, Source* source, Fallback* fallback) noexcept {
  if (slot < kSources) {
    *source = static_cast<Source>(slot);
    *fallback = Fallback::kNone;
    return;
  }
  slot -= kSources;
  *source = slot < kFallbacks - 1 ? Source::kFallback : Source::kNone;
  *fallback = static_cast<Fallback>(slot % (kFallbacks - 1) + 1);
}

DecisionMetrics::DecisionMetrics(const Ruleset& rules) : rules_(rules), rows_(rules.size() + 1) {
  for (std::size_t i = 0; i < kShards; ++i) {
    shards_[i].storage =
        std::make_unique<std::atomic<std::uint64_t>[]>(rows_ * kOutcomeSlots + 2 * Shard::kPad);
    shards_[i].owned = i < kOwnShards;
  }
}

unsigned DecisionMetrics::FirstShard() noexcept {
  return std::min<unsigned>(ThreadNumber(), kOwnShards) + 1;
}

void DecisionMetrics::ObserveNs(const Ticket& ticket, std::uint64_t ns) const noexcept {
  Shard& s = *static_cast<Shard*>(ticket.shard);
  std::size_t b = 0;
  while (b < kLatencyBoundsNs.size() && ns > kLatencyBoundsNs[b]) ++b;
  Bump(s.owned, s.latency[b]);
  Bump(s.owned, s.latency_sum_ns, ns);
}

void DecisionMetrics::AddTo(DecisionTotals* totals) const {
  for (std::size_t row = 0; row < rows_; ++row) {
    DecisionTotals::Row* out = nullptr;
    for (std::size_t slot = 0; slot < kOutcomeSlots; ++slot) {
      std::uint64_t n = 0;
      for (const Shard& s : shards_) n += Load(s.cells()[row * kOutcomeSlots + slot]);
      if (n == 0) continue;
      if (out == nullptr) {
        bool rule = row < rows_ - 1;
        std::string id(rule ? rules_.rule_id(row) : "");
        out = &totals->by_rule[id];
        out->rule = id;
        out->action = std::string(ActionName(rule ? rules_.rule_action(row) : Action::kNone));
        out->type = std::string(ClassifyTypeName(rule ? rules_.rule_type(row) : ClassifyType::kNone));
      }
      out->count[slot] += n;
    }
  }
  for (const Shard& s : shards_) {
    for (std::size_t i = 0; i < 4; ++i) totals->rejected[i] += Load(s.rejected[i]);
    for (std::size_t i = 0; i <= kLatencyBoundsNs.size(); ++i) totals->latency[i] += Load(s.latency[i]);
    totals->latency_sum_ns += Load(s.latency_sum_ns);
  }
}

void DecisionTotals::Write(PromWriter& w) const {
  w.Family("cellroute_decisions_total", "counter",
           "Routing decisions, by the rule that made them (\"\" when none matched) and where "
           "the cell came from.");
  for (const auto& [id, row] : by_rule) {
    for (std::size_t slot = 0; slot < kOutcomeSlots; ++slot) {
      if (row.count[slot] == 0) continue;
      Source source;
      Fallback fallback;
      SlotOutcome(slot, &source, &fallback);
      w.Sample("cellroute_decisions_total",
               {{"rule", row.rule},
                {"action", row.action},
                {"type", row.type},
                {"source", SourceName(source)},
                {"fallback", FallbackLabel(fallback)}},
               row.count[slot]);
    }
  }
  w.Family("cellroute_rejected_requests_total", "counter",
           "Requests answered 400 without reaching a cell, by the kind of input.");
  static constexpr std::string_view kReasons[] = {"other", "request_limits", "invalid_input",
                                                  "value_too_long"};
  for (std::size_t i = 1; i < 4; ++i) {
    w.Sample("cellroute_rejected_requests_total", {{"reason", kReasons[i]}}, rejected[i]);
  }
  w.Family("cellroute_route_duration_seconds", "histogram",
           "Time to route one request (classify and resolve), timed for one decision in " +
               std::to_string(kTimeOneIn) + " per thread.");
  double bounds[kLatencyBoundsNs.size()];
  for (std::size_t i = 0; i < kLatencyBoundsNs.size(); ++i) {
    bounds[i] = static_cast<double>(kLatencyBoundsNs[i]) / 1e9;
  }
  w.Histogram("cellroute_route_duration_seconds", {}, bounds, latency, kLatencyBoundsNs.size(),
              static_cast<double>(latency_sum_ns) / 1e9);
}

}  // namespace cellroute::internal
