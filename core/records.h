// The records that travel in the rings between conn and a worker. Two typed enums, one per
// direction: a ring carries only its own direction's types, and the compiler keeps them apart.
// A shmq record's type is a plain uint16_t (the ring knows nothing of packets); type_of and
// the comparisons below are the only places the two meet.
#pragma once

#include <cstdint>

namespace asyncd {

// conn -> worker.
enum class ToWorker : uint16_t {
    kPacket = 1,     // a whole packet of conn_id; seq: packet_seq() below
    kLinkUp = 2,     // payload: asyncd_peer_t
    kLinkDown = 3,   // seq: the asyncd_down_reason
    kConnReset = 4,  // a new conn process: every connection before it is gone
    // The cluster (cluster/node_records.h has the payloads):
    kNodeRequest = 5,  // a call (conn_id: its req) or a send (conn_id 0) to this worker
    kNodeResult = 6,   // the outcome of this worker's call conn_id
    kNodeLink = 7,     // a link to a node came up (seq 0) or went down (seq: the status)
};

// A packet's seq: the connection's packet count in the low 24 bits (for the log), and above
// them the low 40 bits of the time-stamp counter when conn read it (core/latency.h), from
// which the worker takes its wait in the ring: 40 bits of ticks last minutes, and a wait is
// taken modulo them.
inline constexpr int kSeqCountBits = 24;
inline constexpr uint64_t kSeqStampMask = (uint64_t(1) << (64 - kSeqCountBits)) - 1;
inline uint64_t packet_seq(uint64_t count, uint64_t ticks) {
    return (ticks & kSeqStampMask) << kSeqCountBits | (count & ((1u << kSeqCountBits) - 1));
}
inline uint64_t packet_count(uint64_t seq) {
    return seq & ((1u << kSeqCountBits) - 1);
}
inline uint64_t packet_stamp(uint64_t seq) {
    return seq >> kSeqCountBits;
}
// Ticks from a stamp to `now` (a full counter reading); 0 when the stamp is ahead (another
// CPU's counter, a hair ahead) or absent.
inline uint64_t ticks_since_stamp(uint64_t stamp, uint64_t now) {
    if (!stamp) return 0;
    uint64_t d = (now - stamp) & kSeqStampMask;
    return d > kSeqStampMask / 2 ? 0 : d;
}

// worker -> conn.
enum class FromWorker : uint16_t {
    kReply = 1,      // bytes for conn_id
    kClose = 2,      // close conn_id after its pending replies
    kNodeCall = 3,   // node_call (conn_id: the call id) or node_send (conn_id 0)
    kNodeReply = 4,  // node_reply to the request conn_id (seq: the status)
    kNodeReset = 5,  // a new worker process: it reads its ring from seq on; requests before
                     // it went to a predecessor that died with them
};

constexpr uint16_t type_of(ToWorker t) {
    return uint16_t(t);
}
constexpr uint16_t type_of(FromWorker t) {
    return uint16_t(t);
}

}  // namespace asyncd
