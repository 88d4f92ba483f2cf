// Topology: cells from the Topology Service's config.toml (or from the service itself),
// validated as a whole.
#include "cellroute/topology.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <sstream>

#include "common/hash.h"
#include "common/text.h"

namespace cellroute {

namespace {

std::string Loc(std::string_view source, const toml::source_region& region) {
  if (region.begin.line == 0) return std::string(source);
  return internal::FormatLocation(source, {region.begin.line, region.begin.column});
}

// What an address or a session prefix may hold: visible ASCII, nothing a cookie, a header or
// a TOML string would need escaped or would split on. Text from the Topology Service is
// checked as strictly as a file: it ends up in snapshots, headers and logs.
std::string BadCharacter(std::string_view text, std::string_view also_refused) {
  for (unsigned char c : text) {
    if (c < 0x21 || c > 0x7e || also_refused.find(static_cast<char>(c)) != std::string_view::npos) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", c);
      return hex;
    }
  }
  return {};
}

// Checks a whole cell list; `where(i)` names cell i in errors.
template <typename Where>
std::vector<std::string> ValidateCells(const std::vector<Cell>& cells, Where where) {
  std::vector<std::string> errors;
  if (cells.empty())
    errors.push_back("no cells: the first cell is the legacy cell and is required");
  if (cells.size() > kMaxCells) {
    errors.push_back("too many cells: at most " + std::to_string(kMaxCells));
    return errors;
  }
  std::map<std::int64_t, std::size_t> ids;
  std::map<std::string, std::size_t> prefixes;
  struct Range {
    SequenceRange r;
    std::size_t cell;
  };
  std::vector<Range> ranges;
  for (std::size_t i = 0; i < cells.size(); ++i) {
    const Cell& c = cells[i];
    std::string w = where(i) + ": ";
    if (c.id <= 0)
      errors.push_back(w + "id: must be a positive integer, got " + std::to_string(c.id));
    auto [id_it, new_id] = ids.emplace(c.id, i);
    if (!new_id) {
      errors.push_back(w + "id: duplicate cell id " + std::to_string(c.id) + ", also at " +
                       where(id_it->second));
    }
    if (c.address.empty()) errors.push_back(w + "address: required, host or host:port");
    if (c.address.size() > kMaxAddressBytes) {
      errors.push_back(w + "address: longer than " + std::to_string(kMaxAddressBytes) + " bytes");
    }
    if (std::string bad = BadCharacter(c.address, "\"\\"); !bad.empty()) {
      errors.push_back(w + "address: byte " + bad +
                       " is not allowed (visible ASCII only, no white space or quotes)");
    }
    if (c.session_prefix.size() > kMaxSessionPrefixBytes) {
      errors.push_back(w + "session_prefix: longer than " + std::to_string(kMaxSessionPrefixBytes) +
                       " bytes");
    }
    if (std::string bad = BadCharacter(c.session_prefix, "\"\\;,="); !bad.empty()) {
      errors.push_back(w + "session_prefix: byte " + bad +
                       " is not allowed (visible ASCII only, none of ; , = \" \\)");
    }
    if (!c.session_prefix.empty()) {
      auto [p_it, new_prefix] = prefixes.emplace(c.session_prefix, i);
      if (!new_prefix) {
        errors.push_back(w + "session_prefix: duplicate session prefix \"" + c.session_prefix +
                         "\", also at " + where(p_it->second));
      }
    }
    for (const SequenceRange& r : c.sequence_ranges) {
      if (r.minval < 0 || r.maxval < r.minval) {
        errors.push_back(w + "sequence_ranges: [" + std::to_string(r.minval) + ", " +
                         std::to_string(r.maxval) + "] is not a range (0 <= minval <= maxval)");
      } else {
        ranges.push_back({r, i});
      }
    }
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.r.minval < b.r.minval; });
  for (std::size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].r.minval <= ranges[i - 1].r.maxval) {
      errors.push_back(
          where(ranges[i].cell) + ": sequence_ranges: [" + std::to_string(ranges[i].r.minval) +
          ", " + std::to_string(ranges[i].r.maxval) + "] overlaps [" +
          std::to_string(ranges[i - 1].r.minval) + ", " + std::to_string(ranges[i - 1].r.maxval) +
          "] of " + where(ranges[i - 1].cell));
    }
  }
  return errors;
}

std::string Join(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) {
    if (!s.empty()) s += '\n';
    s += l;
  }
  return s;
}

}  // namespace

Result<Topology> Topology::FromCells(std::vector<Cell> cells, std::string_view source) {
  auto errors = ValidateCells(cells, [&](std::size_t i) {
    return std::string(source) + ": cells[" + std::to_string(i) + "] (id " +
           std::to_string(cells[i].id) + ")";
  });
  if (!errors.empty()) return Status::Invalid(Join(errors));
  Topology t;
  t.cells_ = std::move(cells);
  t.source_ = std::string(source);
  return t;
}

