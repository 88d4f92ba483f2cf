#include "rules/simple_regex.h"

#include <cstring>

#include "common/text.h"

namespace cellroute::internal {

namespace {
constexpr std::uint32_t kUnbounded = UINT32_MAX;
constexpr std::uint32_t kMaxRepeat = 1000;  // RE2's own bound on {n,m}
}  // namespace

// Reads the pattern left to right into nodes; false for anything outside the shapes above.
class SimpleRegex::Parser {
 public:
  Parser(std::string_view pattern, SimpleRegex* out) : p_(pattern), out_(out) {}

  bool Parse(bool whole) {
    if (!AtEnd() && p_[0] == '^') {
      ++i_;
    } else if (!whole) {
      return false;  // an unanchored search: RE2's job
    }
    std::vector<std::size_t> open;  // indices of the kOpen nodes not closed yet
    auto& nodes = out_->nodes_;
    while (!AtEnd()) {
      const char c = p_[i_];
      if (static_cast<unsigned char>(c) >= 0x80) return false;
      if (c == '(') {
        ++i_;
        Node n;
        n.kind = Node::Kind::kOpen;
        if (p_.substr(i_, 2) == "?:") {
          i_ += 2;
        } else if (p_.substr(i_, 3) == "?P<") {
          std::size_t close = p_.find('>', i_);
          if (close == std::string_view::npos) return false;
          i_ = close + 1;
          n.group = NewGroup();
        } else if (!AtEnd() && p_[i_] == '?') {
          return false;  // flags, lookaround
        } else {
          n.group = NewGroup();
        }
        if (out_->groups_ > kMaxRegexGroups) return false;
        open.push_back(nodes.size());
        nodes.push_back(n);
      } else if (c == ')') {
        ++i_;
        if (open.empty()) return false;
        std::size_t o = open.back();
        open.pop_back();
        if (o + 1 == nodes.size()) return false;  // an empty group
        Node close;
        close.kind = Node::Kind::kClose;
        close.group = nodes[o].group;
        if (!AtEnd() && std::strchr("*+{", p_[i_]) != nullptr) return false;
        if (!AtEnd() && p_[i_] == '?') {
          ++i_;
          if (!AtEnd() && std::strchr("?+*{", p_[i_]) != nullptr) return false;
          nodes[o].optional = close.optional = true;
          nodes[o].skip_to = static_cast<std::uint32_t>(nodes.size() + 1);
          nodes[o].reset_from = static_cast<std::uint8_t>(out_->groups_ + 1);
          for (std::size_t k = o; k < nodes.size(); ++k) {
            if (nodes[k].group != 0) {
              nodes[o].reset_from = nodes[k].group;
              break;
            }
          }
        }
        nodes.push_back(close);
      } else if (c == '$') {
        ++i_;
        if (!AtEnd() || !open.empty()) return false;
        out_->anchored_end_ = true;
      } else if (c == '.') {
        // Only a search's trailing top-level ".*": it matches whatever follows, even nothing.
        if (whole || !open.empty() || p_.substr(i_) != ".*") return false;
        i_ = p_.size();
      } else if (std::strchr("|^*+?{}]", c) != nullptr) {
        return false;
      } else {
        Node n;
        Set set;
        if (c == '[') {
          ++i_;
          if (!ParseClass(&set)) return false;
        } else if (c == '\\') {
          ++i_;
          bool single = false;
          unsigned char ch = 0;
          if (!ParseEscape(&set, &single, &ch)) return false;
          if (single) set.Add(ch);
        } else {
          set.Add(static_cast<unsigned char>(c));
          ++i_;
        }
        if (!ParseQuantifier(&n.min, &n.max) || n.max == 0) return false;
        n.set = out_->AddSet(set);
        nodes.push_back(n);
      }
    }
    if (!open.empty()) return false;
    if (whole) out_->anchored_end_ = true;
    return true;
  }

 private:
  bool AtEnd() const noexcept { return i_ >= p_.size(); }
  std::uint8_t NewGroup() noexcept { return static_cast<std::uint8_t>(++out_->groups_); }

