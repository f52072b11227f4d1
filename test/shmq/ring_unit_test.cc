// Single-process tests of the ring: the shapes of records, parts, limits and corruption.
#include <gtest/gtest.h>
#include <string.h>
#include <sys/mman.h>

#include <string>
#include <vector>

#include "shmq/ring.h"
#include "shmq/waker.h"
#include "test/shmq/test_util.h"

namespace asyncd::shmq {
namespace {

using test::fill_pattern;

using Fixture = test::RingFixture;

std::vector<uint8_t> pattern(size_t len, uint64_t seed) {
    std::vector<uint8_t> v(len);
    fill_pattern(v.data(), len, seed);
    return v;
}

RecordMeta meta_for(uint64_t seq) {
    RecordMeta m;
    m.type = 7;
    m.flags = 0x1200;
    m.conn_id = 0xabcdef0000000000ull + seq;
    m.seq = seq;
    return m;
}

// Pops one message, checks it is `expect` with meta_for(seq), commits it.
void expect_pop(Consumer &c, const std::vector<uint8_t> &expect, uint64_t seq) {
    Message m;
    ASSERT_EQ(c.peek(&m), PopStatus::kOk) << c.error();
    EXPECT_EQ(m.type, 7);
    EXPECT_EQ(m.flags, 0x1200);
    EXPECT_EQ(m.conn_id, 0xabcdef0000000000ull + seq);
    EXPECT_EQ(m.seq, seq);
    ASSERT_EQ(m.len, expect.size());
    EXPECT_EQ(std::vector<uint8_t>(m.data, m.data + m.len), expect);
    c.commit();
}

TEST(RingParams, RejectsBadShapes) {
    Ring ring;
    std::string err;
    RingParams p;
    p.capacity = 5000;
    EXPECT_FALSE(ring.create(p, &err));
    EXPECT_NE(err.find("power of two"), std::string::npos) << err;
    p.capacity = 2048;
    EXPECT_FALSE(ring.create(p, &err));
    p.capacity = 4096;
    p.max_record = 4096;
    EXPECT_FALSE(ring.create(p, &err));
    EXPECT_NE(err.find("max_record"), std::string::npos) << err;
    p.max_record = 0;
    p.max_msg = 0;
    EXPECT_FALSE(ring.create(p, &err));
    p.max_msg = 100;
    EXPECT_TRUE(ring.create(p, &err)) << err;
    EXPECT_EQ(ring.max_record(), 1024u);
}

TEST(Ring, EmptyRing) {
    Fixture f(4096);
    Consumer c(&f.ring, &f.waker);
    Message m;
    EXPECT_EQ(c.peek(&m), PopStatus::kEmpty);
    EXPECT_TRUE(c.empty());
    EXPECT_EQ(f.ring.used_bytes(), 0u);
    Producer p(&f.ring, &f.waker);
    EXPECT_EQ(p.free_bytes(), 4096u);
}

TEST(Ring, OneMessageKeepsMetaAndBytes) {
    Fixture f(4096);
    Producer p(&f.ring, &f.waker);
    Consumer c(&f.ring, &f.waker);
    auto a = pattern(100, 1);
    ASSERT_EQ(p.try_push(meta_for(1), a.data(), a.size()), PushStatus::kOk);
    p.flush();
    EXPECT_EQ(f.ring.used_bytes(), record_footprint(100));
    // Peek is idempotent until commit.
    Message m1, m2;
    ASSERT_EQ(c.peek(&m1), PopStatus::kOk);
    ASSERT_EQ(c.peek(&m2), PopStatus::kOk);
    EXPECT_EQ(m1.data, m2.data);
    expect_pop(c, a, 1);
    EXPECT_EQ(c.peek(&m1), PopStatus::kEmpty);
    EXPECT_EQ(f.ring.used_bytes(), 0u);
}

TEST(Ring, PushesArePublishedByFlushOrABigBatch) {
    Fixture f(64 << 10);  // publishes by itself past 8 KiB
    Producer p(&f.ring, &f.waker);
    Consumer c(&f.ring, &f.waker);
    auto a = pattern(100, 14);
    ASSERT_EQ(p.try_push(meta_for(0), a.data(), a.size()), PushStatus::kOk);
    Message m;
    EXPECT_EQ(c.peek(&m), PopStatus::kEmpty) << "not visible before flush";
    EXPECT_EQ(f.ring.used_bytes(), 0u);
    p.flush();
    expect_pop(c, a, 0);
    int pushed = 1;
    while (f.ring.used_bytes() == 0) {
        ASSERT_EQ(p.try_push(meta_for(pushed), a.data(), a.size()), PushStatus::kOk);
        pushed++;
    }
    EXPECT_EQ(pushed - 1, int((8 << 10) / record_footprint(100)) + 1);
    for (int i = 1; i < pushed; i++)
        expect_pop(c, a, i);
}

TEST(Ring, AppendGrowsTheLastUnpublishedRecordOnly) {
    Fixture f(4096, 1024);
    Producer p(&f.ring, &f.waker);
    Consumer c(&f.ring, &f.waker);
    RecordMeta m = meta_for(1);
    EXPECT_FALSE(p.try_append(m, "x", 1)) << "nothing written yet";
    ASSERT_EQ(p.try_push(m, "ab", 2), PushStatus::kOk);
    EXPECT_TRUE(p.try_append(m, "cd", 2));
    EXPECT_TRUE(p.try_append(m, "", 0));
    RecordMeta other = meta_for(2);
    EXPECT_FALSE(p.try_append(other, "zz", 2)) << "another connection";
    std::vector<uint8_t> big(1021);
    EXPECT_FALSE(p.try_append(m, big.data(), big.size())) << "past max_record";
    p.flush();
    EXPECT_FALSE(p.try_append(m, "ef", 2)) << "published: the consumer may be reading it";
    expect_pop(c, {'a', 'b', 'c', 'd'}, 1);
    // Near the end of the mapping a record that would cross it is not grown.
    std::vector<uint8_t> fill(1000 - kHeaderSize);
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(p.try_push(m, fill.data(), fill.size()), PushStatus::kOk);
        p.flush();
        expect_pop(c, fill, 1);
    }
    fill.resize(992 - kHeaderSize);
    ASSERT_EQ(p.try_push(m, fill.data(), fill.size()), PushStatus::kOk);
    p.flush();
    expect_pop(c, fill, 1);                              // the head is now 64 bytes before the end
    ASSERT_EQ(p.try_push(m, "gh", 2), PushStatus::kOk);  // 40 bytes, 24 left to the end
    EXPECT_TRUE(p.try_append(m, "ij", 2));
    std::vector<uint8_t> more(40);
    EXPECT_FALSE(p.try_append(m, more.data(), more.size()));
    p.flush();
    expect_pop(c, {'g', 'h', 'i', 'j'}, 1);
}

// A consumer that commits per batch, dies in mid-batch, and a replacement that knows how
// far it got: only the record in flight comes again, and the replies the dead producer
// wrote in full are published, not lost.
TEST(Ring, BatchCommitAndTakeOverFromADeadPredecessor) {
    Fixture requests(4096), replies(4096);
    Producer req(&requests.ring, &requests.waker);
    for (int i = 0; i < 5; i++)
        ASSERT_EQ(req.try_push(meta_for(i), "q", 1), PushStatus::kOk);
    req.flush();
    uint64_t in_next = 0, out_written = 0;
    {
        Consumer dead_in(&requests.ring, &requests.waker);
        Producer dead_out(&replies.ring, &replies.waker);
        Message m;
        for (int i = 0; i < 3; i++) {  // answers 0, 1, 2 ...
            ASSERT_EQ(dead_in.peek(&m), PopStatus::kOk);
            dead_in.mark_in_flight();
            ASSERT_EQ(dead_out.try_push(meta_for(m.seq), "a", 1), PushStatus::kOk);
            dead_in.advance();
            in_next = dead_in.position();
            out_written = dead_out.written();
        }
        ASSERT_EQ(dead_in.peek(&m), PopStatus::kOk);  // ... starts on 3 and dies: no flush,
        dead_in.mark_in_flight();                     // no commit
        ASSERT_EQ(dead_out.try_push(meta_for(m.seq), "partial", 7), PushStatus::kOk);
    }
    EXPECT_EQ(requests.ring.control()->tail.load(), 0u) << "nothing was committed";
    Consumer in(&requests.ring, &requests.waker);
    Producer out(&replies.ring, &replies.waker);
    EXPECT_TRUE(out.adopt(out_written));
    EXPECT_FALSE(out.adopt(out_written)) << "once";
    EXPECT_TRUE(in.skip_to(in_next));
    EXPECT_FALSE(in.skip_to(in_next - 8)) << "never backwards";
    Message m;
    ASSERT_EQ(in.peek(&m), PopStatus::kOk);
    EXPECT_EQ(m.seq, 3u) << "only the record in flight comes again";
    EXPECT_EQ(in.mark_in_flight(), 2u);
    Consumer conn(&replies.ring, &replies.waker);
    for (uint64_t i = 0; i < 3; i++)
        expect_pop(conn, {'a'}, i);
    Message r;
    EXPECT_EQ(conn.peek(&r), PopStatus::kEmpty) << "the partial reply was not adopted";
}

// A worker's reply path: replies to one connection within a batch coalesce into one record
// (try_append), and after each request the worker notes how far it got. It may die at any
// point: between an append and its note, too. Its replacement adopts up to the last note,
// and what conn then reads must be exactly the replies of the noted requests, as whole
// records with headers that match their bytes: never the header of a record that grew after
// the note.
TEST(Ring, AdoptAfterADeathAtEveryPointBetweenAppendAndNote) {
    // Requests as (connection, number of replies): runs of one connection make the appends.
    const std::vector<std::pair<uint64_t, int>> requests = {{1, 1}, {1, 2}, {1, 1}, {2, 1},
                                                            {2, 3}, {1, 1}, {3, 2}, {3, 1}};
    int steps = 0;
    for (const auto &r : requests)
        steps += r.second + 1;  // each reply, then the note
    for (int crash_at = 0; crash_at <= steps; crash_at++) {
        SCOPED_TRACE("death after step " + std::to_string(crash_at));
        Fixture replies(4096);
        uint64_t noted = 0, noted_last = UINT64_MAX;
        uint32_t noted_len = 0;
        // What conn must see: per record, the connection and the bytes, as of the last note.
        std::vector<std::pair<uint64_t, std::string>> expect, pending;
        {
            Producer dead(&replies.ring, &replies.waker);
            int step = 0;
            uint8_t byte = 'a';
            for (const auto &r : requests) {
                for (int k = 0; k < r.second && step < crash_at; k++, step++) {
                    RecordMeta m;
                    m.type = 1;
                    m.conn_id = r.first;
                    char c = char(byte++);
                    if (dead.try_append(m, &c, 1)) {
                        pending.back().second += c;
                    } else {
                        ASSERT_EQ(dead.try_push(m, &c, 1), PushStatus::kOk);
                        pending.push_back({r.first, std::string(1, c)});
                    }
                }
                if (step >= crash_at) break;
                step++;  // the note
                noted = dead.written();
                noted_last = dead.last_record_index();
                noted_len = dead.last_record_len();
                expect = pending;
            }
        }  // dies here: nothing published
        Producer next(&replies.ring, &replies.waker);
        EXPECT_EQ(next.adopt(noted, noted_last, noted_len), noted > 0);
        Consumer conn(&replies.ring, &replies.waker);
        for (const auto &e : expect) {
            Message m;
            ASSERT_EQ(conn.peek(&m), PopStatus::kOk) << conn.error();
            EXPECT_EQ(m.conn_id, e.first);
            EXPECT_EQ(std::string(reinterpret_cast<const char *>(m.data), m.len), e.second);
            conn.commit();
        }
        Message m;
        EXPECT_EQ(conn.peek(&m), PopStatus::kEmpty) << "nothing past the note is published";
        // And the ring goes on whole: the replacement's own replies follow.
        RecordMeta meta;
        meta.type = 1;
        meta.conn_id = 9;
        ASSERT_EQ(next.try_push(meta, "z", 1), PushStatus::kOk);
        next.flush();
        ASSERT_EQ(conn.peek(&m), PopStatus::kOk) << conn.error();
        EXPECT_EQ(m.conn_id, 9u);
    }
}

TEST(Ring, ZeroLengthMessage) {
    Fixture f(4096);
    Producer p(&f.ring, &f.waker);
    Consumer c(&f.ring, &f.waker);
    ASSERT_EQ(p.try_push(meta_for(3), nullptr, 0), PushStatus::kOk);
    p.flush();
    expect_pop(c, {}, 3);
}

TEST(Ring, ReservedTypeRefused) {
    Fixture f(4096);
    Producer p(&f.ring, &f.waker);
    RecordMeta m;
    m.type = kTypePad;
    EXPECT_EQ(p.try_push(m, "x", 1), PushStatus::kBadType);
}

TEST(Ring, FullIsAValueAndRoomComesBack) {
    Fixture f(4096);
    Producer p(&f.ring, &f.waker);
    Consumer c(&f.ring, &f.waker);
    auto a = pattern(100, 2);  // footprint 136: 30 fit in 4096 with 16 bytes left over
    int pushed = 0;
    while (p.try_push(meta_for(pushed), a.data(), a.size()) == PushStatus::kOk)
        pushed++;
    p.flush();
    EXPECT_EQ(pushed, 30);
    EXPECT_EQ(p.try_push(meta_for(99), a.data(), a.size()), PushStatus::kFull);
    // A small record still fits into the 16 bytes? No: a header alone is 32.
    EXPECT_EQ(p.try_push(meta_for(99), a.data(), 0), PushStatus::kFull);
    expect_pop(c, a, 0);
    // 136 freed at the front plus the 16-byte gap at the end: exactly one more fits, and it
    // wraps over the implicit gap that is too small for a pad header.
    ASSERT_EQ(p.try_push(meta_for(30), a.data(), a.size()), PushStatus::kOk);
    p.flush();
    EXPECT_EQ(p.try_push(meta_for(31), a.data(), a.size()), PushStatus::kFull);
    for (int i = 1; i <= 30; i++)
        expect_pop(c, a, i);
    Message m;
    EXPECT_EQ(c.peek(&m), PopStatus::kEmpty);
}

TEST(Ring, ExactlyFits) {
    Fixture f(4096);
    Producer p(&f.ring, &f.waker);
    Consumer c(&f.ring, &f.waker);
    auto a = pattern(1024 - kHeaderSize, 3);  // footprint exactly a quarter of the ring
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(p.try_push(meta_for(i), a.data(), a.size()), PushStatus::kOk);
    p.flush();
    EXPECT_EQ(p.free_bytes(), 0u);
    EXPECT_EQ(p.try_push(meta_for(4), a.data(), a.size()), PushStatus::kFull);
    expect_pop(c, a, 0);
    ASSERT_EQ(p.try_push(meta_for(4), a.data(), a.size()), PushStatus::kOk);  // no pad needed
    p.flush();
    Message m;
    for (int i = 1; i <= 4; i++) {
        ASSERT_EQ(c.peek(&m), PopStatus::kOk);
        EXPECT_EQ(m.index, uint64_t(i) * 1024);
        c.commit();
    }
}

TEST(Ring, WrapLeavesPadRecord) {
    Fixture f(4096);
    Producer p(&f.ring, &f.waker);
    Consumer c(&f.ring, &f.waker);
    auto a = pattern(1000, 4);  // footprint 1032: three fit, the fourth must wrap
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(p.try_push(meta_for(i), a.data(), a.size()), PushStatus::kOk);
    p.flush();
    for (int i = 0; i < 3; i++)
        expect_pop(c, a, i);
    ASSERT_EQ(p.try_push(meta_for(3), a.data(), a.size()), PushStatus::kOk);
    p.flush();
    RecordHeader pad;
    memcpy(&pad, f.ring.data() + 3096, sizeof pad);
    EXPECT_EQ(pad.type, kTypePad);
    EXPECT_EQ(pad.len, 4096u - 3096u - kHeaderSize);
    Message m;
    ASSERT_EQ(c.peek(&m), PopStatus::kOk);
    EXPECT_EQ(m.index, 4096u);  // starts again at the front
    EXPECT_EQ(memcmp(m.data, a.data(), a.size()), 0);
    c.commit();
}

TEST(Ring, ManyLapsOfMixedSizesStayIntact) {
    Fixture f(8192);
    Producer p(&f.ring, &f.waker);
    Consumer c(&f.ring, &f.waker);
    uint64_t pushed = 0, popped = 0;
    std::vector<uint8_t> buf(2048);
    while (popped < 20000) {
        size_t len = test::splitmix64(pushed) % 2000;
        fill_pattern(buf.data(), len, pushed);
        PushStatus s = p.try_push(meta_for(pushed), buf.data(), len);
        if (s == PushStatus::kOk) {
            pushed++;
            continue;
        }
        ASSERT_EQ(s, PushStatus::kFull);
        Message m;
        while (c.peek(&m) == PopStatus::kOk) {
            ASSERT_EQ(m.seq, popped);
            size_t expect_len = test::splitmix64(popped) % 2000;
            ASSERT_EQ(m.len, expect_len);
            std::vector<uint8_t> expect(expect_len);
            fill_pattern(expect.data(), expect_len, popped);
            ASSERT_EQ(std::vector<uint8_t>(m.data, m.data + m.len), expect);
            c.commit();
            popped++;
        }
    }
    EXPECT_GT(f.ring.control()->head.load(), 8192u * 100);  // really went round many times
}

TEST(Ring, PartsReassembleAllOrNothing) {
    Fixture f(4096, 256, 64 << 10);
    Producer p(&f.ring, &f.waker);
    Consumer c(&f.ring, &f.waker);
    auto a = pattern(3000, 5);
    ASSERT_EQ(p.try_push(meta_for(1), a.data(), a.size()), PushStatus::kOk);
    p.flush();
    EXPECT_GT(f.ring.used_bytes(), 3000u);
    // Not enough room for a second one: nothing of it is written.
    uint64_t before = f.ring.used_bytes();
    EXPECT_EQ(p.try_push(meta_for(2), a.data(), a.size()), PushStatus::kFull);
    EXPECT_EQ(f.ring.used_bytes(), before);
    expect_pop(c, a, 1);
    // More than the ring can ever hold at once: try_push says so, the stream takes it.
    auto big = pattern(8000, 6);
    EXPECT_EQ(p.try_push(meta_for(2), big.data(), big.size()), PushStatus::kTooBig);
}

TEST(Ring, StreamCarriesMessagesLargerThanTheRing) {
    Fixture f(4096, 512, 1 << 20);
    Producer p(&f.ring, &f.waker);
    Consumer c(&f.ring, &f.waker);
    auto big = pattern(1 << 20, 7);  // the maximum message: 256 times the ring
    size_t done = 0;
    Message m;
    int rounds = 0;
    PushStatus s;
    while ((s = p.try_push_stream(meta_for(9), big.data(), big.size(), &done)) ==
           PushStatus::kFull) {
        ASSERT_GT(done, 0u);
        // While the stream is open nothing else may go in.
        EXPECT_EQ(p.try_push(meta_for(10), "x", 1), PushStatus::kBusy);
        ASSERT_EQ(c.peek(&m), PopStatus::kEmpty);  // takes the parts, frees their room
        ASSERT_LT(++rounds, 100000);
    }
    ASSERT_EQ(s, PushStatus::kOk);
    EXPECT_EQ(done, big.size());
    expect_pop(c, big, 9);
    // One byte above the maximum is refused before anything is written.
    std::vector<uint8_t> over((1 << 20) + 1);
    done = 0;
    EXPECT_EQ(p.try_push_stream(meta_for(11), over.data(), over.size(), &done),
              PushStatus::kTooBig);
    EXPECT_EQ(done, 0u);
    auto small = pattern(10, 8);
    ASSERT_EQ(p.try_push(meta_for(12), small.data(), small.size()), PushStatus::kOk);
    p.flush();
    expect_pop(c, small, 12);
}

TEST(Ring, AbortedStreamIsDroppedAndTheRingGoesOn) {
    Fixture f(4096, 512, 1 << 16);
    Producer p(&f.ring, &f.waker);
    Consumer c(&f.ring, &f.waker);
    auto big = pattern(1 << 16, 17);
    size_t done = 0;
    ASSERT_EQ(p.try_push_stream(meta_for(1), big.data(), big.size(), &done), PushStatus::kFull);
    ASSERT_TRUE(p.stream_open());
    Message m;
    ASSERT_EQ(c.peek(&m), PopStatus::kEmpty);  // took the parts there were
    EXPECT_EQ(p.try_push(meta_for(2), "x", 1), PushStatus::kBusy);
    p.abort_stream();  // its sender went away
    EXPECT_FALSE(p.stream_open());
    auto small = pattern(10, 18);
    ASSERT_EQ(p.try_push(meta_for(3), small.data(), small.size()), PushStatus::kOk);
    p.flush();
    expect_pop(c, small, 3);
    EXPECT_EQ(f.ring.abandoned(), 1u);
}

TEST(Ring, ConsumerResumesAtInFlightMessage) {
    Fixture f(4096);
    Producer p(&f.ring, &f.waker);
    auto a = pattern(50, 9);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(p.try_push(meta_for(i), a.data(), a.size()), PushStatus::kOk);
    p.flush();
    {
        Consumer dead(&f.ring, &f.waker);
        Message m;
        ASSERT_EQ(dead.peek(&m), PopStatus::kOk);
        EXPECT_EQ(dead.mark_in_flight(), 1u);
        dead.commit();
        ASSERT_EQ(dead.peek(&m), PopStatus::kOk);
        EXPECT_EQ(m.seq, 1u);
        EXPECT_EQ(dead.mark_in_flight(), 1u);
        // dies here: message 1 in flight, not committed
    }
    Consumer next(&f.ring, &f.waker);
    Message m;
    ASSERT_EQ(next.peek(&m), PopStatus::kOk);
    EXPECT_EQ(m.seq, 1u);
    EXPECT_EQ(next.mark_in_flight(), 2u);  // the second consumer to start on it
    next.commit();
    ASSERT_EQ(next.peek(&m), PopStatus::kOk);
    EXPECT_EQ(m.seq, 2u);
    EXPECT_EQ(next.mark_in_flight(), 1u);
}

TEST(Ring, ConsumerResumesInsideAPartedMessage) {
    Fixture f(4096, 256, 64 << 10);
    Producer p(&f.ring, &f.waker);
    auto big = pattern(20000, 10);
    size_t done = 0;
    ASSERT_EQ(p.try_push_stream(meta_for(5), big.data(), big.size(), &done), PushStatus::kFull);
    {
        Consumer dead(&f.ring, &f.waker);
        Message m;
        ASSERT_EQ(dead.peek(&m), PopStatus::kEmpty);  // took and committed every part so far
    }
    EXPECT_EQ(f.ring.used_bytes(), 0u);
    Consumer next(&f.ring, &f.waker);
    Message m;
    PushStatus s;
    int rounds = 0;
    while ((s = p.try_push_stream(meta_for(5), big.data(), big.size(), &done)) ==
           PushStatus::kFull) {
        ASSERT_EQ(next.peek(&m), PopStatus::kEmpty);
        ASSERT_LT(++rounds, 10000);
    }
    ASSERT_EQ(s, PushStatus::kOk);
    expect_pop(next, big, 5);
    EXPECT_EQ(f.ring.abandoned(), 0u);
}

TEST(Ring, ProducerDeathMidStreamIsNeverHandedOver) {
    Fixture f(4096, 256, 64 << 10);
    Consumer c(&f.ring, &f.waker);
    auto big = pattern(20000, 11);
    {
        Producer dead(&f.ring, &f.waker);
        size_t done = 0;
        ASSERT_EQ(dead.try_push_stream(meta_for(1), big.data(), big.size(), &done),
                  PushStatus::kFull);
        Message m;
        ASSERT_EQ(c.peek(&m), PopStatus::kEmpty);
        // It publishes a few more parts and dies before the last one.
        ASSERT_EQ(c.peek(&m), PopStatus::kEmpty);
        ASSERT_EQ(dead.try_push_stream(meta_for(1), big.data(), big.size(), &done),
                  PushStatus::kFull);
    }
    // The parts it published before dying stay in the ring; the consumer takes them first.
    Message m;
    ASSERT_EQ(c.peek(&m), PopStatus::kEmpty);
    Producer next(&f.ring, &f.waker);
    auto a = pattern(30, 12);
    ASSERT_EQ(next.try_push(meta_for(2), a.data(), a.size()), PushStatus::kOk);
    next.flush();
    auto b = pattern(3000, 13);
    ASSERT_EQ(next.try_push(meta_for(3), b.data(), b.size()), PushStatus::kOk);
    next.flush();
    expect_pop(c, a, 2);
    EXPECT_EQ(f.ring.abandoned(), 1u);
    expect_pop(c, b, 3);
}

// Corruption is reported as a value before any payload byte is read. The page after the
// record area is made inaccessible, so a read past the mapping's record area would crash.
class RingCorruption : public ::testing::Test {
  protected:
    RingCorruption() : f_(4096, 1024, 4096) {
        EXPECT_EQ(mprotect(f_.ring.assembly(), 4096, PROT_NONE), 0);
    }
    ~RingCorruption() override { allow_assembly(); }
    // Parted messages are copied into the assembly buffer: those tests need it writable.
    void allow_assembly() { mprotect(f_.ring.assembly(), 4096, PROT_READ | PROT_WRITE); }

