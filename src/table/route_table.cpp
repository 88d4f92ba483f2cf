// The route table: an immutable hash trie of wide nodes and bucket leaves per version,
// path-copied by one writer at a time, read under RCU. See include/cellroute/table.h and docs/adr/0005-route-table.md.
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <utility>

#include "cellroute/table.h"
#include "common/hash.h"
#include "table/rcu.h"
#include "table/slab.h"

namespace cellroute {

namespace {

using internal::HashKey;

// A trie over the key's 64-bit hash whose inner nodes are dense arrays of 2^bits slots (bits
// grows from 1 as the node fills: to 12 at the root, 8 below) and whose leaves are buckets of
// up to kBucketEntries entries, stored inline after a fingerprint byte each. A lookup is one
// slot load per level and then one bucket: up to about a million entries the root and a bucket,
// at 10 M the root, one level of 2 KiB nodes and a bucket.
constexpr int kHashBits = 64;
constexpr int kMaxRootBits = 12;  // 4,096 slots, 32 KiB: copied once per published version
constexpr int kMaxNodeBits = 8;   // 256 slots, 2 KiB: the most a writer copies per lower level
constexpr int MaxBits(int shift) noexcept {
  return shift == 0 ? kMaxRootBits : std::min(kMaxNodeBits, kHashBits - shift);
}
constexpr std::size_t kBucketEntries = 16;
// Past the last hash bit a bucket cannot split: it takes keys whose whole hashes agree, up to
// this many (a count the 64-bit hash makes unreachable without a deliberate collision).
constexpr std::size_t kMaxBucketEntries = 64;

// Slots are tagged pointers (blocks are 64-aligned). 0 is an empty slot, a pointer with low
// bits 0 a bucket, and a node carries its width (1 to 12 bits) in the low four bits, so that a
// lookup reads each node's slot without first reading its header.
constexpr std::uintptr_t kTagMask = 15;
// Lines of a bucket a lookup fetches together with its first: the entry its fingerprint
// points to would otherwise be a second miss after the first.
constexpr std::size_t kPrefetchLines = 8;
static_assert(kMaxRootBits <= static_cast<int>(kTagMask) && kMaxNodeBits <= kMaxRootBits);

constexpr std::uint8_t kNegative = 1;

// One entry, inside its bucket: a 28-byte header, then the key's bytes, padded to 8.
struct Entry {
  std::int64_t cell_id;
  std::int64_t inserted_ms;
  std::uint32_t ttl_ms;      // 0: static
  std::uint32_t refresh_ms;  // 0: never needs refreshing
  std::uint16_t key_size;
  std::uint8_t type;
  std::uint8_t flags;
};
constexpr std::size_t kEntryHeader = 28;
constexpr std::size_t kMaxKeyBytes = RouteTable::kMaxKeyBytes;
static_assert(offsetof(Entry, flags) + 1 == kEntryHeader);

const char* KeyOf(const Entry* e) noexcept { return reinterpret_cast<const char*>(e) + kEntryHeader; }
std::string_view KeyView(const Entry* e) noexcept { return {KeyOf(e), e->key_size}; }
bool IsStatic(const Entry* e) noexcept { return e->ttl_ms == 0; }
std::int64_t ExpiresMs(const Entry* e) noexcept { return e->inserted_ms + e->ttl_ms; }
constexpr std::size_t RoundUp(std::size_t n, std::size_t to) noexcept {
  return (n + to - 1) & ~(to - 1);
}
std::size_t EntryBytes(const Entry* e) noexcept { return RoundUp(kEntryHeader + e->key_size, 8); }
[[gnu::always_inline]] inline bool SameKey(const Entry* e, std::uint8_t type,
                                           std::string_view key) noexcept {
  return e->key_size == key.size() && e->type == type &&
         internal::SameBytes(KeyOf(e), key.data(), key.size());
}
std::uint64_t EntryHash(const Entry* e) noexcept { return HashKey(e->type, KeyView(e)); }
// The hash's top byte: the trie indexes from the low bits, so at any realistic depth the two
// are independent.
std::uint8_t Fingerprint(std::uint64_t h) noexcept { return static_cast<std::uint8_t>(h >> 56); }

// A bucket: this header, `count` fingerprints (padded to 16 so that they are compared 16 at a
// time), `count` offsets of the entries from the bucket's start in units of 8 bytes, then the
// entries. Up to 16 entries, everything but the entries fits in 56 bytes: the bucket's first
// cache line finds the entry. Immutable once published; a change builds a new one.
struct Bucket {
  std::uint32_t gen;  // the batch that made it
  std::uint16_t count;
  std::uint16_t lines;  // its size, in 64-byte lines
  static std::size_t FingerprintBytes(std::size_t count) noexcept {
    return RoundUp(count == 0 ? 1 : count, 16);
  }
  const std::uint8_t* fingerprints() const noexcept {
    return reinterpret_cast<const std::uint8_t*>(this + 1);
  }
  std::uint8_t* fingerprints() noexcept { return reinterpret_cast<std::uint8_t*>(this + 1); }
  const std::uint16_t* offsets() const noexcept {
    return reinterpret_cast<const std::uint16_t*>(fingerprints() + FingerprintBytes(count));
  }
  std::uint16_t* offsets() noexcept {
    return reinterpret_cast<std::uint16_t*>(fingerprints() + FingerprintBytes(count));
  }
  const Entry* entry(std::size_t i) const noexcept {
    return reinterpret_cast<const Entry*>(reinterpret_cast<const char*>(this) +
                                          std::size_t{offsets()[i]} * 8);
  }
};
static_assert(sizeof(Bucket) == 8);
// The largest bucket, reached only past the last hash bit, must stay addressable by 16-bit
// offsets in units of 8 bytes.
static_assert((kMaxBucketEntries + 1) * (kEntryHeader + kMaxKeyBytes + 8) < (std::size_t{8} << 16));

// An inner node: 2^bits slots, each empty (0), a node or a bucket.
struct Node {
  std::uint32_t gen;
  std::uint32_t bits;
  std::uintptr_t* child() noexcept { return reinterpret_cast<std::uintptr_t*>(this + 1); }
  const std::uintptr_t* child() const noexcept {
    return reinterpret_cast<const std::uintptr_t*>(this + 1);
  }
  std::size_t slots() const noexcept { return std::size_t{1} << bits; }
  std::size_t Index(std::uint64_t h, int shift) const noexcept {
    return static_cast<std::size_t>(h >> shift) & (slots() - 1);
  }
};
static_assert(sizeof(Node) == 8);

std::uintptr_t NodeSlot(const Node* n) noexcept { return reinterpret_cast<std::uintptr_t>(n) | n->bits; }
std::uintptr_t BucketSlot(const Bucket* b) noexcept { return reinterpret_cast<std::uintptr_t>(b); }
bool IsNode(std::uintptr_t s) noexcept { return (s & kTagMask) != 0; }
bool IsBucket(std::uintptr_t s) noexcept { return s != 0 && (s & kTagMask) == 0; }
void* Untag(std::uintptr_t s) noexcept { return reinterpret_cast<void*>(s & ~kTagMask); }
Node* AsNode(std::uintptr_t s) noexcept { return static_cast<Node*>(Untag(s)); }
const Bucket* AsBucket(std::uintptr_t s) noexcept { return static_cast<const Bucket*>(Untag(s)); }
// Both kinds begin with the batch that made them.
std::uint32_t GenOf(std::uintptr_t s) noexcept { return *static_cast<std::uint32_t*>(Untag(s)); }
// The size either was allocated with.
std::size_t NodeBytes(int bits) noexcept { return sizeof(Node) + (sizeof(std::uintptr_t) << bits); }
std::size_t SizeOf(std::uintptr_t s) noexcept {
  return IsNode(s) ? NodeBytes(static_cast<int>(AsNode(s)->bits))
                   : std::size_t{AsBucket(s)->lines} * internal::Slab::kLine;
}

// The entry of a bucket that holds the key, or nullptr: fingerprints first, 16 at a time.
const Entry* FindInBucket(const Bucket* b, std::uint8_t type, std::string_view key,
                          std::uint8_t fp) noexcept {
  const std::uint8_t* fps = b->fingerprints();
  const std::size_t count = b->count;
  for (std::size_t base = 0; base < count; base += 16) {
#if defined(__SSE2__)
    __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(fps + base));
    auto match = static_cast<std::uint32_t>(
        _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(static_cast<char>(fp)))));
#else
    std::uint32_t match = 0;
    for (std::size_t i = 0; i < 16; ++i) match |= std::uint32_t{fps[base + i] == fp} << i;
#endif
    if (count - base < 16) match &= (1u << (count - base)) - 1;
    for (; match != 0; match &= match - 1) {
      const Entry* e = b->entry(base + static_cast<std::size_t>(__builtin_ctz(match)));
      if (SameKey(e, type, key)) return e;
    }
  }
  return nullptr;
}

