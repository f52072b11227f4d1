#include "cluster/handshake.h"

#include "cluster/sha256.h"

namespace asyncd::cluster {

std::string check_hello(const Hello &peer, const ClusterConfig &cfg, const std::string &self,
                        const std::string &expected) {
    if (peer.version != kProtocolVersion) {
        return "protocol version " + std::to_string(peer.version) + ", this node speaks " +
               std::to_string(kProtocolVersion);
    }
    if (peer.node == self) return "the peer says it is this node (" + self + ")";
    if (!expected.empty() && peer.node != expected)
        return "connected to " + expected + " but the peer says it is " + peer.node;
    const NodeEntry *n = cfg.find(peer.node);
    if (!n) return "node " + peer.node + " is not in " + cfg.path;
    if (n->down) return "node " + peer.node + " is marked down in " + cfg.path;
    if (peer.workers == 0) return "node " + peer.node + " says it has no workers";
    if (peer.max_frame < 1024) return "node " + peer.node + " offers a max_frame below 1K";
    return "";
}

void hello_proof(const std::string &secret, char role, const Hello &initiator,
                 const Hello &responder, uint8_t out[32]) {
    Bytes parts[] = {
        {&role, 1},
        {initiator.nonce, kNonceLen},
        {responder.nonce, kNonceLen},
        {initiator.node.data(), initiator.node.size()},
        {"\0", 1},  // names cannot run into each other
        {responder.node.data(), responder.node.size()},
    };
    hmac_sha256(secret.data(), secret.size(), parts, sizeof parts / sizeof parts[0], out);
}

bool proof_ok(const std::string &secret, char role, const Hello &initiator, const Hello &responder,
              const Hello &got) {
    if (!got.has_mac) return false;
    uint8_t want[32];
    hello_proof(secret, role, initiator, responder, want);
    return equal_mac(want, got.mac);
}

}  // namespace asyncd::cluster
