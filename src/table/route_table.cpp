// The route table: an immutable hash array mapped trie per version, path-copied by one writer
// at a time, read under RCU. See include/cellroute/table.h and docs/adr/0005-route-table.md.
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>

#include "cellroute/table.h"
#include "common/hash.h"
#include "table/rcu.h"

namespace cellroute {

namespace {

using internal::HashKey;

constexpr int kBits = 5;
constexpr std::uint64_t kIndexMask = (1u << kBits) - 1;
constexpr int kHashBits = 64;

// Slots are tagged pointers: the low bits say what they point to (allocations are 16-aligned).
constexpr std::uintptr_t kTagMask = 3;
constexpr std::uintptr_t kNodeTag = 0;
constexpr std::uintptr_t kLeafTag = 1;
constexpr std::uintptr_t kCollisionTag = 2;

constexpr std::uint8_t kNegative = 1;

struct Leaf {
  std::int64_t cell_id;
  std::int64_t inserted_ms;
  std::uint32_t ttl_ms;      // 0: static
  std::uint32_t refresh_ms;  // 0: never needs refreshing
  std::uint32_t gen;         // the batch that made it
  std::uint16_t key_size;
  std::uint8_t type;
  std::uint8_t flags;
  const char* key() const noexcept { return reinterpret_cast<const char*>(this + 1); }
  char* key() noexcept { return reinterpret_cast<char*>(this + 1); }
  std::string_view key_view() const noexcept { return {key(), key_size}; }
  bool is_static() const noexcept { return ttl_ms == 0; }
  std::int64_t expires_ms() const noexcept { return inserted_ms + ttl_ms; }
};
static_assert(sizeof(Leaf) == 32);

// An inner node (bitmap of present children) or, past the last hash bit, a collision list
// (count of leaves with the same 64-bit hash).
struct Node {
  std::uint32_t bitmap_or_count;
  std::uint32_t gen;
  std::uintptr_t* child() noexcept { return reinterpret_cast<std::uintptr_t*>(this + 1); }
  const std::uintptr_t* child() const noexcept {
    return reinterpret_cast<const std::uintptr_t*>(this + 1);
  }
};
static_assert(sizeof(Node) == 8);

// Population count without a libgcc call: the library targets baseline x86-64, which has no
// POPCNT instruction, and std::popcount would call __popcountdi2 on every trie level.
constexpr int PopCount(std::uint32_t x) noexcept {
  x = x - ((x >> 1) & 0x55555555u);
  x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
  x = (x + (x >> 4)) & 0x0F0F0F0Fu;
  return static_cast<int>((x * 0x01010101u) >> 24);
}
static_assert(PopCount(0) == 0 && PopCount(0xFFFFFFFFu) == 32 && PopCount(0x80000001u) == 2);

std::uintptr_t Tag(const void* p, std::uintptr_t tag) noexcept {
  return reinterpret_cast<std::uintptr_t>(p) | tag;
}
std::uintptr_t TagOf(std::uintptr_t s) noexcept { return s & kTagMask; }
Leaf* AsLeaf(std::uintptr_t s) noexcept { return reinterpret_cast<Leaf*>(s & ~kTagMask); }
Node* AsNode(std::uintptr_t s) noexcept { return reinterpret_cast<Node*>(s & ~kTagMask); }

int Count(std::uintptr_t s) noexcept {
  const Node* n = AsNode(s);
  return TagOf(s) == kCollisionTag ? static_cast<int>(n->bitmap_or_count)
                                   : PopCount(n->bitmap_or_count);
}

std::uint64_t LeafHash(const Leaf* l) noexcept { return HashKey(l->type, l->key_view()); }

bool SameKey(const Leaf* l, std::uint8_t type, std::string_view key) noexcept {
  return l->type == type && l->key_view() == key;
}

std::int64_t CoarseNowMs() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

std::size_t Footprint(const void* p) noexcept {
  // What the allocator really spends: the usable size plus its chunk header.
  return malloc_usable_size(const_cast<void*>(p)) + sizeof(std::size_t);
}

}  // namespace

struct Snapshot {
  std::uint64_t version = 0;
  std::uintptr_t root = 0;
  std::shared_ptr<const Topology> topology;
  std::size_t entries = 0, cached = 0, negative = 0, bytes = 0;
};

struct RouteTable::State {
  TableOptions options;
  std::atomic<Snapshot*> current{nullptr};
  // A TSan synchronization address for grace periods.
  char rcu_sync = 0;

