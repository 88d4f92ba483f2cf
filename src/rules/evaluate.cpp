// Evaluation: rules in order, first match wins. The same routine serves Evaluate (no trace,
// no allocation) and Explain (a trace with reasons), so the two cannot disagree.
#include <algorithm>
#include <bit>
#include <charconv>
#include <cstring>

#include "cellroute/token.h"
#include "common/base64.h"
#include "common/json.h"
#include "common/text.h"
#include "rules/compiled.h"
#include "rules/token_decode.h"

namespace cellroute {

namespace {

constexpr int kMaxSubmatches = internal::kMaxRegexGroups + 1;  // and the whole match

struct TypeName {
  ClassifyType type;
  std::string_view name;
};
constexpr TypeName kTypeNames[] = {
    {ClassifyType::kFirstCell, "FIRST_CELL"},
    {ClassifyType::kSessionPrefix, "SESSION_PREFIX"},
    {ClassifyType::kCellId, "CELL_ID"},
    {ClassifyType::kClaimRoute, "route"},
    {ClassifyType::kClaimOrganizationPath, "organization_path"},
    {ClassifyType::kClaimRedirectRoute, "redirect_route"},
    {ClassifyType::kClaimUsername, "username"},
    {ClassifyType::kClaimEmail, "email"},
    {ClassifyType::kClaimProjectId, "project_id"},
    {ClassifyType::kClaimNamespaceId, "namespace_id"},
    {ClassifyType::kClaimGpgKey, "gpg_key"},
    {ClassifyType::kClaimSshKey, "ssh_key"},
    {ClassifyType::kClaimUserId, "user_id"},
    {ClassifyType::kClaimOrganizationId, "organization_id"},
    {ClassifyType::kClaimServiceDeskCustomEmail, "service_desk_custom_email"},
};

// Standard or URL-safe base64, padded or not. False on anything else.
bool DecodeBase64Any(std::string_view in, std::string* out) {
  out->clear();
  return internal::DecodeBase64(in, internal::Base64Mode::kAny, [&](std::uint8_t b) {
    out->push_back(static_cast<char>(b));
    return true;
  });
}

std::string_view TransformFailure(internal::TransformKind kind) {
  using internal::TransformKind;
  switch (kind) {
    case TransformKind::kRoutableTokenPayload:
    case TransformKind::kRoutableToken:
      return "malformed routable token";
    case TransformKind::kBase64LineDelimited:
      return "malformed base64-line-delimited input";
    case TransformKind::kBase64Json:
      return "malformed base64-json input";
    case TransformKind::kNone:
      break;
  }
  return "malformed input";
}

}  // namespace

std::string_view ActionName(Action action) noexcept {
  switch (action) {
    case Action::kClassify:
      return "classify";
    case Action::kProxy:
      return "proxy";
    case Action::kNone:
      break;
  }
  return "";
}

std::string_view ClassifyTypeName(ClassifyType type) noexcept {
  for (const auto& t : kTypeNames) {
    if (t.type == type) return t.name;
  }
  return "";
}

bool ParseClassifyType(std::string_view name, ClassifyType* out) noexcept {
  for (const auto& t : kTypeNames) {
    bool match = t.name == name;
    if (!match && IsClaim(t.type) && name.size() == t.name.size()) {
      match = true;  // claims may be written in upper case: ROUTE, ORGANIZATION_PATH
      for (std::size_t i = 0; i < name.size(); ++i) {
        char c = name[i];
        char lower = (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c;
        if (lower != t.name[i]) {
          match = false;
          break;
        }
      }
    }
    if (match) {
      *out = t.type;
      return true;
    }
  }
  return false;
}

const Outcome::Slot* Outcome::FindSlot(std::string_view name) const noexcept {
  for (std::size_t i = 0; i < nvars_; ++i) {
    const Span s = vars_[i].name;
    if (s.size == name.size() &&
        internal::EqualBytes(buffer_.data() + s.offset, name.data(), name.size())) {
      return &vars_[i];
    }
  }
  return nullptr;
}

bool Outcome::Find(std::string_view name, std::string_view* out) const noexcept {
  const Slot* slot = FindSlot(name);
  if (slot != nullptr) *out = View(slot->value);
  return slot != nullptr;
}

void RuleEvaluator::Reset(Outcome* out) noexcept {
  out->kind_ = Outcome::Kind::kNoMatch;
  out->action_ = Action::kNone;
  out->type_ = ClassifyType::kNone;
  out->rule_index_ = -1;
  out->rule_id_size_ = 0;
  out->value_ = out->proxy_ = out->reason_ = {};
  out->used_ = 0;
  out->nvars_ = 0;
  out->rejection_ = Outcome::Rejection::kNone;
}

bool RuleEvaluator::Store(Outcome* out, std::string_view text, Span* span,
                          std::size_t reserved) noexcept {
  // Callers keep used_ + reserved within the buffer (Variables::Count, Place).
  if (text.size() > Outcome::kBufferBytes - out->used_ - reserved) return false;
  internal::CopyBytes(out->buffer_.data() + out->used_, text.data(), text.size());
  span->offset = out->used_;
  span->size = static_cast<std::uint16_t>(text.size());
  out->used_ = static_cast<std::uint16_t>(out->used_ + text.size());
  return true;
}

bool RuleEvaluator::AddVariable(Outcome* out, std::string_view name,
                                std::string_view value) noexcept {
  return AddVariable(out, {}, name, value);
}

bool RuleEvaluator::AddVariable(Outcome* out, std::string_view ns, std::string_view field,
                                std::string_view value) noexcept {
  if (out->nvars_ == Outcome::kMaxVariables) return false;
  std::size_t name_size = ns.empty() ? field.size() : ns.size() + 1 + field.size();
  if (name_size + value.size() > Outcome::kBufferBytes - out->used_) return false;
  // One bounds check above, then plain copies: "ns.field" (or "field"), then the value.
  char* at = out->buffer_.data() + out->used_;
  auto put = [&at](std::string_view text) {
    internal::CopyBytes(at, text.data(), text.size());
    at += text.size();
  };
  Outcome::Slot& slot = out->vars_[out->nvars_];
  slot.name = {out->used_, static_cast<std::uint16_t>(name_size)};
  if (!ns.empty()) {
    put(ns);
    *at++ = '.';
  }
  put(field);
  slot.value = {static_cast<std::uint16_t>(out->used_ + name_size),
                static_cast<std::uint16_t>(value.size())};
  put(value);
  out->used_ = static_cast<std::uint16_t>(out->used_ + name_size + value.size());
  ++out->nvars_;
  return true;
}

namespace {
// The bytes std::to_chars writes for `v`: log10 from the bit width (1233 / 4096 is just over
// log10(2)), one less when below that power of ten.
std::size_t DecimalSize(std::int64_t v) noexcept {
  static constexpr std::uint64_t kPowers[] = {1ULL,
                                              10ULL,
                                              100ULL,
                                              1000ULL,
                                              10000ULL,
                                              100000ULL,
                                              1000000ULL,
                                              10000000ULL,
                                              100000000ULL,
                                              1000000000ULL,
                                              10000000000ULL,
                                              100000000000ULL,
                                              1000000000000ULL,
                                              10000000000000ULL,
                                              100000000000000ULL,
                                              1000000000000000ULL,
                                              10000000000000000ULL,
                                              100000000000000000ULL,
                                              1000000000000000000ULL,
                                              10000000000000000000ULL};
  const std::uint64_t u =
      (v < 0 ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v)) | 1;
  const auto t = static_cast<std::size_t>(std::bit_width(u) * 1233 >> 12);
  return (v < 0 ? 1 : 0) + t + 1 - (u < kPowers[t] ? 1 : 0);
}

[[gnu::always_inline]] inline std::string_view PrintDecimal(std::int64_t v,
                                                            char (&digits)[24]) noexcept {
  auto end = std::to_chars(digits, digits + sizeof digits, v).ptr;
  return {digits, static_cast<std::size_t>(end - digits)};
}
}  // namespace

// The variables of the rule being evaluated: what its templates read and, when the outcome
// records them (Outcome::RecordVariables), what the decision shows. Recorded, each is copied
// into the outcome as it is produced (AddVariable) and found again by name. Not recorded (a
// rule with Rule::lean_variables), a capture is kept as a view of the request's text under its
// id and a token's field as a number under its rank, both found without a name; the bytes that
// recording would have used are counted all the same, so that both ways reach the same
// decision: the same bounds, the same rejections. One per rule evaluated, on the stack.
class RuleEvaluator::Variables {
 public:
  Variables(Outcome* out, const internal::Rule& rule) noexcept
      : out_(out), lean_(!out->record_variables_ && rule.lean_variables), rule_(rule) {}
  Outcome* out() const noexcept { return out_; }

