// Status and Result<T>: errors in cellroute are values.
//
//   cellroute::Result<cellroute::Ruleset> rs = cellroute::Ruleset::LoadFile("rules.json");
//   if (!rs.ok()) { std::cerr << rs.status().ToString() << "\n"; return 1; }
//   const cellroute::Ruleset& rules = rs.value();
//
// A Status carries a code (stable, mirrored by the C API's CR_E* values) and a message. A
// message may hold several lines, one per problem, when a loader reports every error it found
// (each line names the file and, where there is one, the rule id, the field and line:column).
// Status and Result are plain values: copy them, return them, never throw them.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "cellroute/export.h"

namespace cellroute {

enum class StatusCode : int {
  kOk = 0,
  kInvalid = 1,      // bad input: a ruleset, topology, claims file, token or argument
  kNotFound = 2,     // a thing that was asked for does not exist
  kUnavailable = 3,  // a dependency (file, Topology Service) cannot be reached
  kTimeout = 4,      // a deadline passed
  kInternal = 5,     // a bug in cellroute
};

CELLROUTE_EXPORT std::string_view StatusCodeName(StatusCode code) noexcept;

class [[nodiscard]] Status {
 public:
  Status() noexcept = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() noexcept { return Status(); }
  static Status Invalid(std::string message) { return {StatusCode::kInvalid, std::move(message)}; }
  static Status NotFound(std::string message) {
    return {StatusCode::kNotFound, std::move(message)};
  }
  static Status Unavailable(std::string message) {
    return {StatusCode::kUnavailable, std::move(message)};
  }

  bool ok() const noexcept { return code_ == StatusCode::kOk; }
  StatusCode code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  // "invalid: <message>", or "ok".
  CELLROUTE_EXPORT std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Either a T or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : state_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    if (std::get<Status>(state_).ok()) {
      state_ = Status(StatusCode::kInternal, "Result built from an ok Status without a value");
    }
  }

  bool ok() const noexcept { return std::holds_alternative<T>(state_); }
  const Status& status() const noexcept {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(state_);
  }
  const T& value() const& { return std::get<T>(state_); }
  T& value() & { return std::get<T>(state_); }
  T&& value() && { return std::get<T>(std::move(state_)); }
  const T* operator->() const { return &value(); }
  T* operator->() { return &value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> state_;
};

}  // namespace cellroute