  std::mutex writer;
  // Writer-only state, guarded by `writer`.
  std::uint32_t gen = 0;
  std::vector<void*> retired;
  std::size_t retired_bytes = 0;
  std::vector<Snapshot*> retired_snapshots;
  std::uint64_t evictions = 0;
  std::uint64_t deferred_reclaims = 0;
  std::uint64_t rng = 0x9e3779b97f4a7c15ULL;

  // The snapshot being built by the current batch.
  Snapshot next;

  std::int64_t Now() const noexcept { return options.now_ms ? options.now_ms() : CoarseNowMs(); }

  // --- allocation ---------------------------------------------------------------------------
  Leaf* NewLeaf(std::uint8_t type, std::string_view key) {
    auto* l = static_cast<Leaf*>(std::malloc(sizeof(Leaf) + key.size()));
    if (l == nullptr) throw std::bad_alloc();
    std::memset(l, 0, sizeof(Leaf));
    if (!key.empty()) std::memcpy(l->key(), key.data(), key.size());
    l->key_size = static_cast<std::uint16_t>(key.size());
    l->type = type;
    l->gen = gen;
    next.bytes += Footprint(l);
    return l;
  }
  Node* NewNode(int children) {
    auto* n = static_cast<Node*>(
        std::malloc(sizeof(Node) + sizeof(std::uintptr_t) * static_cast<std::size_t>(children)));
    if (n == nullptr) throw std::bad_alloc();
    n->bitmap_or_count = 0;
    n->gen = gen;
    next.bytes += Footprint(n);
    return n;
  }
  // Drops something the new version no longer uses: freed now if this batch made it (no
  // reader has seen it), else freed after a grace period.
  void Dispose(void* p, std::uint32_t made_in) {
    std::size_t size = Footprint(p);
    next.bytes -= size;
    if (made_in == gen) {
      std::free(p);
    } else {
      retired.push_back(p);
      retired_bytes += size;
    }
  }
  bool OverReclaimBudget() const noexcept {
    return retired_bytes >= options.reclaim_bytes ||
           (options.reclaim_batch != 0 && retired.size() >= options.reclaim_batch);
  }
  void DisposeSlot(std::uintptr_t s) {
    if (TagOf(s) == kLeafTag) {
      Dispose(AsLeaf(s), AsLeaf(s)->gen);
    } else {
      Dispose(AsNode(s), AsNode(s)->gen);
    }
  }
  // A node this batch may change in place: itself if the batch made it, else a copy.
  Node* Writable(std::uintptr_t s) {
    Node* n = AsNode(s);
    if (n->gen == gen) return n;
    int count = Count(s);
    Node* m = NewNode(count);
    m->bitmap_or_count = n->bitmap_or_count;
    std::memcpy(m->child(), n->child(), sizeof(std::uintptr_t) * static_cast<std::size_t>(count));
    Dispose(n, n->gen);
    return m;
  }

  void CountLeaf(const Leaf* l, int sign) {
    auto add = [sign](std::size_t& v) { v = sign > 0 ? v + 1 : v - 1; };
    add(next.entries);
    if (!l->is_static()) add(next.cached);
    if (l->flags & kNegative) add(next.negative);
  }

