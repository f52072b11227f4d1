// cluster/cluster_config: the file's node lines and options, every error with FILE:LINE,
// and the diff a reload applies.
#include "cluster/cluster_config.h"

#include <gtest/gtest.h>
#include <stdio.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace asyncd::cluster {
namespace {

bool parse(const std::string &text, ClusterConfig *c, std::string *err,
           const std::string &self = "game1") {
    return parse_cluster(text, "/etc/asyncd/cluster.conf", self, c, err);
}

std::string error_of(const std::string &text, const std::string &self = "game1") {
    ClusterConfig c;
    std::string err;
    EXPECT_FALSE(parse(text, &c, &err, self)) << text;
    return err;
}

TEST(ClusterConfig, NodesAndOptions) {
    ClusterConfig c;
    std::string err;
    ASSERT_TRUE(
        parse("# the cluster\n"
              "node game1 127.0.0.1:7101\n"
              "node game2 127.0.0.1:7102  preconnect   # the battle node\n"
              "node db    [::1]:7103\n"
              "node old   down\n"
              "node spare 127.0.0.1:7105 down\n"
              "call_timeout 1.5\n"
              "hb_interval 200ms\n"
              "hb_timeout 1s\n"
              "max_message 1M\n"
              "queue_max 50\n",
              &c, &err))
        << err;
    ASSERT_EQ(c.nodes.size(), 5u);
    EXPECT_EQ(c.nodes[0].name, "game1");
    EXPECT_EQ(c.nodes[0].host, "127.0.0.1");
    EXPECT_EQ(c.nodes[0].port, 7101);
    EXPECT_TRUE(c.nodes[1].preconnect);
    EXPECT_FALSE(c.nodes[1].down);
    EXPECT_EQ(c.nodes[2].host, "::1");
    EXPECT_TRUE(c.nodes[3].down);
    EXPECT_TRUE(c.nodes[3].host.empty());
    EXPECT_TRUE(c.nodes[4].down);
    EXPECT_EQ(c.nodes[4].port, 7105);
    EXPECT_EQ(c.call_timeout_ms, 1500u);
    EXPECT_EQ(c.hb_interval_ms, 200u);
    EXPECT_EQ(c.hb_timeout_ms, 1000u);
    EXPECT_EQ(c.max_message, size_t(1) << 20);
    EXPECT_EQ(c.queue_max, 50u);
    EXPECT_EQ(c.connect_timeout_ms, 2000u) << "defaults stay";
    EXPECT_EQ(c.find("db")->line, 4);
    EXPECT_EQ(c.find("nobody"), nullptr);
}

TEST(ClusterConfig, EveryErrorNamesItsLine) {
    const std::string ok = "node game1 127.0.0.1:7101\n";
    struct Case {
        std::string text, want;
    } cases[] = {
        {ok + "node game2\n", ":2: node needs a name and IP:PORT (or down)"},
        {ok + "node g@me 127.0.0.1:1\n", ":2: bad node name \"g@me\""},
        {ok + "node . 127.0.0.1:1\n", ":2: bad node name \".\""},
        {ok + "node game1 127.0.0.1:7109\n", ":2: node game1 twice (first at line 1)"},
        {ok + "node b 127.0.0.1\n", ":2: node b: bad address \"127.0.0.1\""},
        {ok + "node b 127.0.0.1:0\n", ":2: node b: bad address"},
        {ok + "node b db.example:7000\n", ":2: node b: \"db.example\" is not a numeric address"},
        {ok + "node b 127.0.0.1:7102 sometimes\n", ":2: node b: unknown flag \"sometimes\""},
        {ok + "node b 127.0.0.1:7101\n", ":2: node b has the address of node game1 (line 1)"},
        {ok + "call_timeout\n", ":2: call_timeout takes one value"},
        {ok + "call_timeout 0\n", ":2: call_timeout: bad duration \"0\""},
        {ok + "hb_interval 5x\n", ":2: hb_interval: bad duration"},
        {ok + "call_timeout 1\ncall_timeout 2\n", ":3: call_timeout given twice"},
        {ok + "max_message 10\n", ":2: max_message: bad size \"10\""},
        {ok + "queue_max 0\n", ":2: queue_max: bad size"},
        {ok + "colour blue\n", ":2: unknown key \"colour\""},
        {ok + "secret_file /nonexistent/key\n", ":2: secret_file /nonexistent/key: "},
        {ok + "hb_interval 3\nhb_timeout 3\n", "hb_timeout (3000 ms) must be above hb_interval"},
        {"node game2 127.0.0.1:7102\n", "no node line for this node (game1)"},
        {"node game1 down\n", ":1: this node (game1) needs an address and cannot be down"},
    };
    for (const Case &c : cases) {
        std::string err = error_of(c.text);
        EXPECT_EQ(err.rfind("/etc/asyncd/cluster.conf", 0), 0u) << err;
        EXPECT_NE(err.find(c.want), std::string::npos) << "got: " << err << "\nwant: " << c.want;
    }
}

TEST(ClusterConfig, ASecretFileIsReadBesideTheClusterFile) {
    char dir[] = "/tmp/asyncd-cluster-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    std::string key = std::string(dir) + "/cluster.key", conf = std::string(dir) + "/c.conf";
    FILE *f = fopen(key.c_str(), "w");
    fputs("0123456789abcdef-shared\n", f);
    fclose(f);
    f = fopen(conf.c_str(), "w");
    fputs("node game1 127.0.0.1:7101\nsecret_file cluster.key\n", f);
    fclose(f);
    ClusterConfig c;
    std::string err;
    ASSERT_TRUE(load_cluster(conf, "game1", &c, &err)) << err;
    EXPECT_EQ(c.secret, "0123456789abcdef-shared") << "the trailing newline is not the secret";
    f = fopen(key.c_str(), "w");
    fputs("short\n", f);
    fclose(f);
    EXPECT_FALSE(load_cluster(conf, "game1", &c, &err));
    EXPECT_NE(err.find("at least 16 bytes"), std::string::npos) << err;
    EXPECT_FALSE(load_cluster(std::string(dir) + "/missing.conf", "game1", &c, &err));
    EXPECT_NE(err.find("missing.conf: No such file"), std::string::npos) << err;
    unlink(key.c_str());
    unlink(conf.c_str());
    rmdir(dir);
}

TEST(ClusterConfig, TheDiffSaysWhatAReloadChanges) {
    ClusterConfig a, b;
    std::string err;
    ASSERT_TRUE(
        parse("node game1 127.0.0.1:7101\nnode game2 127.0.0.1:7102\n"
              "node db 127.0.0.1:7103\nnode old 127.0.0.1:7104\nnode back down\n",
              &a, &err))
        << err;
    EXPECT_TRUE(diff_clusters(a, a).empty());
    EXPECT_EQ(diff_clusters(a, a).describe(), "no change");
    ASSERT_TRUE(
        parse("node game1 127.0.0.1:7101\nnode game2 127.0.0.1:7202 preconnect\n"
              "node db down\nnode back 127.0.0.1:7105\nnode game3 127.0.0.1:7106\n"
              "call_timeout 2\n",
              &b, &err))
        << err;
    ClusterDiff d = diff_clusters(a, b);
    EXPECT_EQ(d.added, std::vector<std::string>{"game3"});
    EXPECT_EQ(d.removed, std::vector<std::string>{"old"});
    EXPECT_EQ(d.moved, std::vector<std::string>{"game2"});
    EXPECT_EQ(d.marked_down, std::vector<std::string>{"db"});
    EXPECT_EQ(d.lifted, std::vector<std::string>{"back"});
    EXPECT_EQ(d.flags_changed, std::vector<std::string>{"game2"});
    EXPECT_TRUE(d.options_changed);
    EXPECT_EQ(d.describe(),
              "added game3; removed old; moved game2; down db; up again back; preconnect "
              "changed game2; options changed");
}

TEST(ClusterConfig, NodeNames) {
    EXPECT_TRUE(valid_node_name("game-1.eu_west"));
    EXPECT_FALSE(valid_node_name(""));
    EXPECT_FALSE(valid_node_name("."));
    EXPECT_FALSE(valid_node_name(std::string(65, 'a')));
    EXPECT_FALSE(valid_node_name("a b"));
}

// The table the supervisor hands conn reads back as the same table, secret included.
TEST(ClusterConfig, TheTableHandedToConnReadsBackTheSame) {
    ClusterConfig c;
    std::string err;
    ASSERT_TRUE(
        parse("node game1 127.0.0.1:7101\nnode game2 127.0.0.1:7102 preconnect\n"
              "node db [::1]:7103\nnode old down\nnode spare 127.0.0.1:7105 down\n"
              "call_timeout 1.5\nhb_interval 200ms\nmax_message 1M\nqueue_max 7\n",
              &c, &err))
        << err;
    c.secret = std::string("s\0cret-with-any-bytes\xff", 22);
    c.secret_file = "/etc/asyncd/cluster.key";
    ClusterConfig back;
    ASSERT_TRUE(decode_cluster(encode_cluster(c), "game1", &back, &err)) << err;
    EXPECT_TRUE(diff_clusters(c, back).empty()) << diff_clusters(c, back).describe();
    EXPECT_EQ(back.path, c.path);
    EXPECT_EQ(back.secret, c.secret);
    EXPECT_EQ(back.secret_file, c.secret_file);
    EXPECT_EQ(back.call_timeout_ms, 1500u);
    EXPECT_EQ(back.queue_max, 7u);
    ASSERT_EQ(back.nodes.size(), 5u);
    EXPECT_EQ(back.nodes[2].host, "::1");
    EXPECT_TRUE(back.nodes[4].down);
    EXPECT_TRUE(back.nodes[1].preconnect);
    EXPECT_FALSE(decode_cluster("truncated", "game1", &back, &err));
}

// The README's table of the cluster file's options lists each with its default.
TEST(ClusterKeys, TheReadmeListsEveryOptionWithItsDefault) {
    std::ifstream in("README.md");
    ASSERT_TRUE(in) << "run from the repository's top folder";
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (const ClusterKey &k : cluster_keys()) {
        std::string row = std::string("| `") + k.name + "` | `" + k.default_text + "` |";
        EXPECT_NE(text.find(row), std::string::npos) << "README has no row " << row;
    }
}

}  // namespace
}  // namespace asyncd::cluster
