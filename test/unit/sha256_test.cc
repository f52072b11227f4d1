// cluster/sha256: the FIPS 180-4 example vectors for SHA-256 and RFC 4231's for
// HMAC-SHA-256, whole and fed in pieces of every size.
#include "cluster/sha256.h"

#include <gtest/gtest.h>

#include <string>

namespace asyncd::cluster {
namespace {

std::string hex(const uint8_t *p, size_t n) {
    static const char d[] = "0123456789abcdef";
    std::string s;
    for (size_t i = 0; i < n; i++) {
        s += d[p[i] >> 4];
        s += d[p[i] & 15];
    }
    return s;
}

std::string digest(const std::string &m) {
    uint8_t out[kSha256Len];
    sha256(m.data(), m.size(), out);
    return hex(out, sizeof out);
}

std::string hmac(const std::string &key, const std::string &m) {
    uint8_t out[kSha256Len];
    Bytes part{m.data(), m.size()};
    hmac_sha256(key.data(), key.size(), &part, 1, out);
    return hex(out, sizeof out);
}

TEST(Sha256, Fips180Vectors) {
    EXPECT_EQ(digest(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    EXPECT_EQ(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    EXPECT_EQ(digest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
              "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    EXPECT_EQ(digest(std::string(1000000, 'a')),
              "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, PiecesOfEverySizeGiveTheSameDigest) {
    std::string m;
    for (int i = 0; i < 300; i++)
        m += char(i * 7 + 3);
    std::string whole = digest(m);
    for (size_t piece = 1; piece <= 130; piece++) {
        Sha256 s;
        for (size_t at = 0; at < m.size(); at += piece)
            s.update(m.data() + at, std::min(piece, m.size() - at));
        uint8_t out[kSha256Len];
        s.finish(out);
        ASSERT_EQ(hex(out, sizeof out), whole) << "pieces of " << piece;
    }
    // Every length around the padding's boundaries (55, 56, 63, 64 bytes in the last block).
    for (size_t len = 50; len < 140; len++) {
        Sha256 a;
        a.update(m.data(), len);
        uint8_t x[kSha256Len], y[kSha256Len];
        a.finish(x);
        sha256(m.data(), len, y);
        ASSERT_EQ(hex(x, sizeof x), hex(y, sizeof y)) << len;
    }
}

TEST(Sha256, Rfc4231HmacVectors) {
    EXPECT_EQ(hmac(std::string(20, '\x0b'), "Hi There"),
              "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    EXPECT_EQ(hmac("Jefe", "what do ya want for nothing?"),
              "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    EXPECT_EQ(hmac(std::string(20, '\xaa'), std::string(50, '\xdd')),
              "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
    std::string key4;
    for (int i = 1; i <= 25; i++)
        key4 += char(i);
    EXPECT_EQ(hmac(key4, std::string(50, '\xcd')),
              "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b");
    EXPECT_EQ(
        hmac(std::string(131, '\xaa'), "Test Using Larger Than Block-Size Key - Hash Key First"),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    EXPECT_EQ(hmac(std::string(131, '\xaa'),
                   "This is a test using a larger than block-size key and a larger than "
                   "block-size data. The key needs to be hashed before being used by the HMAC "
                   "algorithm."),
              "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");
}

TEST(Sha256, HmacOverPartsIsHmacOverTheirConcatenation) {
    std::string a = "nonce-one", b = "nonce-two", c = "game1";
    Bytes parts[] = {{a.data(), a.size()}, {b.data(), b.size()}, {c.data(), c.size()}};
    uint8_t out[kSha256Len];
    hmac_sha256("secret", 6, parts, 3, out);
    EXPECT_EQ(hex(out, sizeof out), hmac("secret", a + b + c));
}

TEST(Sha256, EqualMacComparesEveryByte) {
    uint8_t x[kSha256Len] = {0}, y[kSha256Len] = {0};
    EXPECT_TRUE(equal_mac(x, y));
    for (size_t i = 0; i < kSha256Len; i++) {
        y[i] = 1;
        EXPECT_FALSE(equal_mac(x, y)) << i;
        y[i] = 0;
    }
}

}  // namespace
}  // namespace asyncd::cluster