  // What a matcher that fails part-way goes back to.
  struct Mark {
    std::uint8_t nvars, count;
    std::uint16_t used, unrecorded;
    std::uint32_t captured;
  };
  Mark Here() const noexcept { return {out_->nvars_, count_, out_->used_, unrecorded_, captured_}; }
  void Back(Mark m) noexcept {
    out_->nvars_ = m.nvars;
    out_->used_ = m.used;
    count_ = m.count;
    unrecorded_ = m.unrecorded;
    captured_ = m.captured;
  }
  void Clear() noexcept { Back({0, 0, 0, 0, 0}); }

  // A named capture or path parameter: false past kMaxVariables or the buffer.
  bool Capture(std::string_view name, int id, std::string_view value) noexcept {
    if (!lean_) return AddVariable(out_, name, value);
    if (!Count(name.size() + value.size())) return false;
    captures_[id] = {value.data(), value.size()};
    captured_ |= std::uint32_t{1} << id;
    return true;
  }
  // Every field of a decoded token, as `ns.key`: false past kMaxVariables or the buffer.
  bool Fields(std::string_view ns, const token::Payload& payload) noexcept {
    for (const auto& f : payload.fields()) {
      if (!lean_) {
        char digits[24];
        if (!AddVariable(out_, ns, f.key(), PrintDecimal(f.value, digits))) return false;
        continue;
      }
      if (!Count(ns.size() + 1 + f.key().size() + DecimalSize(f.value))) return false;
      int rank = internal::TokenFieldRank(f.key());
      if (rank >= 0) {
        fields_[rank] = f.value;
        have_fields_ |= static_cast<std::uint8_t>(1u << rank);
      }
    }
    return true;
  }