    RecordHeader header_at(size_t pos) {
        RecordHeader h;
        memcpy(&h, f_.ring.data() + pos, sizeof h);
        return h;
    }
    void put_header(size_t pos, RecordHeader h, uint64_t index, bool fix_check) {
        if (fix_check) h.check = record_check(h, index);
        memcpy(f_.ring.data() + pos, &h, sizeof h);
    }
    void expect_corrupt(const char *what) {
        Consumer c(&f_.ring, &f_.waker);
        Message m;
        ASSERT_EQ(c.peek(&m), PopStatus::kCorrupt);
        EXPECT_NE(std::string(c.error()).find(what), std::string::npos) << c.error();
        EXPECT_EQ(c.peek(&m), PopStatus::kCorrupt);  // stays corrupt, does not skip ahead
        EXPECT_GT(c.discard_all(), 0u);
        EXPECT_EQ(c.peek(&m), PopStatus::kEmpty);
    }

    Fixture f_;
};

TEST_F(RingCorruption, FlippedBitFailsTheCheck) {
    Producer p(&f_.ring, &f_.waker);
    ASSERT_EQ(p.try_push(meta_for(1), "hello", 5), PushStatus::kOk);
    p.flush();
    f_.ring.data()[12] ^= 0x04;  // a bit of the offset field
    expect_corrupt("check failed");
}

TEST_F(RingCorruption, StaleHeaderFromAnEarlierLap) {
    Producer p(&f_.ring, &f_.waker);
    Consumer c(&f_.ring, &f_.waker);
    ASSERT_EQ(p.try_push(meta_for(1), "hello", 5), PushStatus::kOk);
    p.flush();
    RecordHeader old = header_at(0);
    expect_pop(c, std::vector<uint8_t>{'h', 'e', 'l', 'l', 'o'}, 1);
    // Pretend the producer published index 4096 without writing: the old header is there.
    f_.ring.control()->head.store(4096 + 40);
    f_.ring.control()->tail.store(4096);
    put_header(0, old, 0, false);
    expect_corrupt("check failed");
}

TEST_F(RingCorruption, LengthAboveMaxRecord) {
    Producer p(&f_.ring, &f_.waker);
    ASSERT_EQ(p.try_push(meta_for(1), "hello", 5), PushStatus::kOk);
    p.flush();
    RecordHeader h = header_at(0);
    h.len = 0xffffffffu;  // a consistent header with a wild length
    put_header(0, h, 0, true);
    expect_corrupt("above max_record");
}

TEST_F(RingCorruption, RecordCrossingTheEnd) {
    Producer p(&f_.ring, &f_.waker);
    Consumer c(&f_.ring, &f_.waker);
    std::vector<uint8_t> a(1000 - kHeaderSize);
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(p.try_push(meta_for(i), a.data(), a.size()), PushStatus::kOk);
        p.flush();
        expect_pop(c, a, i);
    }
    // Now at 4000: a short record whose header claims it runs 500 bytes past the end.
    ASSERT_EQ(p.try_push(meta_for(9), "x", 1), PushStatus::kOk);
    p.flush();
    RecordHeader h = header_at(4000);
    h.len = 560;
    put_header(4000, h, 4000, true);
    f_.ring.control()->head.store(4000 + 1024);  // and a head that would cover it
    expect_corrupt("crosses the end");
}

