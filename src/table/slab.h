// Memory for the route table's nodes and buckets: blocks in 64-byte size classes up to 4 KiB,
// cut from chunks that the table maps itself (growing from 64 KiB to 2 MiB, the larger ones
// asking the kernel for transparent huge pages), and bigger blocks from malloc.
//
// Why not malloc for everything: a cold lookup in a table of millions of entries touches one
// node and one bucket; scattered over 4 KiB pages each costs a TLB miss as well as a cache miss
// (on a virtual machine, a two-dimensional page walk that costs more than the miss itself).
// Carved from huge pages, the whole table of ten million entries is a few hundred TLB entries.
// Blocks start on a cache line, so a bucket's header and fingerprints are one line.
// (Built with AddressSanitizer, every block comes from malloc instead, so that ASan sees each.)
//
// One writer at a time (the table's writer mutex); readers never touch the slab. A freed block
// goes on its class's free list for the next allocation of that class; chunks go back to the
// system only when the slab is destroyed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace cellroute::internal {

class Slab {
 public:
  static constexpr std::size_t kLine = 64;
  static constexpr std::size_t kMaxClassBytes = 4096;

  Slab() = default;
  ~Slab();
  Slab(const Slab&) = delete;
  Slab& operator=(const Slab&) = delete;

  // At least `size` bytes aligned to 64; throws std::bad_alloc when the system has none.
  void* Allocate(std::size_t size);
  // A block from Allocate with the same size.
  void Free(void* p, std::size_t size) noexcept;

  // What a block of `size` bytes really costs: its class's size, or for a block from malloc
  // its usable size and chunk header.
  static std::size_t Footprint(const void* p, std::size_t size) noexcept;

  // Memory held from the system: every mapped chunk and every block from malloc.
  std::size_t reserved_bytes() const noexcept { return mapped_bytes_ + large_bytes_; }

 private:
  struct FreeBlock {
    FreeBlock* next;
  };
  static constexpr std::size_t kClasses = kMaxClassBytes / kLine;
  static constexpr std::size_t kFirstChunk = 64 << 10;
  static constexpr std::size_t kLastChunk = 2 << 20;

  static bool FromMalloc(std::size_t size) noexcept;
  void* Carve(std::size_t bytes);

  FreeBlock* free_[kClasses] = {};
  std::vector<std::pair<void*, std::size_t>> chunks_;
  char* next_ = nullptr;  // the unused end of the newest chunk
  std::size_t left_ = 0;
  std::size_t mapped_bytes_ = 0;
  std::size_t large_bytes_ = 0;
};

}  // namespace cellroute::internal
