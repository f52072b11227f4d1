// C10 in make test: the frame reader over streams made of valid frames with random damage
// (flipped bytes, cut lengths, foreign types), checked by fuzz/wire_model.h. The libFuzzer
// target (make fuzz) explores further; this runs the same checks on a fixed seed.
#include <gtest/gtest.h>

#include <string>

#include "fuzz/wire_model.h"

namespace asyncd::wirefuzz {
namespace {

struct Rng {
    uint64_t s;
    uint32_t next() {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        return uint32_t(s >> 33);
    }
};

std::string valid_stream(Rng &rng) {
    std::string out;
    int messages = 1 + int(rng.next() % 6);
    for (int i = 0; i < messages; i++) {
        cluster::FrameHeader h;
        int kind = int(rng.next() % 3);
        h.type = kind == 0   ? cluster::FrameType::kCall
                 : kind == 1 ? cluster::FrameType::kSend
                             : cluster::FrameType::kReply;
        h.stream = uint16_t(rng.next() % 3);
        h.session = h.type == cluster::FrameType::kSend ? 0 : 1 + rng.next() % 100;
        std::string service = h.type == cluster::FrameType::kReply ? "" : "svc";
        std::string payload(rng.next() % 3000, 'x');
        for (char &c : payload)
            c = char(rng.next());
        cluster::MessageWriter w(h, service, payload, kMaxFrame);
        while (!w.done())
            w.next(&out);
    }
    return out;
}

TEST(WireFuzz, DamagedStreamsAreReadTheSameHoweverCutAndNeverTrusted) {
    Rng rng{12345};
    int refused = 0, read = 0;
    for (int round = 0; round < 300; round++) {
        std::string s = valid_stream(rng);
        int damage = int(rng.next() % 4);
        for (int d = 0; d < damage && !s.empty(); d++) {
            size_t at = rng.next() % s.size();
            switch (rng.next() % 3) {
                case 0:
                    s[at] = char(rng.next());
                    break;  // a flipped byte
                case 1:
                    s.resize(at);
                    break;  // cut short
                case 2:
                    s.insert(at, std::string(1 + rng.next() % 40, char(rng.next())));
                    break;
            }
        }
        std::string err = check_wire_stream(reinterpret_cast<const uint8_t *>(s.data()), s.size());
        ASSERT_EQ(err, "") << "round " << round;
        std::string e2;
        auto out = read_all(reinterpret_cast<const uint8_t *>(s.data()), s.size(), {}, &e2);
        if (!out.empty() && out.back().rfind("bad: ", 0) == 0) {
            refused++;
        } else {
            read++;
        }
    }
    EXPECT_GT(refused, 30) << "damage is caught";
    EXPECT_GT(read, 30) << "and undamaged streams are read";
}

}  // namespace
}  // namespace asyncd::wirefuzz
