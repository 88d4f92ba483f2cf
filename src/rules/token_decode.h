// The token decoder itself, shared by the public Decode/DecodePayload (which turn a failure into
// a Status) and the routing path (which must not allocate, and builds a message only when
// explaining).
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "cellroute/token.h"

namespace cellroute::internal {

// Why a token is not routable: a fixed text, and the payload key it concerns (or none; a copy
// of its first bytes: the decoded payload it came from is gone by the time anyone reads it).
struct TokenError {
  std::string_view what;
  std::array<char, 16> key{};
  std::size_t key_size = 0;
  std::string Message() const;
};

bool DecodeTokenPayload(std::string_view text, std::string_view length_base36, token::Payload* out,
                        TokenError* error) noexcept;
bool DecodeToken(std::string_view token, token::Payload* out, TokenError* error) noexcept;

}  // namespace cellroute::internal
