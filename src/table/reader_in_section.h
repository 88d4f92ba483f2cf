// The library's own way to read a route table inside a read-side section it already holds
// (ADR 0017): the router reads its rules in one for the whole of a request, and the table
// resolver's Reader for that request borrows it instead of entering a second.
#pragma once

#include <new>

#include "cellroute/table.h"

namespace cellroute::internal {

struct ReaderInSection {
  // A Reader of `table`, made at `where`, for a caller inside a read-side section of
  // cellroute's that outlives it. Destroyed as any Reader.
  static RouteTable::Reader* Place(void* where, const RouteTable& table) noexcept {
    return new (where) RouteTable::Reader(table, RouteTable::Reader::InSection{});
  }
};

}  // namespace cellroute::internal