  // --- trie operations ----------------------------------------------------------------------
  // Two slots whose hashes agree below `shift`, joined under new nodes.
  std::uintptr_t Join(std::uintptr_t a, std::uint64_t ha, std::uintptr_t b, std::uint64_t hb,
                      int shift) {
    if (shift >= kHashBits) {
      Node* c = NewNode(2);
      c->bitmap_or_count = 2;
      c->child()[0] = a;
      c->child()[1] = b;
      return Tag(c, kCollisionTag);
    }
    std::uint64_t ia = (ha >> shift) & kIndexMask, ib = (hb >> shift) & kIndexMask;
    if (ia == ib) {
      Node* n = NewNode(1);
      n->bitmap_or_count = 1u << ia;
      n->child()[0] = Join(a, ha, b, hb, shift + kBits);
      return Tag(n, kNodeTag);
    }
    Node* n = NewNode(2);
    n->bitmap_or_count = (1u << ia) | (1u << ib);
    n->child()[ia < ib ? 0 : 1] = a;
    n->child()[ia < ib ? 1 : 0] = b;
    return Tag(n, kNodeTag);
  }

  std::uintptr_t Insert(std::uintptr_t s, Leaf* leaf, std::uint64_t h, int shift) {
    if (s == 0) {
      CountLeaf(leaf, +1);
      return Tag(leaf, kLeafTag);
    }
    if (TagOf(s) == kLeafTag) {
      Leaf* old = AsLeaf(s);
      if (SameKey(old, leaf->type, leaf->key_view())) {
        CountLeaf(old, -1);
        CountLeaf(leaf, +1);
        Dispose(old, old->gen);
        return Tag(leaf, kLeafTag);
      }
      CountLeaf(leaf, +1);
      return Join(s, LeafHash(old), Tag(leaf, kLeafTag), h, shift);
    }
    if (TagOf(s) == kCollisionTag) {
      Node* c = AsNode(s);
      int count = Count(s);
      if (LeafHash(AsLeaf(c->child()[0])) != h) {
        CountLeaf(leaf, +1);
        return Join(s, LeafHash(AsLeaf(c->child()[0])), Tag(leaf, kLeafTag), h, shift);
      }
      for (int i = 0; i < count; ++i) {
        Leaf* old = AsLeaf(c->child()[i]);
        if (SameKey(old, leaf->type, leaf->key_view())) {
          Node* w = Writable(s);
          w->child()[i] = Tag(leaf, kLeafTag);
          CountLeaf(old, -1);
          CountLeaf(leaf, +1);
          Dispose(old, old->gen);
          return Tag(w, kCollisionTag);
        }
      }
      Node* m = NewNode(count + 1);
      m->bitmap_or_count = static_cast<std::uint32_t>(count + 1);
      std::memcpy(m->child(), c->child(), sizeof(std::uintptr_t) * static_cast<std::size_t>(count));
      m->child()[count] = Tag(leaf, kLeafTag);
      Dispose(c, c->gen);
      CountLeaf(leaf, +1);
      return Tag(m, kCollisionTag);
    }
    Node* n = AsNode(s);
    std::uint32_t bit = 1u << ((h >> shift) & kIndexMask);
    int pos = PopCount(n->bitmap_or_count & (bit - 1));
    if (n->bitmap_or_count & bit) {
      std::uintptr_t child = n->child()[pos];
      std::uintptr_t updated = Insert(child, leaf, h, shift + kBits);
      Node* w = Writable(s);
      w->child()[pos] = updated;
      return Tag(w, kNodeTag);
    }
    int count = Count(s);
    Node* m = NewNode(count + 1);
    m->bitmap_or_count = n->bitmap_or_count | bit;
    std::memcpy(m->child(), n->child(), sizeof(std::uintptr_t) * static_cast<std::size_t>(pos));
    m->child()[pos] = Tag(leaf, kLeafTag);
    std::memcpy(m->child() + pos + 1, n->child() + pos,
                sizeof(std::uintptr_t) * static_cast<std::size_t>(count - pos));
    Dispose(n, n->gen);
    CountLeaf(leaf, +1);
    return Tag(m, kNodeTag);
  }

