#include "shmq/ring.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include <algorithm>
#include <new>

namespace asyncd::shmq {

namespace {

constexpr uint64_t kRingMagic = 0x6173796e63647131ull;  // "asyncdq1"
constexpr size_t kPage = 4096;

size_t round_to_page(size_t n) {
    return (n + kPage - 1) & ~(kPage - 1);
}
bool is_power_of_two(size_t n) {
    return n && !(n & (n - 1));
}

}  // namespace

Ring::~Ring() {
    destroy();
}

bool Ring::create(const RingParams &params, std::string *err) {
    destroy();
    size_t capacity = params.capacity;
    if (!is_power_of_two(capacity) || capacity < kMinCapacity || capacity > kMaxCapacity) {
        *err = "ring capacity must be a power of two between 4096 and 2^36 bytes, got " +
               std::to_string(capacity);
        return false;
    }
    size_t max_record = params.max_record;
    if (max_record == 0) max_record = std::min(capacity / 4, size_t(64) << 10);
    // A record of max_record plus the padding in front of it must fit an empty ring.
    if (max_record < 8 || record_footprint(max_record) > capacity / 2) {
        *err = "ring max_record must be at least 8 and at most about half the capacity, got " +
               std::to_string(max_record);
        return false;
    }
    if (params.max_msg == 0 || params.max_msg > kMaxMessage) {
        *err =
            "ring max_msg must be between 1 and 2^30 bytes, got " + std::to_string(params.max_msg);
        return false;
    }
    size_t control_size = round_to_page(sizeof(RingControl));
    size_t assembly_size = round_to_page(params.max_msg);
    size_t total = control_size + capacity + assembly_size;
    void *p = mmap(nullptr, total, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        *err = std::string("mmap of ") + std::to_string(total) + " bytes: " + strerror(errno);
        return false;
    }
    control_ = new (p) RingControl();
    control_->magic = kRingMagic;
    control_->capacity = capacity;
    control_->max_record = max_record;
    control_->max_msg = params.max_msg;
    data_ = static_cast<uint8_t *>(p) + control_size;
    assembly_ = data_ + capacity;
    capacity_ = capacity;
    max_record_ = max_record;
    max_msg_ = params.max_msg;
    mapping_size_ = total;
    return true;
}

void Ring::destroy() {
    if (control_) munmap(control_, mapping_size_);
    control_ = nullptr;
    data_ = assembly_ = nullptr;
    capacity_ = max_record_ = max_msg_ = mapping_size_ = 0;
}

uint64_t Ring::used_bytes() const {
    return control_->head.load(std::memory_order_acquire) -
           control_->tail.load(std::memory_order_acquire);
}

uint64_t Ring::count_messages() const {
    uint64_t head = control_->head.load(std::memory_order_acquire);
    uint64_t index = control_->tail.load(std::memory_order_acquire);
    uint64_t n = 0;
    while (index < head && head - index <= capacity_) {
        size_t pos = size_t(index & (capacity_ - 1));
        size_t to_end = capacity_ - pos;
        if (to_end < kHeaderSize) {
            index += to_end;
            continue;
        }
        RecordHeader h;
        memcpy(&h, data_ + pos, sizeof h);
        if (h.check != record_check(h, index)) break;
        if (h.type == kTypePad) {
            index += to_end;
            continue;
        }
        if (h.flags & kFlagFirst) n++;
        index += record_footprint(h.len);
    }
    return n;
}

uint64_t Ring::wakeups() const {
    return control_->wakeups.load(std::memory_order_relaxed);
}
uint64_t Ring::sleeps() const {
    return control_->sleeps.load(std::memory_order_relaxed);
}
uint64_t Ring::abandoned() const {
    return control_->abandoned.load(std::memory_order_relaxed);
}

}  // namespace asyncd::shmq