Result<Topology> Topology::ParseToml(std::string_view text, std::string_view source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return Status::Invalid(Loc(source, e.source()) + ": " + std::string(e.description()));
  }
  std::vector<std::string> errors;
  std::vector<Cell> cells;
  std::vector<std::string> where;  // file:line:col of each cell
  const toml::node* cells_node = root.get("cells");
  if (cells_node == nullptr) {
    return Status::Invalid(std::string(source) +
                           ": no [[cells]]: at least the legacy cell is "
                           "required");
  }
  const toml::array* arr = cells_node->as_array();
  if (arr == nullptr) {
    return Status::Invalid(Loc(source, cells_node->source()) +
                           ": cells: expected an array of tables ([[cells]])");
  }
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const toml::node& node = *arr->get(i);
    std::string w = Loc(source, node.source()) + ": cells[" + std::to_string(i) + "]";
    const toml::table* t = node.as_table();
    if (t == nullptr) {
      errors.push_back(w + ": expected a table");
      continue;
    }
    Cell cell;
    for (const auto& [key, value] : *t) {
      std::string k(key.str());
      std::string kw = Loc(source, value.source()) + ": cells[" + std::to_string(i) + "]." + k;
      if (k == "id") {
        // is_integer first: converting a float such as 2e52 would be undefined behaviour.
        if (const auto* v = value.as_integer()) {
          cell.id = v->get();
        } else {
          errors.push_back(kw + ": expected an integer");
        }
      } else if (k == "address" || k == "session_prefix" || k == "name") {
        if (!value.is_string()) {
          errors.push_back(kw + ": expected a string");
        } else if (k == "address") {
          cell.address = value.as_string()->get();
        } else if (k == "session_prefix") {
          cell.session_prefix = value.as_string()->get();
        }
      } else if (k == "sequence_ranges" || k == "sequence_range") {
        auto add_range = [&](const toml::node& rn, const std::string& rw) {
          const toml::table* rt = rn.as_table();
          auto integer = [&](const char* name) -> std::optional<std::int64_t> {
            const toml::node* n = rt ? rt->get(name) : nullptr;
            const auto* as_int = n ? n->as_integer() : nullptr;
            return as_int ? std::optional<std::int64_t>(as_int->get()) : std::nullopt;
          };
          auto lo = integer("minval");
          auto hi = integer("maxval");
          if (!rt || !lo || !hi || rt->size() != 2) {
            errors.push_back(rw + ": expected a table with integer minval and maxval only");
            return;
          }
          cell.sequence_ranges.push_back({*lo, *hi});
        };
        if (const toml::array* ra = value.as_array(); ra && k == "sequence_ranges") {
          for (std::size_t j = 0; j < ra->size(); ++j) {
            add_range(*ra->get(j), Loc(source, ra->get(j)->source()) + ": cells[" +
                                       std::to_string(i) + "]." + k + "[" + std::to_string(j) +
                                       "]");
          }
        } else if (value.is_table() && k == "sequence_range") {
          add_range(value, kw);
        } else {
          errors.push_back(kw + (k == "sequence_ranges" ? ": expected an array of tables"
                                                        : ": expected a table"));
        }
      } else {
        errors.push_back(kw +
                         ": unknown key (expected id, address, session_prefix, "
                         "sequence_ranges)");
      }
    }
    if (!t->contains("id")) errors.push_back(w + ".id: required");
    if (!t->contains("address")) errors.push_back(w + ".address: required");
    cells.push_back(std::move(cell));
    where.push_back(w + " (id " + std::to_string(cells.back().id) + ")");
  }
  if (!errors.empty()) return Status::Invalid(Join(errors));
  auto semantic = ValidateCells(cells, [&](std::size_t i) { return where[i]; });
  if (!semantic.empty()) return Status::Invalid(Join(semantic));
  Topology topo;
  topo.cells_ = std::move(cells);
  topo.source_ = std::string(source);
  return topo;
}

Result<Topology> Topology::LoadFile(const std::string& path) {
  auto text = internal::ReadFile(path);
  if (!text.ok()) return text.status();
  return ParseToml(text.value(), path);
}

std::string Topology::ContentHash() const {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(internal::HashKey(0, ToToml())));
  return hex;
}

std::string Topology::ToToml() const {
  // toml++'s own writer: whatever a string holds comes out escaped, so ParseToml reads back
  // exactly these cells (tested by property over generated topologies).
  toml::array cells;
  for (const Cell& c : cells_) {
    toml::table t;
    t.insert("id", c.id);
    t.insert("address", c.address);
    if (!c.session_prefix.empty()) t.insert("session_prefix", c.session_prefix);
    if (!c.sequence_ranges.empty()) {
      toml::array ranges;
      for (const SequenceRange& r : c.sequence_ranges) {
        ranges.push_back(toml::table{{"minval", r.minval}, {"maxval", r.maxval}});
      }
      t.insert("sequence_ranges", std::move(ranges));
    }
    cells.push_back(std::move(t));
  }
  std::ostringstream out;
  out << toml::table{{"cells", std::move(cells)}} << "\n";
  return out.str();
}

const Cell* Topology::FindById(std::int64_t id) const noexcept {
  for (const Cell& c : cells_) {
    if (c.id == id) return &c;
  }
  return nullptr;
}

const Cell* Topology::FindBySessionPrefix(std::string_view prefix) const noexcept {
  if (prefix.empty()) return nullptr;
  for (const Cell& c : cells_) {
    if (c.session_prefix.size() == prefix.size() &&
        internal::EqualBytes(c.session_prefix.data(), prefix.data(), prefix.size())) {
      return &c;
    }
  }
  return nullptr;
}

}  // namespace cellroute