  // Removes children[pos] from a node or collision list; collapses a node left with one leaf.
  std::uintptr_t RemoveChild(std::uintptr_t s, int pos, std::uint32_t bit) {
    Node* n = AsNode(s);
    int count = Count(s);
    if (count == 1) {
      Dispose(n, n->gen);
      return 0;
    }
    if (count == 2) {
      std::uintptr_t other = n->child()[1 - pos];
      if (TagOf(other) != kNodeTag) {  // a leaf or collision list moves up a level
        Dispose(n, n->gen);
        return other;
      }
    }
    Node* m = NewNode(count - 1);
    m->bitmap_or_count = TagOf(s) == kCollisionTag ? static_cast<std::uint32_t>(count - 1)
                                                   : (n->bitmap_or_count & ~bit);
    std::memcpy(m->child(), n->child(), sizeof(std::uintptr_t) * static_cast<std::size_t>(pos));
    std::memcpy(m->child() + pos, n->child() + pos + 1,
                sizeof(std::uintptr_t) * static_cast<std::size_t>(count - pos - 1));
    Dispose(n, n->gen);
    return Tag(m, TagOf(s));
  }

  // Replaces children[pos] with `updated` (0 removes it).
  std::uintptr_t ReplaceChild(std::uintptr_t s, int pos, std::uint32_t bit,
                              std::uintptr_t updated) {
    if (updated == 0) return RemoveChild(s, pos, bit);
    if (Count(s) == 1 && TagOf(updated) != kNodeTag) {
      Node* n = AsNode(s);
      Dispose(n, n->gen);
      return updated;
    }
    Node* w = Writable(s);
    w->child()[pos] = updated;
    return Tag(w, TagOf(s));
  }

  // Removes leaves for which drop(leaf) is true. Unchanged subtrees are shared as they are.
  template <typename Drop>
  std::uintptr_t Filter(std::uintptr_t s, Drop& drop) {
    if (s == 0) return 0;
    if (TagOf(s) == kLeafTag) {
      Leaf* l = AsLeaf(s);
      if (!drop(l)) return s;
      CountLeaf(l, -1);
      Dispose(l, l->gen);
      return 0;
    }
    const std::uintptr_t tag = TagOf(s);
    for (int i = Count(s) - 1; i >= 0; --i) {
      std::uintptr_t child = AsNode(s)->child()[i];
      std::uintptr_t updated = Filter(child, drop);
      if (updated == child) continue;
      std::uint32_t bit = 0;
      if (TagOf(s) == kNodeTag) {
        // The bit of the i-th present child.
        std::uint32_t bm = AsNode(s)->bitmap_or_count;
        for (int k = 0; k < i; ++k) bm &= bm - 1;
        bit = bm & (~bm + 1);
      }
      s = ReplaceChild(s, i, bit, updated);
      if (s == 0) return 0;
      if (TagOf(s) != tag) {
        // The node collapsed into its one remaining leaf or collision list, which may sit at an
        // index not visited yet: filter it too (it is small; filtering twice is harmless).
        return Filter(s, drop);
      }
    }
    return s;
  }

  std::uintptr_t Erase(std::uintptr_t s, std::uint8_t type, std::string_view key, std::uint64_t h,
                       int shift) {
    if (s == 0) return 0;
    if (TagOf(s) == kLeafTag) {
      Leaf* l = AsLeaf(s);
      if (!SameKey(l, type, key)) return s;
      CountLeaf(l, -1);
      Dispose(l, l->gen);
      return 0;
    }
    if (TagOf(s) == kCollisionTag) {
      Node* c = AsNode(s);
      for (int i = 0; i < Count(s); ++i) {
        Leaf* l = AsLeaf(c->child()[i]);
        if (SameKey(l, type, key)) {
          CountLeaf(l, -1);
          Dispose(l, l->gen);
          return RemoveChild(s, i, 0);
        }
      }
      return s;
    }
    Node* n = AsNode(s);
    std::uint32_t bit = 1u << ((h >> shift) & kIndexMask);
    if (!(n->bitmap_or_count & bit)) return s;
    int pos = PopCount(n->bitmap_or_count & (bit - 1));
    std::uintptr_t child = n->child()[pos];
    std::uintptr_t updated = Erase(child, type, key, h, shift + kBits);
    if (updated == child) return s;
    return ReplaceChild(s, pos, bit, updated);
  }