  // After a backslash: a class escape (\d \w \s) into `set`, or one literal byte in `ch`.
  bool ParseEscape(Set* set, bool* single, unsigned char* ch) {
    if (AtEnd()) return false;
    const char c = p_[i_++];
    *single = false;
    switch (c) {
      case 'd':
        for (char d = '0'; d <= '9'; ++d) set->Add(static_cast<unsigned char>(d));
        return true;
      case 'w':
        for (char d = '0'; d <= '9'; ++d) set->Add(static_cast<unsigned char>(d));
        for (char d = 'a'; d <= 'z'; ++d) set->Add(static_cast<unsigned char>(d));
        for (char d = 'A'; d <= 'Z'; ++d) set->Add(static_cast<unsigned char>(d));
        set->Add('_');
        return true;
      case 's':  // RE2's \s: [\t\n\f\r ]
        for (char d : {'\t', '\n', '\f', '\r', ' '}) set->Add(static_cast<unsigned char>(d));
        return true;
      case 'n':
        *ch = '\n';
        break;
      case 't':
        *ch = '\t';
        break;
      case 'r':
        *ch = '\r';
        break;
      case 'f':
        *ch = '\f';
        break;
      case 'v':
        *ch = '\v';
        break;
      default: {
        auto u = static_cast<unsigned char>(c);
        // Escaped punctuation is itself; letters and digits name other things (\b, \A, \x41,
        // \pL, \Q, \1, ...), which are not modelled.
        bool punct = u > 0x20 && u < 0x7f &&
                     !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'));
        if (!punct) return false;
        *ch = u;
      }
    }
    *single = true;
    return true;
  }

  // After '[': ASCII members, ranges and \d \w \s, up to the closing ']'. No negation, no
  // [:name:] classes.
  bool ParseClass(Set* set) {
    if (!AtEnd() && p_[i_] == '^') return false;
    for (bool first = true;; first = false) {
      if (AtEnd()) return false;
      char c = p_[i_];
      if (c == ']' && !first) {
        ++i_;
        return true;
      }
      if (static_cast<unsigned char>(c) >= 0x80 || c == '[') return false;
      unsigned char lo;
      ++i_;
      if (c == '\\') {
        bool single = false;
        if (!ParseEscape(set, &single, &lo)) return false;
        if (!single) {
          if (!AtEnd() && p_[i_] == '-' && i_ + 1 < p_.size() && p_[i_ + 1] != ']') return false;
          continue;
        }
      } else {
        lo = static_cast<unsigned char>(c);
      }
      unsigned char hi = lo;
      if (i_ + 1 < p_.size() && p_[i_] == '-' && p_[i_ + 1] != ']') {
        ++i_;
        char h = p_[i_++];
        if (static_cast<unsigned char>(h) >= 0x80 || h == '[') return false;
        if (h == '\\') {
          bool single = false;
          if (!ParseEscape(set, &single, &hi) || !single) return false;
        } else {
          hi = static_cast<unsigned char>(h);
        }
        if (hi < lo) return false;
      }
      for (unsigned v = lo; v <= hi; ++v) set->Add(static_cast<unsigned char>(v));
    }
  }

  bool ParseNumber(std::uint32_t* out) {
    std::uint32_t v = 0;
    std::size_t start = i_;
    while (!AtEnd() && p_[i_] >= '0' && p_[i_] <= '9') {
      v = v * 10 + static_cast<std::uint32_t>(p_[i_] - '0');
      if (v > kMaxRepeat) return false;
      ++i_;
    }
    *out = v;
    return i_ > start;
  }

  bool ParseQuantifier(std::uint32_t* min, std::uint32_t* max) {
    *min = *max = 1;
    if (AtEnd()) return true;
    switch (p_[i_]) {
      case '?':
        *min = 0;
        ++i_;
        break;
      case '*':
        *min = 0;
        *max = kUnbounded;
        ++i_;
        break;
      case '+':
        *max = kUnbounded;
        ++i_;
        break;
      case '{': {
        ++i_;
        if (!ParseNumber(min)) return false;
        *max = *min;
        if (!AtEnd() && p_[i_] == ',') {
          ++i_;
          if (!AtEnd() && p_[i_] == '}') {
            *max = kUnbounded;
          } else if (!ParseNumber(max) || *max < *min) {
            return false;
          }
        }
        if (AtEnd() || p_[i_] != '}') return false;
        ++i_;
        break;
      }
      default:
        return true;
    }
    // Lazy or stacked quantifiers.
    return AtEnd() || std::strchr("?*+{", p_[i_]) == nullptr;
  }

