#include "table/slab.h"

#include <malloc.h>
#include <sys/mman.h>

#include <cstdlib>
#include <new>

namespace cellroute::internal {

namespace {

// Under AddressSanitizer every block comes from malloc, so that a read of a freed node or
// bucket (a reader outliving its grace period) is reported, not served from a free list.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kEveryBlockFromMalloc = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kEveryBlockFromMalloc = true;
#else
constexpr bool kEveryBlockFromMalloc = false;
#endif
#else
constexpr bool kEveryBlockFromMalloc = false;
#endif

std::size_t ClassBytes(std::size_t size) noexcept {
  return (size + Slab::kLine - 1) & ~(Slab::kLine - 1);
}

// A mapping of `bytes` aligned to `bytes` (a power of two), so that a 2 MiB chunk can be one
// huge page.
void* MapAligned(std::size_t bytes) noexcept {
  void* p = mmap(nullptr, bytes * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  auto start = reinterpret_cast<std::uintptr_t>(p);
  auto aligned = (start + bytes - 1) & ~(bytes - 1);
  if (aligned > start) munmap(p, aligned - start);
  std::size_t tail = start + bytes * 2 - (aligned + bytes);
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + bytes), tail);
  return reinterpret_cast<void*>(aligned);
}

}  // namespace

Slab::~Slab() {
  for (auto [p, bytes] : chunks_) munmap(p, bytes);
}

void* Slab::Carve(std::size_t bytes) {
  if (left_ < bytes) {
    // A new chunk, each twice the last up to 2 MiB: a small table maps little. What is left of
    // the old one is given to the free lists rather than lost.
    while (left_ >= kLine) {
      std::size_t piece = left_ >= kMaxClassBytes ? kMaxClassBytes : left_ & ~(kLine - 1);
      Free(next_, piece);
      next_ += piece;
      left_ -= piece;
    }
    std::size_t size = chunks_.empty() ? kFirstChunk : chunks_.back().second * 2;
    if (size > kLastChunk) size = kLastChunk;
    void* chunk = MapAligned(size);
    if (chunk == nullptr) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    if (size == kLastChunk) madvise(chunk, size, MADV_HUGEPAGE);  // a hint; refusal is fine
#endif
    chunks_.emplace_back(chunk, size);
    mapped_bytes_ += size;
    next_ = static_cast<char*>(chunk);
    left_ = size;
  }
  void* p = next_;
  next_ += bytes;
  left_ -= bytes;
  return p;
}

bool Slab::FromMalloc(std::size_t size) noexcept {
  return kEveryBlockFromMalloc || size > kMaxClassBytes;
}

void* Slab::Allocate(std::size_t size) {
  if (FromMalloc(size)) {
    void* p = std::aligned_alloc(kLine, ClassBytes(size));
    if (p == nullptr) throw std::bad_alloc();
    large_bytes_ += Footprint(p, size);
    return p;
  }
  std::size_t bytes = ClassBytes(size == 0 ? 1 : size);
  FreeBlock*& head = free_[bytes / kLine - 1];
  if (head != nullptr) {
    FreeBlock* b = head;
    head = b->next;
    return b;
  }
  return Carve(bytes);
}

void Slab::Free(void* p, std::size_t size) noexcept {
  if (p == nullptr) return;
  if (FromMalloc(size)) {
    large_bytes_ -= Footprint(p, size);
    std::free(p);
    return;
  }
  std::size_t bytes = ClassBytes(size == 0 ? 1 : size);
  auto* b = static_cast<FreeBlock*>(p);
  FreeBlock*& head = free_[bytes / kLine - 1];
  b->next = head;
  head = b;
}

std::size_t Slab::Footprint(const void* p, std::size_t size) noexcept {
  if (FromMalloc(size)) return malloc_usable_size(const_cast<void*>(p)) + sizeof(std::size_t);
  return ClassBytes(size == 0 ? 1 : size);
}

}  // namespace cellroute::internal