  // A cached leaf picked by walking random branches; nullptr if the walk met a static one.
  const Leaf* SampleCached() {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    std::uint64_t r = rng;
    std::uintptr_t s = next.root;
    while (s != 0 && TagOf(s) != kLeafTag) {
      int count = Count(s);
      s = AsNode(s)->child()[r % static_cast<std::uint64_t>(count)];
      r /= static_cast<std::uint64_t>(count);
      r ^= rng >> 32;
    }
    const Leaf* l = s ? AsLeaf(s) : nullptr;
    return l && !l->is_static() ? l : nullptr;
  }

  // Evicts the soonest-expiring of a few sampled cached entries until within the bound.
  void Evict() {
    while (next.cached > options.max_cached_entries) {
      const Leaf* victim = nullptr;
      for (int tries = 0, found = 0; tries < 64 && found < 5; ++tries) {
        const Leaf* l = SampleCached();
        if (l == nullptr) continue;
        ++found;
        if (victim == nullptr || l->expires_ms() < victim->expires_ms()) victim = l;
      }
      if (victim == nullptr) {
        // Mostly static entries: take any cached one.
        auto first_cached = [&](const Leaf* l) { return !l->is_static(); };
        victim = FindLeaf(next.root, first_cached);
        if (victim == nullptr) return;
      }
      std::string key(victim->key_view());
      std::uint8_t type = victim->type;
      next.root = Erase(next.root, type, key, HashKey(type, key), 0);
      ++evictions;
    }
  }

  template <typename Pred>
  const Leaf* FindLeaf(std::uintptr_t s, Pred& pred) {
    if (s == 0) return nullptr;
    if (TagOf(s) == kLeafTag) return pred(AsLeaf(s)) ? AsLeaf(s) : nullptr;
    for (int i = 0; i < Count(s); ++i) {
      if (const Leaf* l = FindLeaf(AsNode(s)->child()[i], pred)) return l;
    }
    return nullptr;
  }

  void FreeTree(std::uintptr_t s) {
    if (s == 0) return;
    if (TagOf(s) != kLeafTag) {
      for (int i = 0; i < Count(s); ++i) FreeTree(AsNode(s)->child()[i]);
    }
    std::free(reinterpret_cast<void*>(s & ~kTagMask));
  }

