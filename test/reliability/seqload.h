// Sequence-tagged load for the reliability tests: connections that keep a window of echo
// packets in flight, each carrying its connection and sequence number, so that lost,
// duplicated and misdelivered answers are counted exactly.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace asyncd::test {

struct SeqStats {
    uint64_t sent = 0;
    uint64_t answered = 0;    // distinct packets answered
    uint64_t duplicates = 0;  // answers that came again
    uint64_t lost = 0;        // packets skipped over by a later answer on the same connection
    uint64_t wrong = 0;       // answers that belong to another connection or are garbled
    uint64_t closed = 0;      // connections the server closed
    uint64_t unanswered_on_closed = 0;
    uint64_t unanswered = 0;  // on connections still open at the end
};

class SeqLoad {
  public:
    SeqLoad(uint16_t port, int conns, int window);
    ~SeqLoad();

    bool connect_all();
    void start();
    void stop_sending() { sending_.store(false); }
    // Waits until every packet sent on a connection still open has its answer.
    bool wait_answered(std::chrono::milliseconds deadline);
    // Stops the load thread; the connections stay open until the object goes.
    void stop();
    SeqStats stats();
    uint64_t answered() const { return answered_.load(); }
    // Sends one packet with this payload on connection i from the load thread's side (for
    // magic payloads); it is not counted.
    void inject(int i, const std::string &payload);

  private:
    struct Conn {
        int fd = -1;
        uint64_t next = 0;      // next sequence to send
        uint64_t expected = 0;  // lowest sequence not yet answered
        std::string in;
        std::string out;
        bool closed = false;
        int extra = 0;  // injected packets whose answers to skip
    };
    void loop();
    void on_reply(int i, const std::string &payload);

    uint16_t port_;
    int window_;
    std::vector<Conn> conns_;
    std::thread thread_;
    std::atomic<bool> running_{false};
    std::atomic<bool> sending_{true};
    std::atomic<uint64_t> answered_{0};
    std::mutex mu_;
    SeqStats stats_;
    std::vector<std::pair<int, std::string>> injected_;
};

}  // namespace asyncd::test
