// Unit tests of the pure parts of the gateway: config parsing, the frame decoder, the
// restart back-off and the worker's timers.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <random>
#include <string>

#include "conn/frame.h"
#include "core/backoff.h"
#include "core/config.h"
#include "core/timers.h"

namespace asyncd {
namespace {

class ConfigFiles : public ::testing::Test {
  protected:
    ConfigFiles() {
        char tmpl[] = "/tmp/asyncd-conf-XXXXXX";
        char real[4096];
        dir_ = realpath(mkdtemp(tmpl), real);
        write("plugin.so", "not really a plugin; load_config only checks it exists");
    }
    ~ConfigFiles() override {
        std::string cmd = "rm -rf " + dir_;
        if (system(cmd.c_str()) != 0) ADD_FAILURE() << cmd;
    }
    std::string write(const std::string &name, const std::string &body) {
        std::string path = dir_ + "/" + name;
        std::ofstream(path) << body;
        return path;
    }
    std::string dir_;
};

TEST_F(ConfigFiles, DefaultsIncludesAndPluginValues) {
    write("limits.conf", "max_pkg_len 64K   # a comment\nring_size 1M\nplugin.greeting hi there\n");
    std::string main = write("main.conf",
                             "# asyncd\nlisten [::1]:7100\nworkers 3\nplugin plugin.so\n"
                             "include limits.conf\nframe len32le\nidle_timeout 30\n");
    Config cfg;
    std::string err;
    ASSERT_TRUE(load_config(main, &cfg, &err)) << err;
    EXPECT_EQ(cfg.listen_host, "::1");
    EXPECT_EQ(cfg.listen_port, 7100);
    EXPECT_EQ(cfg.workers, 3);
    EXPECT_EQ(cfg.plugin, dir_ + "/plugin.so");
    EXPECT_EQ(cfg.max_pkg_len, 64u << 10);
    EXPECT_EQ(cfg.ring_size, 1u << 20);
    EXPECT_EQ(cfg.frame, FrameMode::kLen32Le);
    EXPECT_EQ(cfg.idle_timeout, 30);
    EXPECT_EQ(cfg.max_conns, 10000);  // a default
    EXPECT_EQ(cfg.pkg_timeout_ms, 30000);
    EXPECT_EQ(cfg.out_buf_soft, size_t(8) << 20);
    EXPECT_EQ(cfg.out_buf_soft_ms, 10000);
    EXPECT_EQ(cfg.out_buf_hard, size_t(64) << 20);
    ASSERT_NE(cfg.plugin_value("greeting"), nullptr);
    EXPECT_STREQ(cfg.plugin_value("greeting"), "hi there");
    EXPECT_EQ(cfg.plugin_value("absent"), nullptr);
}

TEST_F(ConfigFiles, ClientLimits) {
    std::string path = write("limits.conf",
                             "plugin plugin.so\npkg_timeout 2.5\nout_buf_soft 1M\n"
                             "out_buf_soft_seconds 0.5\nout_buf_hard 0\n");
    Config cfg;
    std::string err;
    ASSERT_TRUE(load_config(path, &cfg, &err)) << err;
    EXPECT_EQ(cfg.pkg_timeout_ms, 2500);
    EXPECT_EQ(cfg.out_buf_soft, size_t(1) << 20);
    EXPECT_EQ(cfg.out_buf_soft_ms, 500);
    EXPECT_EQ(cfg.out_buf_hard, 0u);  // off: the soft limit alone applies
}

TEST(LogLimit, SomeLinesASecondThenACountOfTheRest) {
    LogLimit limit(2);
    uint64_t suppressed = 99;
    ASSERT_TRUE(limit.allow(5000, &suppressed));
    EXPECT_EQ(suppressed, 0u);
    ASSERT_TRUE(limit.allow(5100, &suppressed));
    EXPECT_FALSE(limit.allow(5200, &suppressed));
    EXPECT_FALSE(limit.allow(5999, &suppressed));
    ASSERT_TRUE(limit.allow(6000, &suppressed));  // a new second
    EXPECT_EQ(suppressed, 2u);
    ASSERT_TRUE(limit.allow(6001, &suppressed));
    EXPECT_EQ(suppressed, 0u);
}

TEST_F(ConfigFiles, PidFileDefaultsBesideTheConfig) {
    Config cfg;
    std::string err;
    ASSERT_TRUE(load_config(write("a.conf", "plugin plugin.so\n"), &cfg, &err)) << err;
    EXPECT_EQ(cfg.pid_file, dir_ + "/asyncd.pid");
    EXPECT_EQ(cfg.max_workers, default_max_workers(cfg.workers));
    ASSERT_TRUE(load_config(write("b.conf", "plugin plugin.so\npid_file -\n"), &cfg, &err)) << err;
    EXPECT_EQ(cfg.pid_file, "") << "'-' turns it off";
}

TEST_F(ConfigFiles, ErrorsNameFileAndLine) {
    struct Case {
        std::string body;
        std::string want;
    } cases[] = {
        {"plugin plugin.so\nworkers 0\n", "bad.conf:2: workers must be 1 to 256"},
        {"plugin plugin.so\n\nmax_pkg_len 12Q\n", "bad.conf:3: max_pkg_len must be a size"},
        {"plugin plugin.so\nframe len16\n", "bad.conf:2: frame must be len32be"},
        {"plugin plugin.so\nlisten 7000\n", "bad.conf:2: listen wants HOST:PORT"},
        {"plugin plugin.so\nlog_level loud\n", "bad.conf:2: log_level must be"},
        {"plugin plugin.so\npkg_timeout soon\n", "bad.conf:2: pkg_timeout must be a duration"},
        {"plugin plugin.so\npkg_timeout 5d\n", "bad.conf:2: pkg_timeout must be a duration"},
        {"plugin plugin.so\nidle_timeout 500ms\n",
         "bad.conf:2: idle_timeout must be whole seconds"},
        {"plugin plugin.so\nout_buf_hard 10\n", "bad.conf:2: out_buf_hard must be a size"},
        {"plugin plugin.so\nout_buf_soft 2M\nout_buf_hard 1M\n",
         "bad.conf: out_buf_soft (2097152) is above out_buf_hard (1048576)"},
        {"plugin plugin.so\nworkers\n", "bad.conf:2: 'workers' needs a value"},
        {"plugin plugin.so\nworkers 2 3\n", "bad.conf:2: 'workers' takes one value"},
        {"plugin plugin.so\ninclude missing.conf\n", "missing.conf: cannot open"},
        {"include bad.conf\n", "nested deeper than 16"},
        {"workers 2\n", "bad.conf: 'plugin' is not set"},
        {"plugin gone.so\n", "bad.conf:1: plugin '" + dir_ + "/gone.so' not found"},
        {"plugin plugin.so\ndiscovery etcd\n", "bad.conf:2: discovery must be off or zookeeper"},
        {"plugin plugin.so\nzk_servers 127.0.0.1\n", "bad.conf:2: zk_servers wants HOST:PORT"},
        {"plugin plugin.so\nzk_servers 127.0.0.1:2181,\n", "bad.conf:2: zk_servers wants"},
        {"plugin plugin.so\nzk_root asyncd\n", "bad.conf:2: zk_root must be a path"},
        {"plugin plugin.so\nzk_root /asyncd/\n", "bad.conf:2: zk_root must be a path"},
        {"plugin plugin.so\nzk_session_timeout 200ms\n",
         "bad.conf:2: zk_session_timeout must be a duration from 1s"},
        {"plugin plugin.so\ndiscovery zookeeper\nzk_servers 127.0.0.1:2181\n",
         "bad.conf: discovery zookeeper needs node_name, cluster"},
        {"plugin plugin.so\ndiscovery zookeeper\nnode_name a\ncluster cl.conf\n",
         "bad.conf: discovery zookeeper needs node_name, cluster (a file with at least this "
         "node's own line) and zk_servers"},
    };
    for (const auto &c : cases) {
        std::string path = write("bad.conf", c.body);
        Config cfg;
        std::string err;
        EXPECT_FALSE(load_config(path, &cfg, &err)) << c.body;
        EXPECT_NE(err.find(c.want), std::string::npos) << "got: " << err << "\nwant: " << c.want;
    }
}

// The key table and the parser agree: every key of the table is accepted with a valid
// value, and a key outside it is refused.
TEST_F(ConfigFiles, EveryKeyOfTheTableParses) {
    // A valid value per key (the defaults are README text, not always values).
    const std::map<std::string, std::string> value = {
        {"listen", "127.0.0.1:7001"},
        {"workers", "3"},
        {"max_workers", "4"},
        {"plugin", "plugin.so"},
        {"frame", "len32le"},
        {"max_pkg_len", "64K"},
        {"max_reply_len", "1M"},
        {"ring_size", "1M"},
        {"max_conns", "10"},
        {"idle_timeout", "5s"},
        {"pkg_timeout", "2"},
        {"out_buf_hard", "128M"},
        {"out_buf_soft", "64K"},
        {"out_buf_soft_seconds", "1"},
        {"shutdown_timeout", "3"},
        {"handler_timeout", "1"},
        {"worker_max_rss", "64M"},
        {"input_budget", "16M"},
        {"busy_poll_us", "0"},
        {"busy_poll_contended_us", "5"},
        {"log_level", "warn"},
        {"log_file", "x.log"},
        {"pid_file", "x.pid"},
        {"daemon", "no"},
        {"handler_timing", "4"},
        {"admin_listen", "127.0.0.1:0"},
        {"admin_allow_remote", "no"},
        // The two cluster keys go together.
        {"node_name", "a\ncluster cl.conf"},
        {"cluster", "cl.conf\nnode_name a"},
        {"discovery", "zookeeper\nnode_name a\ncluster cl.conf\nzk_servers 127.0.0.1:2181"},
        {"zk_servers", "127.0.0.1:2181,127.0.0.2:2182,[::1]:2183"},
        {"zk_root", "/asyncd/game"},
        {"zk_session_timeout", "1500ms"},
        {"zk_module", "/opt/asyncd_zk.so"},
        {"zk_cache", "nodes.cache"},
    };
    write("cl.conf", "node a 127.0.0.1:7101\n");
    for (const ConfigKey &k : config_keys()) {
        auto v = value.find(k.name);
        ASSERT_NE(v, value.end()) << "no test value for the table's key " << k.name;
        std::string body = std::string("plugin plugin.so\n") + k.name + " " + v->second + "\n";
        Config cfg;
        std::string err;
        EXPECT_TRUE(load_config(write("k.conf", body), &cfg, &err)) << k.name << ": " << err;
        EXPECT_EQ(k.on_reload == OnReload::kRestart, k.differs != nullptr && k.keep != nullptr)
            << k.name;
    }
    EXPECT_EQ(value.size(), config_keys().size()) << "a test value for a key not in the table";
    Config cfg;
    std::string err;
    EXPECT_FALSE(load_config(write("u.conf", "plugin plugin.so\nworkerz 2\n"), &cfg, &err));
    EXPECT_NE(err.find("unknown key 'workerz'"), std::string::npos) << err;
}

// The README's configuration table lists every key of the table, with its default and what
// a reload does with it.
TEST(ConfigKeys, TheReadmeListsEveryKeyWithItsDefaultAndReload) {
    std::ifstream in("README.md");
    ASSERT_TRUE(in) << "run from the repository's top folder";
    std::map<std::string, std::string> rows;  // key -> its table row
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("| `", 0) != 0) continue;
        size_t end = line.find_first_of(" `", 3);
        rows.emplace(line.substr(3, end - 3), line);
    }
    for (const ConfigKey &k : config_keys()) {
        auto row = rows.find(k.name);
        ASSERT_NE(row, rows.end()) << "README has no row for " << k.name;
        EXPECT_NE(row->second.find(k.default_text), std::string::npos)
            << k.name << ": default '" << k.default_text << "' not in: " << row->second;
        EXPECT_NE(row->second.find(std::string("| ") + on_reload_name(k.on_reload) + " |"),
                  std::string::npos)
            << k.name << ": '" << on_reload_name(k.on_reload) << "' not in: " << row->second;
    }
}