TEST_F(RingCorruption, RecordPastThePublishedHead) {
    Producer p(&f_.ring, &f_.waker);
    ASSERT_EQ(p.try_push(meta_for(1), "hello", 5), PushStatus::kOk);
    p.flush();
    RecordHeader h = header_at(0);
    h.len = 900;
    put_header(0, h, 0, true);
    expect_corrupt("past the published head");
}

TEST_F(RingCorruption, HeadOutOfRange) {
    Producer p(&f_.ring, &f_.waker);
    ASSERT_EQ(p.try_push(meta_for(1), "hello", 5), PushStatus::kOk);
    p.flush();
    f_.ring.control()->head.store(uint64_t(1) << 40);
    Consumer c(&f_.ring, &f_.waker);
    Message m;
    ASSERT_EQ(c.peek(&m), PopStatus::kCorrupt);
    EXPECT_NE(std::string(c.error()).find("head index out of range"), std::string::npos);
}

TEST_F(RingCorruption, PartOutOfSequence) {
    allow_assembly();
    Producer p(&f_.ring, &f_.waker);
    std::vector<uint8_t> a(1500);  // two parts of at most 1024
    ASSERT_EQ(p.try_push(meta_for(1), a.data(), a.size()), PushStatus::kOk);
    p.flush();
    Consumer c(&f_.ring, &f_.waker);
    RecordHeader first = header_at(0);
    ASSERT_EQ(first.flags & kFlagsRing, kFlagFirst);
    size_t second_pos = record_footprint(first.len);
    RecordHeader second = header_at(second_pos);
    second.offset += 8;
    put_header(second_pos, second, second_pos, true);
    Message m;
    ASSERT_EQ(c.peek(&m), PopStatus::kCorrupt);
    EXPECT_NE(std::string(c.error()).find("out of sequence"), std::string::npos) << c.error();
}