  std::string_view p_;
  std::size_t i_ = 0;
  SimpleRegex* out_;
};

std::uint32_t SimpleRegex::AddSet(const Set& set) {
  sets_.push_back(set);
  return static_cast<std::uint32_t>(sets_.size() - 1);
}

SimpleRegex::Set SimpleRegex::First(std::size_t from, std::size_t until,
                                    bool* can_be_empty) const noexcept {
  Set s;
  std::size_t j = from;
  while (j < until) {
    const Node& n = nodes_[j];
    if (n.kind == Node::Kind::kRun) {
      s.Add(sets_[n.set]);
      if (n.min >= 1) {
        *can_be_empty = false;
        return s;
      }
      ++j;
    } else if (n.kind == Node::Kind::kOpen && n.optional) {
      s.Add(sets_[n.set]);
      j = n.skip_to;
    } else {
      ++j;
    }
  }
  *can_be_empty = true;
  return s;
}

bool SimpleRegex::CheckDeterministic() {
  // Optional groups' first bytes, inner groups (later in the list) before outer ones.
  for (std::size_t k = nodes_.size(); k-- > 0;) {
    Node& n = nodes_[k];
    if (n.kind != Node::Kind::kOpen || !n.optional) continue;
    bool empty = false;
    Set first = First(k + 1, n.skip_to - 1, &empty);
    if (empty) return false;  // a group that can match nothing gives no byte to decide by
    n.set = AddSet(first);
  }
  for (std::size_t k = 0; k < nodes_.size(); ++k) {
    const Node& n = nodes_[k];
    bool empty = false;
    if (n.kind == Node::Kind::kRun && n.min < n.max) {
      if (First(k + 1, nodes_.size(), &empty).Intersects(sets_[n.set])) return false;
    } else if (n.kind == Node::Kind::kOpen && n.optional) {
      if (First(n.skip_to, nodes_.size(), &empty).Intersects(sets_[n.set])) return false;
    }
  }
  return true;
}

std::unique_ptr<SimpleRegex> SimpleRegex::Compile(std::string_view pattern, bool whole) {
  auto rx = std::unique_ptr<SimpleRegex>(new SimpleRegex());
  Parser parser(pattern, rx.get());
  if (!parser.Parse(whole) || !rx->CheckDeterministic()) return nullptr;
  rx->FuseLiterals();
  rx->FuseGroupMarks();
  return rx;
}

void SimpleRegex::FuseGroupMarks() {
  auto holds_text = [](const Node& n) {
    return n.kind == Node::Kind::kRun || n.kind == Node::Kind::kLiteral;
  };
  std::vector<Node> fused;
  std::vector<std::uint32_t> index(nodes_.size() + 1);  // old node -> new node
  for (std::size_t k = 0; k < nodes_.size(); ++k) {
    // A node dropped here continues at the next one kept (what a skip landing on it meant).
    index[k] = static_cast<std::uint32_t>(fused.size());
    const Node& n = nodes_[k];
    const bool mark = (n.kind == Node::Kind::kOpen || n.kind == Node::Kind::kClose) && !n.optional;
    if (mark && n.group == 0) continue;  // (?:...) that cannot be skipped does nothing
    if (mark && n.kind == Node::Kind::kOpen && k + 1 < nodes_.size() && holds_text(nodes_[k + 1]) &&
        nodes_[k + 1].begins == 0) {
      nodes_[k + 1].begins = n.group;
      continue;
    }
    // A skip never lands on a group's end (it lands after an optional kClose, which is kept),
    // so the node before it is always the way in.
    if (mark && n.kind == Node::Kind::kClose && !fused.empty() && holds_text(fused.back()) &&
        fused.back().ends == 0) {
      fused.back().ends = n.group;
      continue;
    }
    fused.push_back(n);
  }
  index[nodes_.size()] = static_cast<std::uint32_t>(fused.size());
  for (Node& n : fused) {
    if (n.kind == Node::Kind::kOpen && n.optional) n.skip_to = index[n.skip_to];
  }
  nodes_ = std::move(fused);
}

void SimpleRegex::FuseLiterals() {
  auto single_byte = [&](const Node& n, unsigned char* byte) {
    if (n.kind != Node::Kind::kRun || n.min != 1 || n.max != 1) return false;
    int count = 0;
    for (std::size_t c = 0; c < 256; ++c) {
      if (sets_[n.set].Has(static_cast<unsigned char>(c))) {
        *byte = static_cast<unsigned char>(c);
        ++count;
      }
    }
    return count == 1;
  };
  std::vector<Node> fused;
  std::vector<Set> sets;
  std::vector<std::uint32_t> index(nodes_.size() + 1);  // old node -> new node
  for (std::size_t k = 0; k < nodes_.size();) {
    index[k] = static_cast<std::uint32_t>(fused.size());
    Node n = nodes_[k];
    unsigned char byte = 0;
    if (single_byte(n, &byte)) {
      Node lit;
      lit.kind = Node::Kind::kLiteral;
      lit.min = static_cast<std::uint32_t>(literals_.size());
      // Only the first node of a fused run can be a jump target: a skip lands after a kClose.
      for (; k < nodes_.size() && single_byte(nodes_[k], &byte); ++k) {
        literals_.push_back(static_cast<char>(byte));
      }
      lit.max = static_cast<std::uint32_t>(literals_.size()) - lit.min;
      fused.push_back(lit);
      continue;
    }
    if (n.kind == Node::Kind::kRun || (n.kind == Node::Kind::kOpen && n.optional)) {
      sets.push_back(sets_[n.set]);
      n.set = static_cast<std::uint32_t>(sets.size() - 1);
    }
    fused.push_back(n);
    ++k;
  }
  index[nodes_.size()] = static_cast<std::uint32_t>(fused.size());
  for (Node& n : fused) {
    if (n.kind == Node::Kind::kOpen && n.optional) n.skip_to = index[n.skip_to];
  }
  nodes_ = std::move(fused);
  sets_ = std::move(sets);
}

bool SimpleRegex::Match(std::string_view text, Group* groups) const noexcept {
  // An optional group entered and not closed yet: where to go on if its inside fails.
  struct Frame {
    std::size_t pos;
    std::uint32_t skip_to;
    std::uint32_t reset_from;  // the first capture inside the group
  };
  Frame frames[kMaxRegexGroups + 1];
  int depth = 0;
  for (int g = 0; g <= groups_; ++g) groups[g] = {kUnset, kUnset};
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t size = text.size();
  std::size_t pos = 0;
  const Node* const nodes = nodes_.data();
  const std::size_t count = nodes_.size();
  for (std::size_t k = 0; k < count;) {
    const Node& n = nodes[k];
    bool ok = true;
    switch (n.kind) {
      case Node::Kind::kRun: {
        if (n.begins != 0) groups[n.begins].begin = pos;
        const Set& set = sets_[n.set];
        std::size_t limit = n.max == kUnbounded || size - pos < n.max ? size : pos + n.max;
        std::size_t start = pos;
        // Eight bytes a test while they all belong (a token's payload is tens of bytes).
        // (Bitwise, not short-circuit: the eight loads and the test have no branch between.)
        auto in = [&](std::size_t i) { return static_cast<unsigned>(set.Has(s[i])); };
        while (limit - pos >= 8 && (in(pos)&in(pos + 1) & in(pos + 2) & in(pos + 3) & in(pos + 4) &
                                    in(pos + 5) & in(pos + 6) & in(pos + 7))) {
          pos += 8;
        }
        while (pos < limit && set.Has(s[pos])) ++pos;
        ok = pos - start >= n.min;
        break;
      }
      case Node::Kind::kLiteral: {
        if (n.begins != 0) groups[n.begins].begin = pos;
        const std::size_t len = n.max;
        ok = size - pos >= len && EqualBytes(text.data() + pos, literals_.data() + n.min, len);
        pos += len;
        break;
      }
      case Node::Kind::kOpen:
        if (n.optional) {
          if (pos == size || !sets_[n.set].Has(s[pos])) {
            k = n.skip_to;
            continue;
          }
          frames[depth++] = {pos, n.skip_to, n.reset_from};
        }
        if (n.group != 0) groups[n.group].begin = pos;
        break;
      case Node::Kind::kClose:
        if (n.optional) --depth;  // entered and matched: the choice is final (see header)
        if (n.group != 0) groups[n.group].end = pos;
        break;
    }
    if (ok) {
      if (n.ends != 0) groups[n.ends].end = pos;
      ++k;
      continue;
    }
    // The innermost optional group open here is skipped instead; with none, no match.
    if (depth == 0) return false;
    const Frame& f = frames[--depth];
    pos = f.pos;
    for (int g = static_cast<int>(f.reset_from); g <= groups_; ++g) groups[g] = {kUnset, kUnset};
    k = f.skip_to;
  }
  if (anchored_end_ && pos != size) return false;
  groups[0] = {0, pos};
  return true;
}

}  // namespace cellroute::internal
