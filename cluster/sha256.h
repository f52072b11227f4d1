// SHA-256 (FIPS 180-4) and HMAC-SHA-256 (RFC 2104), for the cluster handshake's proof of a
// shared secret. Small and dependency-free: the core links nothing but libc and pthreads.
#pragma once

#include <cstddef>
#include <cstdint>

namespace asyncd::cluster {

constexpr size_t kSha256Len = 32;

class Sha256 {
  public:
    Sha256() { reset(); }
    void reset();
    void update(const void *data, size_t len);
    void finish(uint8_t out[kSha256Len]);  // the object must be reset() before reuse

  private:
    void block(const uint8_t *p);

    uint32_t h_[8];
    uint64_t total_ = 0;  // bytes hashed
    uint8_t buf_[64];
    size_t buf_len_ = 0;
};

void sha256(const void *data, size_t len, uint8_t out[kSha256Len]);

// HMAC-SHA-256 over the concatenation of `parts` (count of them), keyed by key.
struct Bytes {
    const void *data;
    size_t len;
};
void hmac_sha256(const void *key, size_t key_len, const Bytes *parts, size_t count,
                 uint8_t out[kSha256Len]);

// Compares two MACs in time that does not depend on where they differ.
bool equal_mac(const uint8_t a[kSha256Len], const uint8_t b[kSha256Len]);

}  // namespace asyncd::cluster