TEST(ParseDuration, UnitsAndLimits) {
    uint64_t ms = 0;
    ASSERT_TRUE(parse_duration("1.5", 3600000, &ms));
    EXPECT_EQ(ms, 1500u) << "plain numbers are seconds";
    ASSERT_TRUE(parse_duration("500ms", 3600000, &ms));
    EXPECT_EQ(ms, 500u);
    ASSERT_TRUE(parse_duration("5s", 3600000, &ms));
    EXPECT_EQ(ms, 5000u);
    ASSERT_TRUE(parse_duration("2m", 3600000, &ms));
    EXPECT_EQ(ms, 120000u);
    ASSERT_TRUE(parse_duration("1h", 3600000, &ms));
    EXPECT_EQ(ms, 3600000u);
    ASSERT_TRUE(parse_duration("0", 3600000, &ms));
    EXPECT_EQ(ms, 0u);
    for (const char *bad : {"", "s", ".", "1.2.3", "5 s", "-1", "5d", "1e3", "2h", "0.0004"})
        EXPECT_FALSE(parse_duration(bad, 3600000, &ms)) << bad;
}

TEST(ConfigDefaults, PidFileAndMaxWorkers) {
    EXPECT_EQ(default_max_workers(2), 8);
    EXPECT_EQ(default_max_workers(10), 20);
    EXPECT_EQ(default_max_workers(200), 256);
}

