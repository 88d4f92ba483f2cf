#include "common/prometheus.h"

#include <charconv>
#include <cmath>

namespace cellroute::internal {

namespace {

void AppendEscaped(std::string* out, std::string_view value) {
  for (char c : value) {
    switch (c) {
      case '\\':
        *out += "\\\\";
        break;
      case '"':
        *out += "\\\"";
        break;
      case '\n':
        *out += "\\n";
        break;
      default:
        *out += c;
    }
  }
}

void AppendNumber(std::string* out, double v) {
  if (std::isnan(v)) {
    *out += "NaN";
  } else if (std::isinf(v)) {
    *out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    out->append(buf, ec == std::errc() ? end : buf);
  }
}

void AppendNumber(std::string* out, std::uint64_t v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out->append(buf, ec == std::errc() ? end : buf);
}

}  // namespace

void PromWriter::Family(std::string_view name, std::string_view type, std::string_view help) {
  *out_ += "# HELP ";
  *out_ += name;
  *out_ += ' ';
  // HELP text escapes only backslash and newline.
  for (char c : help) {
    if (c == '\\') {
      *out_ += "\\\\";
    } else if (c == '\n') {
      *out_ += "\\n";
    } else {
      *out_ += c;
    }
  }
  *out_ += "\n# TYPE ";
  *out_ += name;
  *out_ += ' ';
  *out_ += type;
  *out_ += '\n';
}

void PromWriter::Name(std::string_view name, std::initializer_list<Label> labels,
                      const Label* extra) {
  *out_ += name;
  if (labels.size() == 0 && extra == nullptr) {
    *out_ += ' ';
    return;
  }
  *out_ += '{';
  bool first = true;
  auto add = [&](const Label& l) {
    if (!first) *out_ += ',';
    first = false;
    *out_ += l.first;
    *out_ += "=\"";
    AppendEscaped(out_, l.second);
    *out_ += '"';
  };
  for (const Label& l : labels) add(l);
  if (extra != nullptr) add(*extra);
  *out_ += "} ";
}

void PromWriter::Sample(std::string_view name, std::initializer_list<Label> labels, double value) {
  Name(name, labels, nullptr);
  AppendNumber(out_, value);
  *out_ += '\n';
}

void PromWriter::Sample(std::string_view name, std::initializer_list<Label> labels,
                        std::uint64_t value) {
  Name(name, labels, nullptr);
  AppendNumber(out_, value);
  *out_ += '\n';
}

void PromWriter::Counter(std::string_view name, std::string_view help, std::uint64_t value) {
  Family(name, "counter", help);
  Sample(name, {}, value);
}

void PromWriter::Gauge(std::string_view name, std::string_view help, double value) {
  Family(name, "gauge", help);
  Sample(name, {}, value);
}

void PromWriter::Histogram(std::string_view name, std::initializer_list<Label> labels,
                           const double* bounds, const std::uint64_t* counts,
                           std::size_t n_bounds, double sum) {
  std::string bucket = std::string(name) + "_bucket";
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i <= n_bounds; ++i) {
    cumulative += counts[i];
    std::string le;
    AppendNumber(&le, i < n_bounds ? bounds[i] : INFINITY);
    Label extra{"le", le};
    Name(bucket, labels, &extra);
    AppendNumber(out_, cumulative);
    *out_ += '\n';
  }
  Sample(std::string(name) + "_sum", labels, sum);
  Sample(std::string(name) + "_count", labels, cumulative);
}

}  // namespace cellroute::internal