std::int64_t CoarseNowMs() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}


// An entry on its way into a bucket, with its fingerprint.
struct Item {
  const Entry* entry;
  std::uint8_t fp;
};

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
  internal::Slab slab;  // nodes and buckets
  std::vector<std::pair<void*, std::size_t>> retired;  // and their sizes
  std::size_t retired_bytes = 0;
  std::vector<Snapshot*> retired_snapshots;
  std::uint64_t evictions = 0;
  std::uint64_t deferred_reclaims = 0;
  std::uint64_t rng = 0x9e3779b97f4a7c15ULL;

  // The snapshot being built by the current batch.
  Snapshot next;

  std::int64_t Now() const noexcept { return options.now_ms ? options.now_ms() : CoarseNowMs(); }

  // --- allocation ---------------------------------------------------------------------------
  void* Allocate(std::size_t size) {
    void* p = slab.Allocate(size);
    next.bytes += internal::Slab::Footprint(p, size);
    return p;
  }
  std::uintptr_t NewBucket(const Item* items, std::size_t n) {
    const std::size_t fp_bytes = Bucket::FingerprintBytes(n);
    const std::size_t first = RoundUp(sizeof(Bucket) + fp_bytes + 2 * n, 8);
    std::size_t size = first;
    for (std::size_t i = 0; i < n; ++i) size += EntryBytes(items[i].entry);
    auto* b = static_cast<Bucket*>(Allocate(size));
    b->gen = gen;
    b->count = static_cast<std::uint16_t>(n);
    b->lines = static_cast<std::uint16_t>((size + internal::Slab::kLine - 1) / internal::Slab::kLine);
    std::memset(b->fingerprints(), 0, fp_bytes);
    std::size_t at = first;
    for (std::size_t i = 0; i < n; ++i) {
      b->fingerprints()[i] = items[i].fp;
      b->offsets()[i] = static_cast<std::uint16_t>(at / 8);
      std::size_t bytes = kEntryHeader + items[i].entry->key_size;
      std::memcpy(reinterpret_cast<char*>(b) + at, items[i].entry, bytes);
      at += RoundUp(bytes, 8);
    }
    return BucketSlot(b);
  }
  Node* NewNode(int bits) {
    auto* n = static_cast<Node*>(Allocate(NodeBytes(bits)));
    n->gen = gen;
    n->bits = static_cast<std::uint32_t>(bits);
    std::memset(n->child(), 0, sizeof(std::uintptr_t) << bits);
    return n;
  }
  // Drops something the new version no longer uses: freed now if this batch made it (no
  // reader has seen it), else freed after a grace period.
  void Dispose(std::uintptr_t s) {
    void* p = Untag(s);
    std::size_t size = SizeOf(s);
    std::size_t footprint = internal::Slab::Footprint(p, size);
    next.bytes -= footprint;
    if (GenOf(s) == gen) {
      slab.Free(p, size);
    } else {
      retired.emplace_back(p, size);
      retired_bytes += footprint;
    }
  }
  bool OverReclaimBudget() const noexcept {
    return retired_bytes >= options.reclaim_bytes ||
           (options.reclaim_batch != 0 && retired.size() >= options.reclaim_batch);
  }
  // A node this batch may change in place: itself if the batch made it, else a copy.
  Node* Writable(std::uintptr_t s) {
    Node* n = AsNode(s);
    if (n->gen == gen) return n;
    Node* m = NewNode(static_cast<int>(n->bits));
    std::memcpy(m->child(), n->child(), sizeof(std::uintptr_t) * n->slots());
    Dispose(s);
    return m;
  }

  void CountEntry(const Entry* e, int sign) {
    auto add = [sign](std::size_t& v) { v = sign > 0 ? v + 1 : v - 1; };
    add(next.entries);
    if (!IsStatic(e)) add(next.cached);
    if (e->flags & kNegative) add(next.negative);
  }

  // --- trie operations ----------------------------------------------------------------------
  // The slot for these entries at `shift`: a bucket while they fit (or no hash bit is left),
  // else a node that splits them by the fewest bits that make every part fit.
  std::uintptr_t Build(const std::vector<Item>& items, int shift) {
    if (items.empty()) return 0;
    if (items.size() <= kBucketEntries || shift >= kHashBits) {
      return NewBucket(items.data(), items.size());
    }
    const int max_bits = MaxBits(shift);
    std::vector<std::uint64_t> hashes;
    hashes.reserve(items.size());
    for (const Item& it : items) hashes.push_back(EntryHash(it.entry));
    int bits = 1;
    for (; bits < max_bits; ++bits) {
      std::vector<std::size_t> sizes(std::size_t{1} << bits);
      std::size_t largest = 0;
      for (std::uint64_t h : hashes) {
        largest = std::max(largest, ++sizes[(h >> shift) & (sizes.size() - 1)]);
      }
      if (largest <= kBucketEntries) break;
    }
    Node* n = NewNode(bits);
    std::vector<std::vector<Item>> parts(n->slots());
    for (std::size_t i = 0; i < items.size(); ++i) parts[n->Index(hashes[i], shift)].push_back(items[i]);
    for (std::size_t i = 0; i < parts.size(); ++i) n->child()[i] = Build(parts[i], shift + bits);
    return NodeSlot(n);
  }

  // Doubles a node whose children are all buckets, splitting each by the next hash bit: a node
  // widens before it deepens, so the levels stay few and the buckets full.
  bool CanWiden(const Node* n, int shift) const noexcept {
    if (static_cast<int>(n->bits) >= MaxBits(shift) ||
        shift + static_cast<int>(n->bits) >= kHashBits) {
      return false;
    }
    for (std::size_t i = 0; i < n->slots(); ++i) {
      if (IsNode(n->child()[i])) return false;
    }
    return true;
  }
  std::uintptr_t Widen(std::uintptr_t s, int shift) {
    const Node* n = AsNode(s);
    const int bits = static_cast<int>(n->bits);
    Node* m = NewNode(bits + 1);
    std::vector<Item> low, high;
    for (std::size_t i = 0; i < n->slots(); ++i) {
      std::uintptr_t c = n->child()[i];
      if (c == 0) continue;
      const Bucket* b = AsBucket(c);
      low.clear();
      high.clear();
      for (std::size_t k = 0; k < b->count; ++k) {
        const Entry* e = b->entry(k);
        Item it{e, b->fingerprints()[k]};
        ((EntryHash(e) >> (shift + bits)) & 1 ? high : low).push_back(it);
      }
      m->child()[i] = Build(low, shift + bits + 1);
      m->child()[i | (std::size_t{1} << bits)] = Build(high, shift + bits + 1);
      Dispose(c);
    }
    Dispose(s);
    return NodeSlot(m);
  }

  // The slot that replaces `s` once `entry` (hash h) is in it, replacing an entry with its key.
  std::uintptr_t Insert(std::uintptr_t s, int shift, std::uint64_t h, const Entry* entry) {
    const Item item{entry, Fingerprint(h)};
    if (s == 0) {
      CountEntry(entry, +1);
      return NewBucket(&item, 1);
    }
    if (IsBucket(s)) {
      const Bucket* b = AsBucket(s);
      std::vector<Item> items;
      items.reserve(b->count + 1);
      bool replaced = false;
      for (std::size_t i = 0; i < b->count; ++i) {
        const Entry* e = b->entry(i);
        if (!replaced && SameKey(e, entry->type, KeyView(entry))) {
          CountEntry(e, -1);
          items.push_back(item);
          replaced = true;
        } else {
          items.push_back({e, b->fingerprints()[i]});
        }
      }
      if (!replaced) {
        if (items.size() >= kMaxBucketEntries) return s;  // see kMaxBucketEntries
        items.push_back(item);
      }
      CountEntry(entry, +1);
      std::uintptr_t out = Build(items, shift);
      Dispose(s);
      return out;
    }
    std::uintptr_t child = AsNode(s)->child()[AsNode(s)->Index(h, shift)];
    while (IsBucket(child) && AsBucket(child)->count >= kBucketEntries &&
           CanWiden(AsNode(s), shift)) {
      s = Widen(s, shift);
      child = AsNode(s)->child()[AsNode(s)->Index(h, shift)];
    }
    const int bits = static_cast<int>(AsNode(s)->bits);
    std::uintptr_t updated = Insert(child, shift + bits, h, entry);
    Node* w = Writable(s);
    w->child()[w->Index(h, shift)] = updated;
    return NodeSlot(w);
  }

  // Replaces slot `index` of a node with `updated` (0 empties it). A node left empty goes; one
  // left with a single bucket becomes that bucket.
  std::uintptr_t ReplaceChild(std::uintptr_t s, std::size_t index, std::uintptr_t updated) {
    const Node* n = AsNode(s);
    std::uintptr_t only = updated;
    std::size_t others = 0;
    for (std::size_t i = 0; i < n->slots() && others < 2; ++i) {
      if (i == index || n->child()[i] == 0) continue;
      only = n->child()[i];
      ++others;
    }
    if (others == 0 && !IsNode(updated)) {
      Dispose(s);
      return updated;
    }
    if (others == 1 && updated == 0 && IsBucket(only)) {
      Dispose(s);
      return only;
    }
    Node* w = Writable(s);
    w->child()[index] = updated;
    return NodeSlot(w);
  }

  // The entries of a bucket for which keep(entry) is true, counting those dropped.
  template <typename Keep>
  std::uintptr_t FilterBucket(std::uintptr_t s, Keep& keep) {
    const Bucket* b = AsBucket(s);
    std::vector<Item> kept;
    kept.reserve(b->count);
    for (std::size_t i = 0; i < b->count; ++i) {
      const Entry* e = b->entry(i);
      if (keep(e)) {
        kept.push_back({e, b->fingerprints()[i]});
      } else {
        CountEntry(e, -1);
      }
    }
    if (kept.size() == b->count) return s;
    std::uintptr_t out = kept.empty() ? 0 : NewBucket(kept.data(), kept.size());
    Dispose(s);
    return out;
  }

  // Removes entries for which drop(entry) is true. Unchanged subtrees are shared as they are.
  template <typename Drop>
  std::uintptr_t Filter(std::uintptr_t s, Drop& drop) {
    if (s == 0) return 0;
    if (IsBucket(s)) {
      auto keep = [&drop](const Entry* e) { return !drop(e); };
      return FilterBucket(s, keep);
    }
    for (std::size_t i = 0; i < AsNode(s)->slots(); ++i) {
      std::uintptr_t child = AsNode(s)->child()[i];
      std::uintptr_t updated = Filter(child, drop);
      if (updated == child) continue;
      s = ReplaceChild(s, i, updated);
      // Collapsed into its last bucket, which may sit at a slot not visited yet: filter it
      // too (filtering twice is harmless).
      if (!IsNode(s)) return Filter(s, drop);
    }
    return s;
  }

  std::uintptr_t Erase(std::uintptr_t s, int shift, std::uint8_t type, std::string_view key,
                       std::uint64_t h) {
    if (s == 0) return 0;
    if (IsBucket(s)) {
      auto keep = [type, key](const Entry* e) { return !SameKey(e, type, key); };
      return FilterBucket(s, keep);
    }
    const Node* n = AsNode(s);
    std::size_t index = n->Index(h, shift);
    std::uintptr_t child = n->child()[index];
    std::uintptr_t updated = Erase(child, shift + static_cast<int>(n->bits), type, key, h);
    return updated == child ? s : ReplaceChild(s, index, updated);
  }

  // A cached entry picked by walking random slots; nullptr if the walk met a static one.
  const Entry* SampleCached() {
    auto random = [this] {
      rng ^= rng << 13;
      rng ^= rng >> 7;
      rng ^= rng << 17;
      return rng;
    };
    std::uintptr_t s = next.root;
    while (IsNode(s)) {
      const Node* n = AsNode(s);
      std::size_t start = random() & (n->slots() - 1), i = start;
      while (n->child()[i] == 0 && (i = (i + 1) & (n->slots() - 1)) != start) {
      }
      s = n->child()[i];
    }
    if (s == 0) return nullptr;
    const Bucket* b = AsBucket(s);
    const Entry* e = b->entry(random() % b->count);
    return IsStatic(e) ? nullptr : e;
  }

  // Evicts the soonest-expiring of a few sampled cached entries until within the bound.
  void Evict() {
    while (next.cached > options.max_cached_entries) {
      const Entry* victim = nullptr;
      for (int tries = 0, found = 0; tries < 64 && found < 5; ++tries) {
        const Entry* e = SampleCached();
        if (e == nullptr) continue;
        ++found;
        if (victim == nullptr || ExpiresMs(e) < ExpiresMs(victim)) victim = e;
      }
      if (victim == nullptr) {
        // Mostly static entries: take any cached one.
        auto first_cached = [&](const Entry* e) { return !IsStatic(e); };
        victim = FindEntry(next.root, first_cached);
        if (victim == nullptr) return;
      }
      std::string key(KeyView(victim));
      std::uint8_t type = victim->type;
      next.root = Erase(next.root, 0, type, key, HashKey(type, key));
      ++evictions;
    }
  }

  template <typename Pred>
  const Entry* FindEntry(std::uintptr_t s, Pred& pred) {
    if (s == 0) return nullptr;
    if (IsBucket(s)) {
      const Bucket* b = AsBucket(s);
      for (std::size_t i = 0; i < b->count; ++i) {
        if (pred(b->entry(i))) return b->entry(i);
      }
      return nullptr;
    }
    for (std::size_t i = 0; i < AsNode(s)->slots(); ++i) {
      if (const Entry* e = FindEntry(AsNode(s)->child()[i], pred)) return e;
    }
    return nullptr;
  }

  void FreeTree(std::uintptr_t s) {
    if (s == 0) return;
    if (IsNode(s)) {
      for (std::size_t i = 0; i < AsNode(s)->slots(); ++i) FreeTree(AsNode(s)->child()[i]);
    }
    slab.Free(Untag(s), SizeOf(s));
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
    for (auto [p, size] : retired) slab.Free(p, size);
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

RouteTable::Reader::Reader(const RouteTable& table) noexcept
    : table_(table), section_(internal::RcuReadLock()) {
  snapshot_ = table.state_->current.load(std::memory_order_acquire);
}

RouteTable::Reader::Reader(const RouteTable& table, InSection) noexcept
    : table_(table), section_(nullptr) {
  assert(internal::RcuReadOngoing());
  snapshot_ = table.state_->current.load(std::memory_order_acquire);
}

RouteTable::Reader::~Reader() {
  if (section_ != nullptr) {
    internal::RcuReadUnlock(static_cast<internal::RcuSection>(section_), &table_.state_->rcu_sync);
  } else {
    internal::RcuBorrowedSectionEnd(&table_.state_->rcu_sync);
  }
}

std::uint64_t RouteTable::Reader::version() const noexcept {
  return static_cast<const Snapshot*>(snapshot_)->version;
}

const Topology* RouteTable::Reader::topology() const noexcept {
  return static_cast<const Snapshot*>(snapshot_)->topology.get();
}

TableHit RouteTable::Reader::Lookup(ClassifyType type, std::string_view value) const noexcept {
  TableHit hit;
  auto t = static_cast<std::uint8_t>(type);
  std::uint64_t h = HashKey(t, value);
  std::uintptr_t s = static_cast<const Snapshot*>(snapshot_)->root;
  int shift = 0;
  while (IsNode(s)) {
    // The width comes from the slot: the node's header is never read.
    const auto bits = static_cast<int>(s & kTagMask);
    s = AsNode(s)->child()[static_cast<std::size_t>(h >> shift) & ((std::size_t{1} << bits) - 1)];
    shift += bits;
  }
  if (s == 0) return hit;
  // Every line of the bucket at once: its fingerprints and the entry they point to would
  // otherwise be two misses, one after the other. Unrolled, seven instructions (GCC 12 drops a
  // prefetch made in a fold expression; tests/table/check_prefetch.sh sees that they are there).
  const auto* bucket = static_cast<const char*>(Untag(s));
  static_assert(kPrefetchLines == 8, "the unroll below is written for 8 lines");
#pragma GCC unroll 8
  for (std::size_t line = 1; line < kPrefetchLines; ++line) __builtin_prefetch(bucket + 64 * line);
  const Entry* found = FindInBucket(AsBucket(s), t, value, Fingerprint(h));
  if (found == nullptr) return hit;
  std::int64_t now = table_.state_->Now();
  if (!IsStatic(found) && now >= ExpiresMs(found)) return hit;  // expired: a miss
  hit.kind = (found->flags & kNegative) ? TableHit::Kind::kNegative : TableHit::Kind::kPositive;
  hit.cell_id = found->cell_id;
  hit.age_ms = now - found->inserted_ms;
  hit.is_static = IsStatic(found);
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
  std::vector<std::uint64_t> scratch;  // the entry being put, before it is copied in
  for (auto& op : batch.ops_) {
    auto type = static_cast<std::uint8_t>(op.type);
    std::uint64_t h = HashKey(type, op.value);
    switch (op.kind) {
      case Batch::Op::Kind::kPut:
      case Batch::Op::Kind::kPutNegative: {
        if (op.value.size() > kMaxKeyBytes) break;  // not a claim anyone can make
        scratch.resize((kEntryHeader + op.value.size() + 7) / 8);
        auto* entry = reinterpret_cast<Entry*>(scratch.data());
        entry->cell_id = op.cell_id;
        entry->inserted_ms = now;
        entry->ttl_ms = ClampMs(op.ttl);
        entry->refresh_ms = ClampMs(op.refresh_after);
        entry->key_size = static_cast<std::uint16_t>(op.value.size());
        entry->type = type;
        entry->flags = 0;
        if (op.kind == Batch::Op::Kind::kPutNegative) {
          entry->flags = kNegative;
          if (entry->ttl_ms == 0) entry->ttl_ms = 1;  // a negative answer always expires
        }
        if (!op.value.empty()) {
          std::memcpy(reinterpret_cast<char*>(entry) + kEntryHeader, op.value.data(), op.value.size());
        }
        st.next.root = st.Insert(st.next.root, 0, h, entry);
        break;
      }
      case Batch::Op::Kind::kErase:
        st.next.root = st.Erase(st.next.root, 0, type, op.value, h);
        break;
      case Batch::Op::Kind::kPurgeCell: {
        std::int64_t cell = op.cell_id;
        auto drop = [cell](const Entry* e) { return !(e->flags & kNegative) && e->cell_id == cell; };
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
  out.reserved_bytes = state_->slab.reserved_bytes();
  out.pending_reclaim = state_->retired.size();
  out.pending_reclaim_bytes = state_->retired_bytes;
  out.deferred_reclaims = state_->deferred_reclaims;
  return out;
}

}  // namespace cellroute
