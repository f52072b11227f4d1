// The record format of a shmq ring: a fixed 32-byte header followed by the payload, the
// whole record padded to 8 bytes. Nothing here knows about sockets or plugins.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace asyncd::shmq {

// Record types at or above kTypeReserved belong to the ring itself; callers use the rest.
inline constexpr uint16_t kTypeReserved = 0xff00;
inline constexpr uint16_t kTypePad = 0xffff;  // fills the space up to the end of the mapping

// Part flags. A message that fits one record carries both; a message split into parts
// carries kFirst on the first, kLast on the last and neither on the ones between.
inline constexpr uint16_t kFlagFirst = 1u << 0;
inline constexpr uint16_t kFlagLast = 1u << 1;
inline constexpr uint16_t kFlagWhole = kFlagFirst | kFlagLast;
inline constexpr uint16_t kFlagsRing = kFlagWhole;  // flags owned by the ring
// Bits 8..15 are the caller's, carried unchanged from push to pop.
inline constexpr uint16_t kFlagsUser = 0xff00;

inline constexpr size_t kAlign = 8;
inline constexpr size_t align_up(size_t n) {
    return (n + kAlign - 1) & ~(kAlign - 1);
}

// Written by the producer before the index that publishes it; read by the consumer only
// after an acquire load of that index and copied out before it is checked.
struct RecordHeader {
    uint32_t check;    // record_check() of the fields below and the record's ring index
    uint16_t type;     // caller's type, or kTypePad
    uint16_t flags;    // kFlagFirst/kFlagLast plus the caller's bits
    uint32_t len;      // payload bytes in this record
    uint32_t offset;   // where this part's bytes go in the whole message (0 unless parted)
    uint64_t conn_id;  // caller's 64-bit connection id
    uint64_t seq;      // caller's sequence number
};

static_assert(sizeof(RecordHeader) == 32, "the record header is 32 bytes");
static_assert(sizeof(RecordHeader) % kAlign == 0, "records stay 8-byte aligned");
static_assert(std::is_trivially_copyable_v<RecordHeader>, "the header is raw bytes");
static_assert(std::is_standard_layout_v<RecordHeader>, "the header has a fixed layout");

inline constexpr size_t kHeaderSize = sizeof(RecordHeader);

// The bytes a record of `len` payload bytes takes in the ring.
inline constexpr size_t record_footprint(size_t len) {
    return align_up(kHeaderSize + len);
}

// A 32-bit check over every header field and the ring index the record was written at. A
// flipped bit anywhere in the header, or a stale header left from an earlier lap, fails it.
inline uint32_t record_check(const RecordHeader &h, uint64_t index) {
    constexpr uint64_t kMagic = 0xa5c0d5eb1e55ed01ull;
    constexpr uint64_t kMul1 = 0x9e3779b97f4a7c15ull;
    constexpr uint64_t kMul2 = 0xbf58476d1ce4e5b9ull;
    constexpr uint64_t kMul3 = 0x94d049bb133111ebull;
    uint64_t x = kMagic ^ index;
    x ^= uint64_t(h.type) | (uint64_t(h.flags) << 16) | (uint64_t(h.len) << 32);
    x *= kMul1;
    x ^= uint64_t(h.offset) ^ ((h.conn_id << 1) | (h.conn_id >> 63));
    x *= kMul2;
    x ^= h.seq + (x >> 29);
    x *= kMul3;
    x ^= x >> 32;
    return uint32_t(x);
}

}  // namespace asyncd::shmq