TEST(ParseSize, SuffixesAndLimits) {
    size_t v;
    ASSERT_TRUE(parse_size("4096", &v));
    EXPECT_EQ(v, 4096u);
    ASSERT_TRUE(parse_size("4k", &v));
    EXPECT_EQ(v, 4096u);
    ASSERT_TRUE(parse_size("2M", &v));
    EXPECT_EQ(v, 2u << 20);
    ASSERT_TRUE(parse_size("1G", &v));
    EXPECT_EQ(v, 1u << 30);
    EXPECT_FALSE(parse_size("", &v));
    EXPECT_FALSE(parse_size("-1", &v));
    EXPECT_FALSE(parse_size("1KB", &v));
    EXPECT_FALSE(parse_size("M", &v));
    EXPECT_FALSE(parse_size("99999999999999999999", &v));
}

uint8_t g_plugin_answer_len = 0;
int line_len(uint64_t, const void *data, size_t avail) {
    const void *nl = memchr(data, '\n', avail);
    if (nl) return int(static_cast<const char *>(nl) - static_cast<const char *>(data)) + 1;
    return g_plugin_answer_len;
}

TEST(FrameDecoder, LengthPrefixBothEndians) {
    conn::FrameDecoder be;
    be.max_pkg_len = 100;
    size_t len;
    const char *why = "";
    const uint8_t pkt[] = {0, 0, 0, 6, 'h', 'i', 0, 0};
    EXPECT_EQ(be.decode(1, pkt, 3, &len, &why), conn::Frame::kNeedMore);
    EXPECT_EQ(len, 0u);
    EXPECT_EQ(be.decode(1, pkt, 5, &len, &why), conn::Frame::kNeedMore);
    EXPECT_EQ(len, 6u) << "the length is known before the packet is whole";
    EXPECT_EQ(be.decode(1, pkt, 8, &len, &why), conn::Frame::kPacket);
    EXPECT_EQ(len, 6u);
    conn::FrameDecoder le = be;
    le.mode = FrameMode::kLen32Le;
    const uint8_t lpkt[] = {5, 0, 0, 0, 'x'};
    EXPECT_EQ(le.decode(1, lpkt, 5, &len, &why), conn::Frame::kPacket);
    EXPECT_EQ(len, 5u);
}

