// Routing must not allocate: this binary counts every operator new made while the router
// decides, across cookie, path, token and fallback rules, and for a token it refuses (400).
#include <cellroute/router.h>
#include <cellroute/token.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <new>

namespace {
std::atomic<bool> g_counting{false};
std::atomic<long> g_allocations{0};
}  // namespace

// A replacement allocator pairs malloc with free by design.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

void* operator new(std::size_t size) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1);
  if (void* p = std::malloc(size ? size : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

TEST_CASE("routing a request does not allocate") {
  auto router = cellroute::Router::FromDefaults().value();
  cellroute::token::EncodeOptions opt;
  opt.prefix = "glrt-";
  opt.fields = {{"c", 2}, {"o", 1}};
  std::string token = cellroute::token::Encode(opt).value();

  std::string corrupt = token;
  corrupt[corrupt.size() - 9] = 'z';  // the length field now lies: rejected
  std::vector<cellroute::Request> requests(8);
  requests[0].SetTarget("/gitlab-org/gitlab/-/issues");
  requests[1].SetTarget("/o/acme-corp/projects");
  requests[2].AddHeader("runner-token", token);
  requests[3].AddHeader("Cookie", "a=b; _gitlab_session=cell-2-5cf865011acc; c=d");
  requests[4].SetTarget("/unclaimed/project");  // falls through the claim, then the fallback
  requests[5].SetTarget("/api/v4/projects");
  requests[6].AddHeader("cookie", "_gitlab_session=cell-9-x");  // unknown cell
  requests[7].AddHeader("runner-token", corrupt);

  cellroute::Decision d;
  for (auto& r : requests) router.Route(r.view(), &d);  // warm RE2's lazily built DFAs
  // As the bindings route (recording the rule's variables) and as a proxy does (not).
  for (bool record : {true, false}) {
    INFO("recording variables: " << record);
    d.RecordVariables(record);
    g_allocations = 0;
    g_counting = true;
    std::int64_t cells = 0, rejected = 0;
    for (int i = 0; i < 100; ++i) {
      for (auto& r : requests) {
        router.Route(r.view(), &d);
        cells += d.cell_id();
        rejected += d.rejected();
      }
    }
    g_counting = false;
    CHECK(cells == 100 * (2 + 3 + 2 + 2 + 1 + 1 + 1 + 0));
    CHECK(rejected == 100);
    CHECK(g_allocations.load() == 0);
  }
}
