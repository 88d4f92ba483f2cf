// A matcher for the simple regex shapes rulesets are mostly made of, at the speed of code
// written by hand: anchored sequences of literals, ASCII character classes and counted
// repetitions of them, with capturing groups (optionally made optional with '?'):
//
//   ^(?P<cell_name>cell-\d+)-.*         ^glrtr?-(?P<payload>[0-9A-Za-z_-]{27,300})\.01\.
//   _gitlab_session(_[0-9a-f]+)?        (as a whole-name match)
//
// Compile accepts a pattern only when one left-to-right pass with no backtracking gives
// exactly RE2's answer and captures: every choice (how many times a repetition runs, whether an
// optional group is entered) must be decided by the next byte alone, because what may follow
// the choice can never start with a byte the repeated part accepts. Anything else (alternation,
// '.', negated classes, flags, lazy quantifiers, non-ASCII, an unanchored search) is refused and
// left to RE2; a refusal costs speed, never a match.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cellroute::internal {

// The most capturing groups a ruleset's regex may have.
inline constexpr int kMaxRegexGroups = 20;

class SimpleRegex {
 public:
  static constexpr std::size_t kUnset = static_cast<std::size_t>(-1);
  // Offsets into the text; begin == kUnset for a group that did not take part. No
  // initializers: callers keep room for the most groups a regex may have, and Match sets
  // only the groups this one has.
  struct Group {
    std::size_t begin;
    std::size_t end;
  };

  // `pattern` in RE2 syntax (named groups as (?P<name>...)). `whole`: the match must span the
  // whole text (a cookie name); otherwise the pattern is a search, accepted only when it is
  // anchored with a leading '^'. Null when the shape is not one this matcher handles exactly.
  static std::unique_ptr<SimpleRegex> Compile(std::string_view pattern, bool whole);

  // Whether the text matches; groups[0] is the whole match and groups[1..groups()] the
  // capturing groups in RE2's numbering. `groups` has room for groups() + 1 entries.
  bool Match(std::string_view text, Group* groups) const noexcept;
  int groups() const noexcept { return groups_; }

 private:
  // Bytes as a 256-entry table: one load per byte matched.
  struct Set {
    std::array<bool, 256> has{};
    bool Has(unsigned char c) const noexcept { return has[c]; }
    void Add(unsigned char c) noexcept { has[c] = true; }
    void Add(const Set& o) noexcept {
      for (std::size_t i = 0; i < has.size(); ++i) has[i] = has[i] || o.has[i];
    }
    bool Intersects(const Set& o) const noexcept {
      for (std::size_t i = 0; i < has.size(); ++i) {
        if (has[i] && o.has[i]) return true;
      }
      return false;
    }
  };
  struct Node {
    // kLiteral: consecutive single bytes, fused after parsing and compared as one string.
    enum class Kind : std::uint8_t { kRun, kLiteral, kOpen, kClose };
    Kind kind = Kind::kRun;
    bool optional = false;           // kOpen: the group may be skipped ('?')
    std::uint8_t group = 0;          // kOpen/kClose: the capture index, 0 for (?:...)
    std::uint8_t reset_from = 0;     // optional kOpen: its first capture (cleared when skipped)
    // kRun/kLiteral: a capture that begins where this node does, and one that ends where it
    // ends (0: none), folded in from the group's own kOpen and kClose (FuseGroupMarks).
    std::uint8_t begins = 0, ends = 0;
    std::uint32_t min = 1, max = 1;  // kRun: how many bytes of the set; kLiteral: min is its
                                     // offset in literals_, max its length
    std::uint32_t skip_to = 0;       // optional kOpen: the node after its kClose
    std::uint32_t set = 0;  // kRun: the bytes accepted; optional kOpen: the bytes the group can
                            // start with (an index into sets_)
  };
  class Parser;

  std::uint32_t AddSet(const Set& set);
  bool CheckDeterministic();
  // Fuses runs of single literal bytes into kLiteral nodes and drops the sets nothing reads.
  void FuseLiterals();
  // Folds each group that cannot be skipped into the nodes it begins and ends with, where they
  // have room, and drops (?:...) that cannot be skipped: a capture is then two stores, not
  // two more nodes to step through.
  void FuseGroupMarks();
  // The bytes that can come next from node `from` on, and whether the rest can match nothing.
  Set First(std::size_t from, std::size_t until, bool* can_be_empty) const noexcept;

  // Small nodes, the 256-byte sets apart: a match walks the nodes and touches only the sets of
  // the runs it reaches.
  std::vector<Node> nodes_;
  std::vector<Set> sets_;
  std::string literals_;
  int groups_ = 0;
  bool anchored_end_ = false;
};

}  // namespace cellroute::internal