TEST_F(RingCorruption, PartBeyondMaxMessage) {
    allow_assembly();
    Producer p(&f_.ring, &f_.waker);
    std::vector<uint8_t> a(1500);
    ASSERT_EQ(p.try_push(meta_for(1), a.data(), a.size()), PushStatus::kOk);
    p.flush();
    RecordHeader first = header_at(0);
    size_t second_pos = record_footprint(first.len);
    RecordHeader second = header_at(second_pos);
    second.offset = 4000;  // a fresh consumer trusts where it resumes, but not past max_msg
    put_header(second_pos, second, second_pos, true);
    f_.ring.control()->tail.store(second_pos);
    Consumer resumed(&f_.ring, &f_.waker);
    Message m;
    ASSERT_EQ(resumed.peek(&m), PopStatus::kCorrupt);
    EXPECT_NE(std::string(resumed.error()).find("max_msg"), std::string::npos) << resumed.error();
}

TEST(RingSleep, NotifyWritesOnlyForASleeper) {
    for (WakerKind kind : {WakerKind::kPipe, WakerKind::kEventfd}) {
        Ring ring;
        Waker waker;
        std::string err;
        ASSERT_TRUE(ring.create(RingParams{}, &err)) << err;
        ASSERT_TRUE(waker.open(kind, &err)) << err;
        Producer p(&ring, &waker);
        Consumer c(&ring, &waker);
        ASSERT_EQ(p.try_push(meta_for(1), "a", 1), PushStatus::kOk);
        EXPECT_FALSE(p.flush());          // nobody sleeps
        EXPECT_FALSE(c.prepare_sleep());  // not empty: no sleep
        EXPECT_EQ(ring.sleeps(), 0u);
        Message m;
        ASSERT_EQ(c.peek(&m), PopStatus::kOk);
        c.commit();
        ASSERT_TRUE(c.prepare_sleep());
        EXPECT_FALSE(waker.wait(0));
        ASSERT_EQ(p.try_push(meta_for(2), "b", 1), PushStatus::kOk);
        EXPECT_TRUE(p.flush());
        EXPECT_FALSE(p.flush());  // one wakeup per sleep, however many pushes
        EXPECT_TRUE(waker.wait(0));
        c.finish_sleep();
        EXPECT_FALSE(waker.wait(0));  // drained
        EXPECT_EQ(ring.wakeups(), 1u);
        EXPECT_EQ(ring.sleeps(), 1u);
        EXPECT_TRUE(c.wait(0));  // data there: returns at once
    }
}

