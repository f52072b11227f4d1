// The handshake's rules, apart from any socket: whether a peer's HELLO is acceptable, the
// proof of the shared secret each side gives, and which link survives a simultaneous
// connect.
//
// The initiator sends HELLO; the responder answers HELLO_ACK with its own nonce and, when a
// secret is configured, its proof; the initiator's next frame is its own HELLO_ACK with its
// proof. A proof is HMAC-SHA-256(secret, role · initiator nonce · responder nonce ·
// initiator name · responder name), role 'R' for the responder's and 'I' for the
// initiator's, so that neither proof can be replayed as the other.
#pragma once

#include <cstdint>
#include <string>

#include "cluster/cluster_config.h"
#include "cluster/wire.h"

namespace asyncd::cluster {

// "" when `peer` may link with this node, else why not (for the one line that refuses it).
// expected: the node we connected to (empty on an accepted connection, where any node of
// the file other than ourselves will do).
std::string check_hello(const Hello &peer, const ClusterConfig &cfg, const std::string &self,
                        const std::string &expected);

void hello_proof(const std::string &secret, char role, const Hello &initiator,
                 const Hello &responder, uint8_t out[32]);

// With a secret, whether `got` (a HELLO_ACK from the other side) proves it.
bool proof_ok(const std::string &secret, char role, const Hello &initiator, const Hello &responder,
              const Hello &got);

// Two links between the same pair, each side having connected to the other: the one
// initiated by the node whose name sorts lower survives. True when our outgoing link is it.
inline bool outgoing_survives(const std::string &self, const std::string &peer) {
    return self < peer;
}

}  // namespace asyncd::cluster