TEST(FrameDecoder, BadLengthsAreErrors) {
    conn::FrameDecoder d;
    d.max_pkg_len = 100;
    size_t len;
    const char *why = "";
    const uint8_t zero[] = {0, 0, 0, 0};
    const uint8_t three[] = {0, 0, 0, 3};
    const uint8_t big[] = {0, 0, 0, 101};
    const uint8_t max[] = {0xff, 0xff, 0xff, 0xff};
    EXPECT_EQ(d.decode(1, zero, 4, &len, &why), conn::Frame::kError);
    EXPECT_STREQ(why, "length below the 4-byte prefix");
    EXPECT_EQ(d.decode(1, three, 4, &len, &why), conn::Frame::kError);
    EXPECT_EQ(d.decode(1, big, 4, &len, &why), conn::Frame::kError);
    EXPECT_STREQ(why, "length above max_pkg_len");
    EXPECT_EQ(d.decode(1, max, 4, &len, &why), conn::Frame::kError);
}

TEST(FrameDecoder, PluginFraming) {
    conn::FrameDecoder d;
    d.mode = FrameMode::kPlugin;
    d.max_pkg_len = 16;
    d.get_pkg_len = line_len;
    size_t len;
    const char *why = "";
    const uint8_t text[] = "ab\ncd";
    EXPECT_EQ(d.decode(1, text, 5, &len, &why), conn::Frame::kPacket);
    EXPECT_EQ(len, 3u);
    EXPECT_EQ(d.decode(1, text + 3, 2, &len, &why), conn::Frame::kNeedMore);
    uint8_t long_line[16];
    memset(long_line, 'x', sizeof long_line);
    EXPECT_EQ(d.decode(1, long_line, 16, &len, &why), conn::Frame::kError)
        << "no end within max_pkg_len";
    g_plugin_answer_len = 200;  // a plugin that claims a packet longer than the limit
    EXPECT_EQ(d.decode(1, long_line, 4, &len, &why), conn::Frame::kError);
    g_plugin_answer_len = 0;
}

