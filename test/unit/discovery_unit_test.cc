// What conn takes from a discovered node's registration data.
#include <gtest/gtest.h>

#include <string>

#include "conn/discovery.h"

namespace asyncd::conn {
namespace {

TEST(Registration, TheAddressOfAValidRegistration) {
    std::string host;
    uint16_t port = 0;
    ASSERT_TRUE(
        parse_registration("addr=127.0.0.1:7101 workers=2 incarnation=ab proto=1", &host, &port));
    EXPECT_EQ(host, "127.0.0.1");
    EXPECT_EQ(port, 7101);
    ASSERT_TRUE(parse_registration("workers=2 addr=[::1]:9", &host, &port));
    EXPECT_EQ(host, "::1");
    EXPECT_EQ(port, 9);
}

TEST(Registration, AnythingButANumericAddressIsRefused) {
    std::string host = "kept";
    uint16_t port = 1;
    for (const char *bad :
         {"", "workers=2", "addr=", "addr=127.0.0.1", "addr=:7101", "addr=localhost:7101",
          "addr=127.0.0.1:0", "addr=127.0.0.1:65536", "addr=127.0.0.1:12x", "addr=999.1.1.1:7101",
          "addr=[::1:7101", "addr=127.0.0.1:-5"}) {
        EXPECT_FALSE(parse_registration(bad, &host, &port)) << bad;
    }
    EXPECT_EQ(host, "kept");
    EXPECT_EQ(port, 1);
}

}  // namespace
}  // namespace asyncd::conn
