// The config as the processes share it: the supervisor validates it and hands the children
// the result; no child reads the file again. A reload that is sent back (its new plugin would
// not start) puts every process on the old config: conn's client limits, the worker count and
// the log level, not only the plugin.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "test/blackbox/harness.h"
#include "test/reliability/probe.h"

namespace asyncd::test {
namespace {

using std::chrono::seconds;

class ConfigSnapshot : public ServerTest {};

// max_conns 1000, then a reload to max_conns 1 with a plugin that refuses to start: the
// reload is sent back, and conn is back on max_conns 1000 (four clients at once are all
// served), on two workers again, at log level info again.
TEST_F(ConfigSnapshot, AReloadSentBackPutsEveryProcessOnTheOldConfig) {
    Server scratch("");  // lends its folder to the two copies of the plugin
    std::string a = scratch.dir() + "/a.so", b = scratch.dir() + "/b.so";
    spit(a, read_text(plugin_path("testplug.so")));
    spit(b, read_text(plugin_path("testplug.so")));
    start("workers 2\nmax_workers 4\nmax_conns 1000\nlog_level info\nplugin " + a + "\n");
    std::string conf = server_->config_path();
    std::string text = read_text(conf);
    size_t at = text.find("plugin " + a);
    ASSERT_NE(at, std::string::npos);
    text.replace(at, ("plugin " + a).size(), "plugin " + b);
    for (const char *from : {"max_conns 1000", "workers 2", "log_level info"}) {
        size_t k = text.find(from);
        ASSERT_NE(k, std::string::npos) << from;
        std::string to = std::string(from) == "max_conns 1000" ? "max_conns 1"
                         : std::string(from) == "workers 2"    ? "workers 3"
                                                               : "log_level debug";
        text.replace(k, std::string(from).size(), to);
    }
    spit(conf, text + "plugin.fail_init yes\n");
    ASSERT_EQ(kill(server_->pid(), SIGHUP), 0);
    ASSERT_TRUE(server_->wait_log("going back to the old config", 1, seconds(10)))
        << server_->log();
    ASSERT_TRUE(server_->wait_log("reload: limits now max_conns 1000", 1, seconds(10)))
        << server_->log();
    size_t mark = server_->log().size();
    std::vector<Client> clients(4);
    for (auto &c : clients)
        ASSERT_TRUE(c.connect(server_->port()));
    for (size_t i = 0; i < clients.size(); i++) {
        std::string want = "c" + std::to_string(i);
        EXPECT_EQ(clients[i].call(want), want) << "client " << i << "\n" << server_->log();
    }
    // Back on two workers: every client's WHO names w0 or w1.
    for (auto &c : clients) {
        std::string who = c.call("WHO");
        EXPECT_TRUE(who == "w0" || who == "w1") << who;
    }
    for (auto &c : clients)
        c.close();
    EXPECT_EQ(server_->stop(), 0);
    std::string after = server_->log().substr(mark);
    EXPECT_EQ(after.find("[DEBUG]"), std::string::npos)
        << "back at log level info, nobody logs DEBUG:\n"
        << after;
}

// Without a pid_file line asyncd still writes one (beside its config), so that `asyncd -s`
// always finds it.
TEST_F(ConfigSnapshot, SignalCommandsWorkWithoutAPidFileLine) {
    start("workers 1\nplugin " + plugin_path("testplug.so") + "\n");
    std::string out;
    int rc = run_shell(
        shell_quote(asyncd_bin()) + " -s status -c " + shell_quote(server_->config_path()), &out,
        20);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_NE(out.find(std::to_string(server_->pid())), std::string::npos) << out;
    rc = run_shell(shell_quote(asyncd_bin()) + " -s stop -c " + shell_quote(server_->config_path()),
                   &out, 20);
    EXPECT_EQ(rc, 0) << out;
    EXPECT_EQ(server_->wait_exit(seconds(15)), 0);
}

}  // namespace
}  // namespace asyncd::test
