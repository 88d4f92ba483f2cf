// Metrics in the Prometheus text exposition format (version 0.0.4): a family's HELP and TYPE
// lines once, then its samples, label values escaped. Every cellroute layer that has something
// to count writes into one of these; Router::Metrics() joins them.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace cellroute::internal {

class PromWriter {
 public:
  using Label = std::pair<std::string_view, std::string_view>;

  explicit PromWriter(std::string* out) : out_(out) {}

  // "# HELP name help" and "# TYPE name type" (counter, gauge, histogram).
  void Family(std::string_view name, std::string_view type, std::string_view help);
  void Sample(std::string_view name, std::initializer_list<Label> labels, double value);
  void Sample(std::string_view name, std::initializer_list<Label> labels, std::uint64_t value);
  // A family of one sample without labels.
  void Counter(std::string_view name, std::string_view help, std::uint64_t value);
  void Gauge(std::string_view name, std::string_view help, double value);

  // A histogram's buckets (cumulative counts at each upper bound, in seconds), then _sum and
  // _count; `counts` has one more entry than `bounds` (the +Inf bucket).
  void Histogram(std::string_view name, std::initializer_list<Label> labels,
                 const double* bounds, const std::uint64_t* counts, std::size_t n_bounds,
                 double sum);

 private:
  void Name(std::string_view name, std::initializer_list<Label> labels, const Label* extra);
  std::string* out_;
};

}  // namespace cellroute::internal