TEST(RingSleep, ProducerWaitingForRoomIsWokenByCommits) {
    Fixture f(4096);
    Waker producer_waker;
    std::string err;
    ASSERT_TRUE(producer_waker.open(WakerKind::kEventfd, &err)) << err;
    Producer p(&f.ring, &f.waker);
    Consumer c(&f.ring, &f.waker, &producer_waker);
    auto a = pattern(1000, 15);
    while (p.try_push(meta_for(0), a.data(), a.size()) == PushStatus::kOk) {
    }
    ASSERT_TRUE(p.prepare_wait_room(a.size()));
    EXPECT_FALSE(producer_waker.wait(0));
    Message m;
    ASSERT_EQ(c.peek(&m), PopStatus::kOk);
    c.commit();
    EXPECT_TRUE(c.notify_room());
    EXPECT_FALSE(c.notify_room());  // one signal per wait
    EXPECT_TRUE(producer_waker.wait(0));
    p.finish_wait_room();
    EXPECT_EQ(p.try_push(meta_for(1), a.data(), a.size()), PushStatus::kOk);
    EXPECT_EQ(f.ring.control()->room_wakeups.load(), 1u);
    // With room there is no wait to announce.
    ASSERT_EQ(c.peek(&m), PopStatus::kOk);
    c.commit();
    ASSERT_EQ(c.peek(&m), PopStatus::kOk);
    c.commit();
    EXPECT_FALSE(p.prepare_wait_room(a.size()));
}