  // Frees what was retired, after a grace period. A writer inside a read-side section (a
  // Reader still alive on its own stack) cannot wait for one: the memory then waits for the
  // next write made outside any Reader. So a writer never deadlocks on itself.
  void ReclaimLocked() {
    if (retired.empty() && retired_snapshots.empty()) return;
    if (!internal::RcuSynchronize(&rcu_sync)) {
      ++deferred_reclaims;
      return;
    }
    FreeRetired();
  }
  void FreeRetired() {
    for (void* p : retired) std::free(p);
    for (Snapshot* s : retired_snapshots) delete s;
    retired.clear();
    retired_bytes = 0;
    retired_snapshots.clear();
  }
};

namespace {
std::uint32_t ClampMs(RouteTable::Duration d) {
  auto ms = d.count();
  if (ms <= 0) return 0;
  return ms > UINT32_MAX ? UINT32_MAX : static_cast<std::uint32_t>(ms);
}
}  // namespace

RouteTable::RouteTable(TableOptions options) : state_(std::make_unique<State>()) {
  internal::RcuInstallForkHandlers();
  state_->options = options;
  state_->current.store(new Snapshot(), std::memory_order_release);
}

RouteTable::~RouteTable() {
  std::lock_guard<std::mutex> lock(state_->writer);
  // No Reader of this table outlives it, so what is left is freed even when this thread is in
  // a read-side section of another table (where a grace period cannot be waited for).
  (void)internal::RcuSynchronize(&state_->rcu_sync);
  state_->FreeRetired();
  Snapshot* s = state_->current.load(std::memory_order_acquire);
  state_->FreeTree(s->root);
  delete s;
}

std::int64_t RouteTable::NowMs() const noexcept { return state_->Now(); }

// --- readers ----------------------------------------------------------------------------------

RouteTable::Reader::Reader(const RouteTable& table) noexcept : table_(table) {
  internal::RcuReadLock();
  snapshot_ = table.state_->current.load(std::memory_order_acquire);
}

RouteTable::Reader::~Reader() { internal::RcuReadUnlock(&table_.state_->rcu_sync); }

std::uint64_t RouteTable::Reader::version() const noexcept {
  return static_cast<const Snapshot*>(snapshot_)->version;
}

const Topology* RouteTable::Reader::topology() const noexcept {
  return static_cast<const Snapshot*>(snapshot_)->topology.get();
}

// Built twice, and picked once at load by the CPU: with the POPCNT instruction where the CPU has
// it (the PopCount above compiles to it there), and for baseline x86-64.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("popcnt", "default")))
#endif
TableHit RouteTable::Reader::Lookup(ClassifyType type, std::string_view value) const noexcept {
  TableHit hit;
  auto t = static_cast<std::uint8_t>(type);
  std::uint64_t h = HashKey(t, value);
  std::uintptr_t s = static_cast<const Snapshot*>(snapshot_)->root;
  const Leaf* found = nullptr;
  for (int shift = 0; s != 0;) {
    if (TagOf(s) == kLeafTag) {
      if (SameKey(AsLeaf(s), t, value)) found = AsLeaf(s);
      break;
    }
    const Node* n = AsNode(s);
    if (TagOf(s) == kCollisionTag) {
      for (std::uint32_t i = 0; i < n->bitmap_or_count; ++i) {
        if (SameKey(AsLeaf(n->child()[i]), t, value)) found = AsLeaf(n->child()[i]);
      }
      break;
    }
    std::uint32_t bit = 1u << ((h >> shift) & kIndexMask);
    if (!(n->bitmap_or_count & bit)) break;
    s = n->child()[PopCount(n->bitmap_or_count & (bit - 1))];
    shift += kBits;
  }
  if (found == nullptr) return hit;
  std::int64_t now = table_.state_->Now();
  if (!found->is_static() && now >= found->expires_ms()) return hit;  // expired: a miss
  hit.kind = (found->flags & kNegative) ? TableHit::Kind::kNegative : TableHit::Kind::kPositive;
  hit.cell_id = found->cell_id;
  hit.age_ms = now - found->inserted_ms;
  hit.is_static = found->is_static();
  hit.needs_refresh = found->refresh_ms != 0 && now >= found->inserted_ms + found->refresh_ms;
  return hit;
}

// --- writers ----------------------------------------------------------------------------------

void RouteTable::Batch::SetTopology(Topology topology) {
  topology_ = std::make_shared<const Topology>(std::move(topology));
}

void RouteTable::Batch::Put(ClassifyType type, std::string_view value, std::int64_t cell_id,
                            Duration ttl, Duration refresh_after) {
  ops_.push_back({Op::Kind::kPut, type, std::string(value), cell_id, ttl, refresh_after});
}

void RouteTable::Batch::PutNegative(ClassifyType type, std::string_view value, Duration ttl,
                                    Duration refresh_after) {
  ops_.push_back({Op::Kind::kPutNegative, type, std::string(value), 0, ttl, refresh_after});
}

void RouteTable::Batch::Erase(ClassifyType type, std::string_view value) {
  ops_.push_back({Op::Kind::kErase, type, std::string(value), 0, {}, {}});
}

void RouteTable::Batch::PurgeCell(std::int64_t cell_id) {
  ops_.push_back({Op::Kind::kPurgeCell, ClassifyType::kNone, {}, cell_id, {}, {}});
}

std::uint64_t RouteTable::Apply(Batch batch) {
  State& st = *state_;
  std::lock_guard<std::mutex> lock(st.writer);
  Snapshot* current = st.current.load(std::memory_order_relaxed);
  ++st.gen;
  st.next = *current;
  st.next.version = current->version + 1;
  if (batch.topology_) st.next.topology = batch.topology_;
  std::int64_t now = st.Now();
  for (auto& op : batch.ops_) {
    auto type = static_cast<std::uint8_t>(op.type);
    std::uint64_t h = HashKey(type, op.value);
    switch (op.kind) {
      case Batch::Op::Kind::kPut:
      case Batch::Op::Kind::kPutNegative: {
        if (op.value.size() > UINT16_MAX) break;  // not a claim anyone can make
        Leaf* leaf = st.NewLeaf(type, op.value);
        leaf->cell_id = op.cell_id;
        leaf->inserted_ms = now;
        leaf->ttl_ms = ClampMs(op.ttl);
        leaf->refresh_ms = ClampMs(op.refresh_after);
        if (op.kind == Batch::Op::Kind::kPutNegative) {
          leaf->flags = kNegative;
          if (leaf->ttl_ms == 0) leaf->ttl_ms = 1;  // a negative answer always expires
        }
        st.next.root = st.Insert(st.next.root, leaf, h, 0);
        break;
      }
      case Batch::Op::Kind::kErase:
        st.next.root = st.Erase(st.next.root, type, op.value, h, 0);
        break;
      case Batch::Op::Kind::kPurgeCell: {
        std::int64_t cell = op.cell_id;
        auto drop = [cell](const Leaf* l) { return !(l->flags & kNegative) && l->cell_id == cell; };
        st.next.root = st.Filter(st.next.root, drop);
        break;
      }
    }
  }
  st.Evict();
  auto* published = new Snapshot(std::move(st.next));
  st.next = Snapshot();
  st.current.store(published, std::memory_order_release);
  st.retired_snapshots.push_back(current);
  if (st.OverReclaimBudget()) st.ReclaimLocked();
  return published->version;
}

std::uint64_t RouteTable::SetTopology(Topology topology) {
  Batch b;
  b.SetTopology(std::move(topology));
  return Apply(std::move(b));
}

std::uint64_t RouteTable::Put(ClassifyType type, std::string_view value, std::int64_t cell_id,
                              Duration ttl, Duration refresh_after) {
  Batch b;
  b.Put(type, value, cell_id, ttl, refresh_after);
  return Apply(std::move(b));
}

std::uint64_t RouteTable::PutNegative(ClassifyType type, std::string_view value, Duration ttl,
                                      Duration refresh_after) {
  Batch b;
  b.PutNegative(type, value, ttl, refresh_after);
  return Apply(std::move(b));
}

std::uint64_t RouteTable::Erase(ClassifyType type, std::string_view value) {
  Batch b;
  b.Erase(type, value);
  return Apply(std::move(b));
}

std::uint64_t RouteTable::PurgeCell(std::int64_t cell_id) {
  Batch b;
  b.PurgeCell(cell_id);
  return Apply(std::move(b));
}

std::uint64_t RouteTable::LoadClaims(const Claims& claims) {
  Batch b;
  for (const ClaimEntry& e : claims.Entries()) b.Put(e.type, e.value, e.cell_id);
  return Apply(std::move(b));
}

void RouteTable::Reclaim() {
  std::lock_guard<std::mutex> lock(state_->writer);
  state_->ReclaimLocked();
}

RouteTable::Stats RouteTable::stats() const {
  std::lock_guard<std::mutex> lock(state_->writer);
  const Snapshot* s = state_->current.load(std::memory_order_acquire);
  Stats out;
  out.version = s->version;
  out.entries = s->entries;
  out.cached_entries = s->cached;
  out.negative_entries = s->negative;
  out.evictions = state_->evictions;
  out.bytes = s->bytes;
  out.pending_reclaim = state_->retired.size();
  out.pending_reclaim_bytes = state_->retired_bytes;
  out.deferred_reclaims = state_->deferred_reclaims;
  return out;
}

}  // namespace cellroute
