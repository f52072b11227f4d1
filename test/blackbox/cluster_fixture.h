// The cluster tests' fixture: asyncd nodes named a, b, c... on loopback, each with the
// nodes test plugin (test/plugins/nodes.c), sharing one cluster file.
#pragma once

#include <stdlib.h>

#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "test/blackbox/harness.h"

namespace asyncd::test {

// Nodes named a, b, c..., each on its own cluster port, sharing one cluster file.
class ClusterTest : public ::testing::Test {
  protected:
    void SetUp() override {
        char tmpl[] = "/tmp/asyncd-cluster-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
    }
    void TearDown() override {
        expect_clean_logs(nodes_);
        nodes_.clear();
        run_shell("rm -rf " + shell_quote(dir_));
    }

    // The cluster file: every name in `names` at a free port, then `options`.
    void write_cluster(const std::vector<std::string> &names, const std::string &options = "") {
        std::ofstream f(dir_ + "/cluster.conf");
        for (const auto &n : names) {
            if (!ports_.count(n)) ports_[n] = free_port();
            f << "node " << n << " 127.0.0.1:" << ports_[n] << "\n";
        }
        f << options;
    }

    Server &node(const std::string &name) { return *nodes_.at(name); }

    void start_node(const std::string &name, const std::string &extra = "") {
        auto s = std::make_unique<Server>("workers 2\nplugin " + plugin_path("nodes.so") +
                                          "\nnode_name " + name + "\ncluster " + dir_ +
                                          "/cluster.conf\n" + extra);
        std::string why;
        ASSERT_TRUE(s->start(&why)) << name << ": " << why;
        nodes_[name] = std::move(s);
    }

    // A call through a client of `from`; the text its callback answered.
    std::string call(const std::string &from, const std::string &cmd) {
        Client c;
        if (!c.connect(node(from).port())) return "no connect";
        std::string got;
        if (!c.send_frame(cmd) || !c.recv_frame(&got, std::chrono::seconds(20))) return "no answer";
        return got;
    }

    std::string dir_;
    std::map<std::string, int> ports_;
    std::map<std::string, std::unique_ptr<Server>> nodes_;
};

}  // namespace asyncd::test