  // A variable as a template reads it.
  struct Value {
    std::string_view text;  // unless numeric
    bool numeric = false;
    std::int64_t number = 0;
    const Outcome::Slot* slot = nullptr;  // recorded: where it is
  };
  // The variable a template part names; false when the rule did not produce it.
  [[gnu::always_inline]] bool Find(const internal::Template::Part& part, Value* v) const noexcept {
    if (!lean_) {
      v->slot = Recorded(part);
      if (v->slot == nullptr) return false;
      v->text = out_->View(v->slot->value);
      return true;
    }
    if (part.capture >= 0) {
      if (!(captured_ >> part.capture & 1)) return false;
      const Bytes& b = captures_[part.capture];
      v->text = std::string_view(b.data, b.size);
      return true;
    }
    if (part.field < 0 || !(have_fields_ >> part.field & 1)) return false;
    v->numeric = true;
    v->number = fields_[part.field];
    return true;
  }

  // Copies `text` into the outcome (short of the bytes counted for it, unrecorded).
  bool Store(std::string_view text, Span* span) noexcept {
    return RuleEvaluator::Store(out_, text, span, unrecorded_);
  }
  // Puts a variable's value into the outcome as the whole of a template: recorded, it is there
  // already; otherwise it is copied (a number printed), into bytes counted for it already.
  void Place(const Value& v, Span* span) noexcept {
    if (v.slot != nullptr) {
      *span = v.slot->value;
      return;
    }
    char digits[24];
    const std::string_view text = Text(v, digits);
    // Counted already, so it fits. Were the count ever short, the bytes reserved drop to none
    // (Store's bound cannot wrap) and a value that does not fit is left out (the span stays
    // empty, as Reset left it), never written past the buffer.
    unrecorded_ =
        static_cast<std::uint16_t>(unrecorded_ - std::min<std::size_t>(unrecorded_, text.size()));
    (void)Store(text, span);
  }
  // A variable's text, a number printed into `digits`.
  static std::string_view Text(const Value& v, char (&digits)[24]) noexcept {
    return v.numeric ? PrintDecimal(v.number, digits) : v.text;
  }