// A message larger than the ring goes in parts, and the consumer takes each part before the
// message is whole: taking it must wake a producer waiting for the room (no commit will
// come until the last part is in, so waking only on commits would stall the stream).
TEST(RingSleep, ProducerStreamingAMessageLargerThanTheRingIsWokenByEachPart) {
    Fixture f(4096, 512, 1 << 16);
    Waker producer_waker;
    std::string err;
    ASSERT_TRUE(producer_waker.open(WakerKind::kEventfd, &err)) << err;
    Producer p(&f.ring, &f.waker);
    Consumer c(&f.ring, &f.waker, &producer_waker);
    auto big = pattern(1 << 16, 16);
    size_t done = 0;
    Message m;
    int waits = 0;
    PushStatus s;
    while ((s = p.try_push_stream(meta_for(3), big.data(), big.size(), &done)) ==
           PushStatus::kFull) {
        ASSERT_LT(++waits, 10000);
        ASSERT_TRUE(p.prepare_wait_room(big.size() - done));
        ASSERT_EQ(c.peek(&m), PopStatus::kEmpty);  // takes the parts there are
        ASSERT_TRUE(producer_waker.wait(0)) << "no wakeup after " << done << " bytes";
        p.finish_wait_room();
    }
    ASSERT_EQ(s, PushStatus::kOk);
    EXPECT_GT(waits, 10);
    EXPECT_EQ(f.ring.control()->room_wakeups.load(), uint64_t(waits));
    expect_pop(c, big, 3);
}

TEST(Waker, ParsesKindsAndSurvivesManySignals) {
    WakerKind k;
    EXPECT_TRUE(parse_waker_kind("pipe", &k));
    EXPECT_EQ(k, WakerKind::kPipe);
    EXPECT_TRUE(parse_waker_kind("eventfd", &k));
    EXPECT_EQ(k, WakerKind::kEventfd);
    EXPECT_FALSE(parse_waker_kind("futex", &k));
    for (WakerKind kind : {WakerKind::kPipe, WakerKind::kEventfd}) {
        Waker w;
        std::string err;
        ASSERT_TRUE(w.open(kind, &err)) << err;
        // More signals than a pipe buffer holds: a full pipe still counts as signalled.
        for (int i = 0; i < 100000; i++)
            ASSERT_TRUE(w.signal());
        EXPECT_TRUE(w.wait(0));
        w.drain();
        EXPECT_FALSE(w.wait(0));
        Waker moved(std::move(w));
        EXPECT_FALSE(w.is_open());
        EXPECT_TRUE(moved.signal());
        EXPECT_TRUE(moved.wait(0));
    }
}

}  // namespace
}  // namespace asyncd::shmq
