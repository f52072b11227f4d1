// cluster/handshake: who may link, the proofs of the shared secret (each side's its own,
// bound to both nonces and both names), and who wins a simultaneous connect.
#include "cluster/handshake.h"

#include <gtest/gtest.h>
#include <string.h>

namespace asyncd::cluster {
namespace {

ClusterConfig three_nodes() {
    ClusterConfig c;
    std::string err;
    EXPECT_TRUE(
        parse_cluster("node game1 127.0.0.1:7101\nnode game2 127.0.0.1:7102\n"
                      "node old down\n",
                      "cluster.conf", "game1", &c, &err))
        << err;
    return c;
}

Hello hello(const std::string &name, uint8_t seed) {
    Hello h;
    h.node = name;
    h.workers = 2;
    h.max_frame = 256 * 1024;
    h.max_message = 16 << 20;
    for (size_t i = 0; i < kNonceLen; i++)
        h.nonce[i] = uint8_t(seed + i);
    return h;
}

TEST(Handshake, WhoMayLink) {
    ClusterConfig c = three_nodes();
    EXPECT_EQ(check_hello(hello("game2", 1), c, "game1", ""), "");
    EXPECT_EQ(check_hello(hello("game2", 1), c, "game1", "game2"), "");
    EXPECT_EQ(check_hello(hello("game2", 1), c, "game1", "db"),
              "connected to db but the peer says it is game2");
    EXPECT_EQ(check_hello(hello("stranger", 1), c, "game1", ""),
              "node stranger is not in cluster.conf");
    EXPECT_EQ(check_hello(hello("old", 1), c, "game1", ""),
              "node old is marked down in cluster.conf");
    EXPECT_EQ(check_hello(hello("game1", 1), c, "game1", ""),
              "the peer says it is this node (game1)");
    Hello v = hello("game2", 1);
    v.version = 9;
    EXPECT_EQ(check_hello(v, c, "game1", ""), "protocol version 9, this node speaks 1");
    Hello w = hello("game2", 1);
    w.workers = 0;
    EXPECT_EQ(check_hello(w, c, "game1", ""), "node game2 says it has no workers");
}

TEST(Handshake, ProofsBindTheSecretBothNoncesBothNamesAndTheRole) {
    const std::string secret = "0123456789abcdef";
    Hello i = hello("game1", 10), r = hello("game2", 50);
    Hello ack = r;
    ack.has_mac = true;
    hello_proof(secret, 'R', i, r, ack.mac);
    EXPECT_TRUE(proof_ok(secret, 'R', i, r, ack));
    EXPECT_FALSE(proof_ok("another secret!!", 'R', i, r, ack)) << "the secret";
    EXPECT_FALSE(proof_ok(secret, 'I', i, r, ack))
        << "the responder's proof is not the initiator's";
    Hello i2 = i;
    i2.nonce[3] ^= 1;
    EXPECT_FALSE(proof_ok(secret, 'R', i2, r, ack)) << "the initiator's nonce (a replay)";
    Hello r2 = r;
    r2.nonce[0] ^= 1;
    EXPECT_FALSE(proof_ok(secret, 'R', i, r2, ack)) << "the responder's nonce";
    Hello i3 = i;
    i3.node = "game";
    Hello r3 = r;
    r3.node = "1game2";
    EXPECT_FALSE(proof_ok(secret, 'R', i3, r3, ack)) << "names moved across their boundary";
    Hello none = r;
    EXPECT_FALSE(proof_ok(secret, 'R', i, r, none)) << "no proof at all";
    Hello bad = ack;
    bad.mac[31] ^= 0x80;
    EXPECT_FALSE(proof_ok(secret, 'R', i, r, bad));
}

TEST(Handshake, TheLowerNameKeepsItsOutgoingLink) {
    EXPECT_TRUE(outgoing_survives("game1", "game2"));
    EXPECT_FALSE(outgoing_survives("game2", "game1"));
    // Exactly one side's outgoing link survives.
    EXPECT_NE(outgoing_survives("db", "battle"), outgoing_survives("battle", "db"));
}

}  // namespace
}  // namespace asyncd::cluster