 private:
  // The recorded variable a template part names: first where it lands when everything before
  // it was produced (Template::Part), then by name (Outcome::FindSlot, the first of that name;
  // a name a part resolves is produced at most once, so a hit there is the only one).
  const Outcome::Slot* Recorded(const internal::Template::Part& part) const noexcept {
    const std::string_view name = part.text;
    const int at = part.capture >= 0 ? part.capture
                   : part.field >= 0 ? rule_.produced + part.field
                                     : -1;
    if (at >= 0 && at < out_->nvars_) {
      const Outcome::Slot& slot = out_->vars_[at];
      if (slot.name.size == name.size() &&
          internal::EqualBytes(out_->buffer_.data() + slot.name.offset, name.data(), name.size())) {
        return &slot;
      }
    }
    return out_->FindSlot(name);
  }
  // One more variable of `bytes` (name and value), counted as recording would have stored it.
  bool Count(std::size_t bytes) noexcept {
    if (count_ == Outcome::kMaxVariables ||
        bytes > Outcome::kBufferBytes - out_->used_ - unrecorded_) {
      return false;
    }
    ++count_;
    unrecorded_ = static_cast<std::uint16_t>(unrecorded_ + bytes);
    return true;
  }
  // A view without a constructor: captures_ is never cleared (only bits of captured_ are read),
  // and 32 string_views would be zeroed for every rule evaluated.
  struct Bytes {
    const char* data;
    std::size_t size;
  };