// Every answer of the decoder over random input is one of the three, within bounds.
TEST(FrameDecoder, RandomInputOnlyGivesTheThreeAnswers) {
    std::mt19937_64 rng(7);
    conn::FrameDecoder d;
    d.max_pkg_len = 1000;
    uint8_t buf[2048];
    for (int i = 0; i < 200000; i++) {
        size_t n = rng() % sizeof buf;
        for (size_t k = 0; k < n; k++)
            buf[k] = uint8_t(rng() >> 7);
        if (n >= 4 && rng() % 2) {  // a plausible length now and then
            uint32_t l = uint32_t(rng() % 1100);
            buf[0] = uint8_t(l >> 24);
            buf[1] = uint8_t(l >> 16);
            buf[2] = uint8_t(l >> 8);
            buf[3] = uint8_t(l);
        }
        d.mode = rng() % 2 ? FrameMode::kLen32Be : FrameMode::kLen32Le;
        size_t len;
        const char *why = "";
        conn::Frame f = d.decode(1, buf, n, &len, &why);
        if (f == conn::Frame::kPacket) {
            ASSERT_GE(len, 4u);
            ASSERT_LE(len, n);
            ASSERT_LE(len, d.max_pkg_len);
        } else if (f == conn::Frame::kNeedMore) {
            ASSERT_TRUE(len == 0 || (len > n && len <= d.max_pkg_len));
        } else {
            ASSERT_GT(strlen(why), 0u);
        }
    }
}

TEST(Backoff, DoublesToTheCapAndResetsAfterAMinuteOfHealth) {
    Backoff b;
    uint64_t t = 1000000;
    uint64_t want[] = {100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000};
    for (uint64_t w : want) {
        EXPECT_EQ(b.next_delay(t, t + 10), w);
        t += 20;
    }
    EXPECT_EQ(b.next_delay(t, t + 60000), 100u) << "a minute of health resets it";
    EXPECT_EQ(b.next_delay(t, t + 59999), 200u);
}

int g_fired[8];
void fire(void *arg) {
    g_fired[reinterpret_cast<intptr_t>(arg)]++;
}

TEST(Timers, FireInDeadlineOrderAndCancel) {
    Timers t;
    memset(g_fired, 0, sizeof g_fired);
    uint64_t a = t.add(1000, 50, fire, reinterpret_cast<void *>(1));
    uint64_t b = t.add(1000, 10, fire, reinterpret_cast<void *>(2));
    uint64_t c = t.add(1000, 30, fire, reinterpret_cast<void *>(3));
    EXPECT_NE(a, 0u);
    EXPECT_EQ(t.next_in(1000), 10);
    EXPECT_EQ(t.run(1009), 0);
    EXPECT_EQ(t.run(1010), 1);
    EXPECT_EQ(g_fired[2], 1);
    EXPECT_TRUE(t.cancel(c));
    EXPECT_FALSE(t.cancel(c));
    EXPECT_FALSE(t.cancel(b)) << "already fired";
    EXPECT_EQ(t.run(2000), 1);
    EXPECT_EQ(g_fired[1], 1);
    EXPECT_EQ(g_fired[3], 0);
    EXPECT_EQ(t.next_in(2000), -1);
}

}  // namespace
}  // namespace asyncd