  Outcome* out_;
  const bool lean_;
  const internal::Rule& rule_;
  std::uint8_t count_ = 0;        // lean: variables produced
  std::uint8_t have_fields_ = 0;  // lean: bit r: the token field of rank r
  std::uint16_t unrecorded_ = 0;  // lean: bytes recording would have stored
  std::uint32_t captured_ = 0;    // lean: bit id: captures_[id] is set
  Bytes captures_[Outcome::kMaxVariables];
  std::int64_t fields_[internal::kTokenFieldCount];
};

[[gnu::always_inline]] inline RuleEvaluator::Render RuleEvaluator::RenderTemplate(
    Variables& vars, const internal::Template& t, Span* span, std::string_view* text,
    std::string_view* missing) noexcept {
  // A template that is one variable (most are) inline; anything else in RenderParts.
  if (t.parts.size() != 1 || !t.parts[0].variable) [[unlikely]] {
    return RenderParts(vars, t, span, text, missing);
  }
  Variables::Value v;
  if (!vars.Find(t.parts[0], &v)) {
    *missing = t.parts[0].text;
    return Render::kMissing;
  }
  if (span != nullptr) vars.Place(v, span);
  // A view is asked for by a transform's input (a capture, never a number) and by
  // validate.exist (which reads nothing).
  if (text != nullptr) *text = v.numeric ? std::string_view() : v.text;
  return Render::kOk;
}

RuleEvaluator::Render RuleEvaluator::RenderParts(Variables& vars, const internal::Template& t,
                                                 Span* span, std::string_view* text,
                                                 std::string_view* missing) noexcept {
  Outcome* out = vars.out();
  const std::uint16_t start = out->used_;
  for (const auto& part : t.parts) {
    std::string_view piece = part.text;
    char digits[24];
    if (part.variable) {
      Variables::Value v;
      if (!vars.Find(part, &v)) {
        out->used_ = start;
        *missing = part.text;
        return Render::kMissing;
      }
      piece = Variables::Text(v, digits);
    }
    Span ignored;
    if (!vars.Store(piece, &ignored)) {
      out->used_ = start;
      return Render::kFull;
    }
  }
  const Span whole{start, static_cast<std::uint16_t>(out->used_ - start)};
  if (span != nullptr) *span = whole;
  if (text != nullptr) *text = out->View(whole);
  return Render::kOk;
}

bool RuleEvaluator::MatchRegex(const internal::Regex& rx, std::string_view text, Variables& vars,
                               bool* overflow, bool whole) noexcept {
  // Each matcher reports its groups its own way; a group that did not take part adds nothing.
  auto add = [&](const internal::Regex::Capture& c, std::string_view value) {
    if (vars.Capture(c.name, c.id, value)) return true;
    *overflow = true;
    return false;
  };
  if (rx.simple) {
    // Compiled whole for a cookie name, anchored at the start otherwise (compile.cpp): it
    // matches as `whole` asks.
    internal::SimpleRegex::Group sub[kMaxSubmatches];
    if (!rx.simple->Match(text, sub)) return false;
    for (const auto& c : rx.captures) {
      const auto& g = sub[c.group];
      if (g.begin != internal::SimpleRegex::kUnset &&
          !add(c, text.substr(g.begin, g.end - g.begin))) {
        return false;
      }
    }
    return true;
  }
  if (text.substr(0, rx.prefix.size()) != rx.prefix) return false;
  re2::StringPiece sub[kMaxSubmatches];
  if (!rx.re->Match(re2::StringPiece(text.data(), text.size()), 0, text.size(),
                    whole ? RE2::ANCHOR_BOTH : RE2::UNANCHORED, sub, rx.groups + 1)) {
    return false;
  }
  for (const auto& c : rx.captures) {
    const re2::StringPiece& s = sub[c.group];
    if (s.data() != nullptr && !add(c, std::string_view(s.data(), s.size()))) return false;
  }
  return true;
}

bool internal::MatchWholeName(const Regex& rx, std::string_view name) noexcept {
  if (rx.simple) {
    SimpleRegex::Group sub[kMaxSubmatches];
    return rx.simple->Match(name, sub);
  }
  if (name.substr(0, rx.prefix.size()) != rx.prefix) return false;
  return rx.re->Match(re2::StringPiece(name.data(), name.size()), 0, name.size(), RE2::ANCHOR_BOTH,
                      nullptr, 0);
}

bool RuleEvaluator::MatchPath(const Ruleset::Compiled& compiled, const internal::Matcher& m,
                              std::string_view path, internal::RequestScan& scan, Variables& vars,
                              bool* overflow, std::string* why) {
  using Kind = internal::PathSegment::Kind;
  if (path.empty() || path[0] != '/') {
    if (why) *why = "path '" + std::string(path) + "' does not start with '/'";
    return false;
  }
  std::string_view rest = path.substr(1);
  const Variables::Mark before = vars.Here();
  // The reason is built only when explaining: the routing path must not allocate.
  auto fail = [&](auto&& reason) {
    vars.Back(before);
    if (why) *why = reason();
    return false;
  };
  for (std::size_t i = 0; i < m.pattern.size(); ++i) {
    const auto& seg = m.pattern[i];
    if (seg.kind == Kind::kRest) return true;
    if (rest.empty()) {
      return fail([&] {
        return std::string("path '" + std::string(path) + "' is shorter than pattern '" +
                           m.pattern_source + "'");
      });
    }
    std::size_t slash = rest.find('/');
    std::string_view part = rest.substr(0, slash);
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    if (seg.kind == Kind::kLiteral) {
      if (part != seg.text) {
        return fail([&] {
          return std::string("path segment '" + std::string(part) + "' is not '" + seg.text + "'");
        });
      }
    } else {
      if (part.empty())
        return fail([&] { return std::string("path segment for :" + seg.text + " is empty"); });
      if (i == 0 && scan.Reserved(compiled.reserved_words, part)) {
        return fail([&] {
          return std::string("path segment '" + std::string(part) + "' is a reserved word");
        });
      }
      if (!vars.Capture(seg.text, seg.id, part)) {
        *overflow = true;
        return fail([&] { return std::string("captured values exceed the outcome buffer"); });
      }
    }
  }
  if (!rest.empty()) {
    return fail([&] {
      return std::string("path '" + std::string(path) + "' is longer than pattern '" +
                         m.pattern_source + "'");
    });
  }
  return true;
}

bool RuleEvaluator::ApplyTransform(const internal::Transform& t, Variables& vars,
                                   std::string* why) {
  using internal::TransformKind;
  Outcome* out = vars.out();
  std::string_view input, length, missing;
  if (RenderTemplate(vars, t.input, nullptr, &input, &missing) != Render::kOk) {
    if (why) *why = "transform input is absent or too long";
    return false;
  }
  if (t.length.present &&
      RenderTemplate(vars, t.length, nullptr, &length, &missing) != Render::kOk) {
    if (why) *why = "transform length is absent or too long";
    return false;
  }

  try {
    switch (t.kind) {
      case TransformKind::kRoutableTokenPayload:
      case TransformKind::kRoutableToken: {
        // Decoded on the stack, without a Status: the routing path does not allocate, even
        // for a token it refuses.
        token::Payload payload;
        internal::TokenError error;
        bool ok = t.kind == TransformKind::kRoutableToken
                      ? internal::DecodeToken(input, &payload, &error)
                      : internal::DecodeTokenPayload(input, length, &payload, &error);
        if (!ok) {
          if (why) *why = "malformed routable token: " + error.Message();
          return false;
        }
        if (!vars.Fields(t.output, payload)) {
          if (why) *why = "too many decoded fields";
          return false;
        }
        return true;
      }
      case TransformKind::kBase64LineDelimited: {
        std::string text;
        if (!DecodeBase64Any(input, &text)) {
          if (why) *why = "base64-line-delimited: bad base64";
          return false;
        }
        std::string_view rest = text;
        while (!rest.empty()) {
          std::size_t nl = rest.find('\n');
          std::string_view line = rest.substr(0, nl);
          rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
          if (line.empty()) continue;
          std::size_t colon = line.find(':');
          if (colon == std::string_view::npos || colon == 0) {
            if (why) *why = "base64-line-delimited: a line is not key:value";
            return false;
          }
          if (!AddVariable(out, t.output, line.substr(0, colon), line.substr(colon + 1))) {
            if (why) *why = "base64-line-delimited: too many fields";
            return false;
          }
        }
        return true;
      }
      case TransformKind::kBase64Json: {
        // A whole JWT (header.payload.signature) or just its payload.
        std::string_view part = input;
        std::size_t dot = part.find('.');
        if (dot != std::string_view::npos) {
          std::size_t dot2 = part.find('.', dot + 1);
          part = part.substr(dot + 1, dot2 == std::string_view::npos ? dot2 : dot2 - dot - 1);
        }
        std::string text;
        if (!DecodeBase64Any(part, &text)) {
          if (why) *why = "base64-json: bad base64";
          return false;
        }
        auto doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
        if (!doc.is_object()) {
          if (why) *why = "base64-json: not a JSON object";
          return false;
        }
        for (auto it = doc.begin(); it != doc.end(); ++it) {
          std::string value;
          if (it->is_string()) {
            value = it->get<std::string>();
          } else if (it->is_number() || it->is_boolean()) {
            value = it->dump();
          } else {
            continue;  // nested values are not routing fields
          }
          if (!AddVariable(out, t.output, it.key(), value)) {
            if (why) *why = "base64-json: too many fields";
            return false;
          }
        }
        return true;
      }
      case TransformKind::kNone:
        return true;
    }
  } catch (const std::exception&) {
    if (why) *why = "transform failed";
    return false;
  }
  return true;
}

Outcome::Kind RuleEvaluator::EvalRule(const Ruleset::Compiled& compiled, const internal::Rule& rule,
                                      const RequestView& request, internal::RequestScan& scan,
                                      Outcome* out, std::string* why) {
  using internal::MatcherKind;
  Reset(out);
  Variables vars(out, rule);
  bool overflow = false;
  auto reject = [&](std::string_view reason,
                    Outcome::Rejection why_class = Outcome::Rejection::kValueTooLong) {
    vars.Clear();
    out->value_ = out->proxy_ = {};  // a rejected request has neither (nor what they held)
    out->rejection_ = why_class;
    if (!Store(out, reason.substr(0, 512), &out->reason_)) out->reason_ = {};
    if (why) *why = std::string(reason);
    return Outcome::Kind::kRejected;
  };

  for (const auto& m : rule.matchers) {
    bool found = false;
    const internal::Regex* value_rx = m.value_regex.get();
    switch (m.kind) {
      case MatcherKind::kHeader:
        // As RequestView::AnyHeader, with the name compared eight bytes at a time.
        for (const Header& h : request.headers) {
          if (m.header.Equals(h.name) &&
              (value_rx == nullptr || MatchRegex(*value_rx, h.value, vars, &overflow))) {
            found = true;
            break;
          }
        }
        if (!found && why) {
          std::string_view ignored;
          *why = m.description + (request.FindHeader(m.name, &ignored)
                                      ? " does not match /" + value_rx->source + "/"
                                      : " is absent");
        }
        break;
      case MatcherKind::kCookie: {
        bool name_seen = false;
        const internal::Regex* name_rx = m.name_regex.get();
        found = scan.cookies().Any([&](std::string_view name, std::string_view value) {
          // A regex name's named captures are variables too, produced before the value's.
          const Variables::Mark before = vars.Here();
          bool name_ok = name_rx == nullptr ? name == m.name
                         : name_rx->captures.empty()
                             ? internal::MatchWholeName(*name_rx, name)
                             : MatchRegex(*name_rx, name, vars, &overflow, /*whole=*/true);
          if (!name_ok) return false;
          name_seen = true;
          if (value_rx == nullptr || MatchRegex(*value_rx, value, vars, &overflow)) return true;
          if (!overflow) vars.Back(before);  // its name's captures go; the next cookie may match
          return false;
        });
        if (!found && why) {
          *why = m.description +
                 (name_seen ? " does not match /" + value_rx->source + "/" : " is absent");
        }
        break;
      }
      case MatcherKind::kPath:
        if (!m.pattern.empty() || !m.pattern_source.empty()) {
          found = MatchPath(compiled, m, request.path, scan, vars, &overflow, why);
          if (!found && why && why->empty()) *why = m.description + " does not match";
        } else {
          found = MatchRegex(*value_rx, request.path, vars, &overflow);
          if (!found && why) {
            *why = "path '" + std::string(request.path) + "' does not match /" + value_rx->source +
                   "/";
          }
        }
        break;
      case MatcherKind::kMethod:
      case MatcherKind::kHost:
      case MatcherKind::kQuery: {
        std::string_view field = m.kind == MatcherKind::kMethod ? request.method
                                 : m.kind == MatcherKind::kHost ? request.host
                                                                : request.query;
        found = MatchRegex(*value_rx, field, vars, &overflow);
        if (!found && why) {
          *why = m.description + " '" + std::string(field) + "' does not match /" +
                 value_rx->source + "/";
        }
        break;
      }
    }
    if (overflow)
      return reject("captured values exceed " + std::to_string(Outcome::kBufferBytes) + " bytes");
    if (!found) return Outcome::Kind::kNoMatch;
  }

  if (rule.transform.kind != internal::TransformKind::kNone) {
    std::string reason;
    if (!ApplyTransform(rule.transform, vars, why ? &reason : nullptr)) {
      // The message is built only when explaining; a proxy still learns which rule refused.
      return reject(why ? std::string_view(reason) : TransformFailure(rule.transform.kind),
                    Outcome::Rejection::kInvalidInput);
    }
  }

  std::string_view missing;
  for (const auto& t : rule.validate_exist) {
    std::string_view ignored;
    Render r = RenderTemplate(vars, t, nullptr, &ignored, &missing);
    if (r == Render::kMissing) {
      if (why) *why = "validate: ${" + std::string(missing) + "} is absent";
      return Outcome::Kind::kNoMatch;
    }
    if (r == Render::kFull) return reject("captured values exceed the outcome buffer");
  }

  const internal::Template* result =
      rule.action == Action::kClassify ? &rule.value : &rule.proxy_address;
  Span* target = rule.action == Action::kClassify ? &out->value_ : &out->proxy_;
  Render r = RenderTemplate(vars, *result, target, nullptr, &missing);
  if (r == Render::kMissing) {
    if (why) *why = "${" + std::string(missing) + "} is absent";
    return Outcome::Kind::kNoMatch;
  }
  if (r == Render::kFull) return reject("captured values exceed the outcome buffer");
  if (rule.action == Action::kProxy && out->proxy_.size > kMaxAddressBytes) {
    return reject("proxy address is longer than 255 bytes");
  }

  out->action_ = rule.action;
  out->type_ = rule.type;
  // A rule that had to record its variables (base64 fields) shows none to an outcome that
  // does not record them.
  if (!out->record_variables_) out->nvars_ = 0;
  if (why) *why = "matched";
  return Outcome::Kind::kMatched;
}

static_assert(kMaxRequestFields == 256 && kMaxRequestBytes == 65536,
              "the rejection reasons below name these bounds");

void RuleEvaluator::RejectOverLimits(const internal::RequestScan& scan, Outcome* out) noexcept {
  Reset(out);
  out->kind_ = Outcome::Kind::kRejected;
  out->rejection_ = Outcome::Rejection::kRequestLimits;
  (void)Store(out,
              scan.fields() > kMaxRequestFields ? "request has more than 256 headers and cookies"
                                                : "request is larger than 65536 bytes",
              &out->reason_);
}

inline bool RuleEvaluator::WithinLimits(const internal::RequestScan& scan, Outcome* out) noexcept {
  if (scan.fields() <= kMaxRequestFields && scan.bytes() <= kMaxRequestBytes) [[likely]] {
    return true;
  }
  RejectOverLimits(scan, out);
  return false;
}

[[gnu::always_inline]] inline void RuleEvaluator::Start(const Ruleset::Compiled& compiled,
                                                        Pass* pass, Outcome* out) noexcept {
  pass->started_ = true;
  const internal::RuleIndex& index = compiled.index;
  pass->scan_.Bind(pass->request_, index.reads_cookies());
  pass->within_limits_ = WithinLimits(pass->scan_, out);
  if (!pass->within_limits_) return;
  if (index.enabled()) index.Candidates(pass->request_, pass->scan_, pass->candidates_);
}

void RuleEvaluator::Continue(const Ruleset::Compiled& compiled, Pass* pass, std::size_t first_rule,
                             Outcome* out) noexcept {
  if (!pass->started_) Start(compiled, pass, out);
  if (!pass->within_limits_) {
    (void)WithinLimits(pass->scan_, out);  // the same rejection again
    return;
  }
  const internal::RuleIndex& index = compiled.index;
  if (!index.enabled()) {
    for (std::size_t i = first_rule; i < compiled.rules.size(); ++i) {
      Outcome::Kind kind =
          EvalRule(compiled, compiled.rules[i], pass->request_, pass->scan_, out, nullptr);
      if (kind != Outcome::Kind::kNoMatch) return Finish(compiled.rules[i], i, kind, out);
    }
    Reset(out);
    return;
  }
  for (std::size_t w = first_rule / 64; w < index.words(); ++w) {
    std::uint64_t bits = pass->candidates_[w];
    if (w == first_rule / 64) bits &= ~0ULL << (first_rule % 64);
    while (bits != 0) {
      std::size_t i = w * 64 + static_cast<std::size_t>(std::countr_zero(bits));
      if (!pass->headers_looked_at_ && index.AnchoredOnHeader(i)) {
        // The first header-anchored candidate: now the header names are looked up.
        pass->headers_looked_at_ = true;
        index.LookAtHeaders(pass->request_, pass->candidates_);
        bits = pass->candidates_[w] & (~0ULL << (i % 64));
        continue;
      }
      bits &= bits - 1;
      Outcome::Kind kind =
          EvalRule(compiled, compiled.rules[i], pass->request_, pass->scan_, out, nullptr);
      if (kind != Outcome::Kind::kNoMatch) return Finish(compiled.rules[i], i, kind, out);
    }
  }
  Reset(out);
}

void RuleEvaluator::Evaluate(const Ruleset& rules, Pass* pass, std::size_t first_rule,
                             Outcome* out) noexcept {
  Continue(*rules.compiled_, pass, first_rule, out);
}

void RuleEvaluator::Trace(const Ruleset::Compiled& compiled, const RequestView& request,
                          std::size_t first_rule, Outcome* out, std::vector<RuleTrace>* trace) {
  internal::RequestScan scan;
  scan.Bind(request, compiled.index.reads_cookies());
  if (!WithinLimits(scan, out)) return;
  for (std::size_t i = first_rule; i < compiled.rules.size(); ++i) {
    const internal::Rule& rule = compiled.rules[i];
    std::string why;
    Outcome::Kind kind = EvalRule(compiled, rule, request, scan, out, &why);
    trace->push_back({rule.id, kind, std::move(why)});
    if (kind != Outcome::Kind::kNoMatch) return Finish(rule, i, kind, out);
  }
  Reset(out);
}

void RuleEvaluator::Finish(const internal::Rule& rule, std::size_t i, Outcome::Kind kind,
                           Outcome* out) noexcept {
  out->kind_ = kind;
  out->rule_index_ = static_cast<int>(i);
  // Ids are at most kMaxRuleIdBytes (checked at load), kept padded to that size: one
  // fixed-size copy, which compiles to a few vector moves.
  out->rule_id_ = rule.id_bytes;
  out->rule_id_size_ = static_cast<std::uint8_t>(std::min(rule.id.size(), kMaxRuleIdBytes));
  if (kind == Outcome::Kind::kRejected) {
    out->action_ = rule.action;
    out->type_ = rule.type;
  }
}

void Ruleset::Evaluate(const RequestView& request, Outcome* out,
                       std::size_t first_rule) const noexcept {
  RuleEvaluator::Pass pass(request);
  RuleEvaluator::Evaluate(*this, &pass, first_rule, out);
}

Explanation Ruleset::Explain(const RequestView& request, std::size_t first_rule) const {
  Explanation e;
  RuleEvaluator::Trace(*compiled_, request, first_rule, &e.outcome, &e.rules);
  return e;
}

}  // namespace cellroute
