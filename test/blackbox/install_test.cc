// make install, as an operator sees it: scripts/install.sh (what `make install` runs after
// building) puts the built asyncd, plugin header, example plugins and sources, configs,
// systemd unit and logrotate snippet under a temporary PREFIX; the installed asyncd checks
// the installed config; the unit and the snippet name the installed paths; uninstall takes
// it all away again. No root needed: everything happens in a temporary folder.
#include <ctype.h>
#include <gtest/gtest.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "test/blackbox/harness.h"

namespace asyncd::test {
namespace {

namespace fs = std::filesystem;

std::string slurp(const std::string &path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

bool contains(const std::string &text, const std::string &needle) {
    return text.find(needle) != std::string::npos;
}

std::string real(const std::string &path) {
    char buf[PATH_MAX];
    return realpath(path.c_str(), buf) ? std::string(buf) : std::string();
}

bool is_root(const std::string &dir) {
    return !dir.empty() && fs::exists(dir + "/Makefile") && fs::exists(dir + "/scripts/install.sh");
}

// The repository: the current folder (make test runs the tests there) or a folder above
// it, else a folder above the asyncd binary under test.
std::string repo_root() {
    std::vector<std::string> starts = {real("."), real(asyncd_bin())};
    for (std::string dir : starts) {
        while (!dir.empty()) {
            if (is_root(dir)) return dir;
            size_t slash = dir.rfind('/');
            if (slash == std::string::npos || dir == "/") break;
            dir = slash == 0 ? "/" : dir.substr(0, slash);
        }
    }
    return "";
}

int mode_of(const std::string &path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 ? int(st.st_mode & 07777) : -1;
}

// An @NAME@ placeholder of the templates in etc/ that install did not fill in, or "".
std::string placeholder(const std::string &text) {
    for (size_t at = text.find('@'); at != std::string::npos; at = text.find('@', at + 1)) {
        size_t end = at + 1;
        while (end < text.size() && (isupper((unsigned char)text[end]) || text[end] == '_'))
            end++;
        if (end > at + 1 && end < text.size() && text[end] == '@')
            return text.substr(at, end + 1 - at);
    }
    return "";
}

std::vector<std::string> files_in(const std::string &dir, const std::string &ext = "") {
    std::vector<std::string> out;
    for (const auto &e : fs::directory_iterator(dir)) {
        std::string name = e.path().filename().string();
        if (ext.empty() || e.path().extension() == ext) out.push_back(name);
    }
    return out;
}

struct Installed {
    std::string path;
    int mode;
};

class InstallTest : public ::testing::Test {
  protected:
    void SetUp() override {
        root_ = repo_root();
        ASSERT_FALSE(root_.empty()) << "no repository (Makefile, scripts/install.sh) above "
                                    << real(".") << " or " << asyncd_bin();
        bin_ = real(asyncd_bin());
        ASSERT_FALSE(bin_.empty()) << asyncd_bin() << " not found: run make first";
        plugins_ = root_ + "/build/plugins";
        ASSERT_TRUE(fs::exists(plugins_ + "/echo.so")) << plugins_ << ": run make first";
        const char *env = getenv("TMPDIR");
        std::string base = env && *env && !contains(env, " ") ? env : "/tmp";
        std::string templ = base + "/asyncd-install-test.XXXXXX";
        ASSERT_NE(mkdtemp(&templ[0]), nullptr) << templ;
        tmp_ = templ;
    }

    void TearDown() override {
        std::error_code ec;
        if (!tmp_.empty()) fs::remove_all(tmp_, ec);
    }

    // scripts/install.sh ACTION with the built files and `settings` (NAME=VALUE ...).
    int script(const std::string &action, const std::string &settings, std::string *out) {
        return run_shell("sh " + shell_quote(root_ + "/scripts/install.sh") + " " + action + " " +
                             settings + " ASYNCD=" + shell_quote(bin_) +
                             " PLUGIN_DIR=" + shell_quote(plugins_),
                         out);
    }

    // What install puts under `top` (PREFIX, or DESTDIR+PREFIX) and `etc` (SYSCONFDIR).
    std::vector<Installed> expected(const std::string &top, const std::string &etc) {
        std::vector<Installed> out = {
            {top + "/bin/asyncd", 0755},
            {top + "/bin/asyncd-bench", 0755},
            {top + "/include/asyncd/asyncd_plugin.h", 0644},
            {top + "/lib/pkgconfig/asyncd.pc", 0644},
            {etc + "/asyncd/asyncd.conf", 0644},
            {etc + "/asyncd/resp.conf", 0644},
            {etc + "/asyncd/http.conf", 0644},
            {etc + "/logrotate.d/asyncd", 0644},
            {top + "/lib/systemd/system/asyncd.service", 0644},
        };
        for (const std::string &c : files_in(root_ + "/plugin_api/examples", ".c")) {
            out.push_back({top + "/lib/asyncd/plugins/" + c.substr(0, c.size() - 2) + ".so", 0644});
        }
        for (const std::string &e : files_in(root_ + "/plugin_api/examples")) {
            out.push_back({top + "/share/asyncd/examples/" + e, 0644});
        }
        return out;
    }

    // The folders of asyncd's own that uninstall removes once they are empty.
    std::vector<std::string> own_dirs(const std::string &top, const std::string &etc) {
        return {top + "/include/asyncd", top + "/lib/asyncd", top + "/share/asyncd",
                etc + "/asyncd"};
    }

    std::string root_, bin_, plugins_, tmp_;
};

TEST_F(InstallTest, InstallsChecksAndUninstalls) {
    const std::string prefix = tmp_ + "/prefix";
    const std::string settings = "PREFIX=" + shell_quote(prefix) + " DESTDIR=";
    std::string out;
    ASSERT_EQ(script("install", settings, &out), 0) << out;

    for (const Installed &f : expected(prefix, prefix + "/etc")) {
        EXPECT_TRUE(fs::is_regular_file(f.path)) << f.path << " not installed\n" << out;
        EXPECT_EQ(mode_of(f.path), f.mode) << f.path;
    }
    EXPECT_EQ(slurp(prefix + "/include/asyncd/asyncd_plugin.h"),
              slurp(root_ + "/plugin_api/asyncd_plugin.h"));

    // The example sources build out of the installed tree.
    if (!have_tool("cc")) {
        std::cout << "[   INFO   ] cc not found: the installed examples are not built\n";
    }
    for (const std::string &c : files_in(prefix + "/share/asyncd/examples", ".c")) {
        std::string src = prefix + "/share/asyncd/examples/" + c;
        EXPECT_FALSE(contains(slurp(src), "plugin_api/")) << src;
        if (!have_tool("cc")) continue;
        EXPECT_EQ(run_shell("cc -std=c99 -O2 -fPIC -shared -Wall -Werror -I " +
                                shell_quote(prefix + "/include") + " " + shell_quote(src) + " -o " +
                                shell_quote(tmp_ + "/" + c + ".so"),
                            &out),
                  0)
            << out;
    }
    // And as any C library's users build: the flags from pkg-config.
    if (have_tool("pkg-config") && have_tool("cc")) {
        std::string pc = "PKG_CONFIG_PATH=" + shell_quote(prefix + "/lib/pkgconfig") + " ";
        EXPECT_EQ(run_shell(pc + "pkg-config --cflags asyncd", &out), 0) << out;
        EXPECT_TRUE(contains(out, "-I" + prefix + "/include")) << out;
        std::string echo = prefix + "/share/asyncd/examples/echo.c";
        EXPECT_EQ(
            run_shell("cc $(" + pc + "pkg-config --cflags asyncd) -std=c99 -O2 -fPIC -shared " +
                          shell_quote(echo) + " -o " + shell_quote(tmp_ + "/pc-echo.so"),
                      &out),
            0)
            << out;
    } else {
        std::cout << "[   INFO   ] pkg-config or cc not found: asyncd.pc is not used\n";
    }

    // The installed binary: its help names every option, and it passes -t on every
    // installed config, which names the installed plugins by absolute path.
    const std::string asyncd = prefix + "/bin/asyncd";
    const std::string confdir = prefix + "/etc/asyncd";
    ASSERT_EQ(run_shell(shell_quote(asyncd) + " -h", &out), 0) << out;
    for (const char *opt : {"-c FILE", "-t ", "-s SIGNAL", "-h ", "-v "}) {
        EXPECT_TRUE(contains(out, std::string("\n  ") + opt))
            << "asyncd -h does not list " << opt << ":\n"
            << out;
    }
    for (const char *verb : {"stop", "quit", "reload", "reopen", "status"}) {
        EXPECT_TRUE(contains(out, verb)) << "asyncd -h does not mention -s " << verb;
    }
    EXPECT_EQ(run_shell(shell_quote(asyncd) + " -v", &out), 0) << out;
    for (const char *name : {"asyncd", "resp", "http"}) {
        std::string conf = confdir + "/" + name + ".conf";
        std::string text = slurp(conf);
        EXPECT_TRUE(contains(text, prefix + "/lib/asyncd/plugins/")) << conf << ":\n" << text;
        EXPECT_TRUE(contains(text, "/var/log/asyncd/" + std::string(name) + ".log")) << text;
        EXPECT_TRUE(contains(text, "/run/asyncd/" + std::string(name) + ".pid")) << text;
        EXPECT_FALSE(contains(text, "build/")) << conf << " still names the build tree:\n" << text;
        EXPECT_FALSE(contains(text, "daemon")) << "the unit runs asyncd in the foreground";
        EXPECT_EQ(run_shell(shell_quote(asyncd) + " -t -c " + shell_quote(conf), &out), 0)
            << conf << ":\n"
            << out;
        EXPECT_TRUE(contains(out, "test is successful")) << out;
    }
    EXPECT_TRUE(contains(slurp(confdir + "/asyncd.conf"), prefix + "/lib/asyncd/plugins/echo.so"));

    // The unit runs the installed binary on the installed config, in the foreground.
    const std::string unit_path = prefix + "/lib/systemd/system/asyncd.service";
    const std::string unit = slurp(unit_path);
    const std::string conf = confdir + "/asyncd.conf";
    EXPECT_TRUE(contains(unit, "\nExecStart=" + asyncd + " -c " + conf + "\n")) << unit;
    EXPECT_TRUE(contains(unit, "\nExecStartPre=" + asyncd + " -t -c " + conf + "\n")) << unit;
    EXPECT_TRUE(contains(unit, "\nExecReload=/bin/kill -HUP $MAINPID\n")) << unit;
    for (const char *line :
         {"\nType=simple\n", "\nRestart=on-failure\n", "\nAfter=network.target\n",
          "\nKillMode=mixed\n", "\nLimitNOFILE=", "\nLogsDirectory=asyncd\n",
          "\nRuntimeDirectory=asyncd\n", "\nWantedBy=multi-user.target\n"}) {
        EXPECT_TRUE(contains(unit, line)) << "no " << line << " in\n" << unit;
    }
    ASSERT_EQ(placeholder(slurp(root_ + "/etc/asyncd.service")), "@CONFDIR@");  // the check works
    EXPECT_EQ(placeholder(unit), "") << unit;
    if (!have_tool("systemd-analyze")) {
        std::cout << "[   INFO   ] systemd-analyze not found: the unit is not verified\n";
    } else {
        // A unit that cannot fail tells whether verify works here at all (a container may
        // lack what it needs); only then is its verdict on ours taken.
        std::string probe = tmp_ + "/probe.service";
        std::ofstream(probe) << "[Service]\nExecStart=/bin/true\n";
        if (run_shell("systemd-analyze verify " + shell_quote(probe), &out) != 0) {
            std::cout << "[   INFO   ] systemd-analyze verify fails on a trivial unit here; "
                         "the unit is not verified:\n"
                      << out;
        } else {
            EXPECT_EQ(run_shell("systemd-analyze verify " + shell_quote(unit_path), &out), 0)
                << out;
        }
    }

    // logrotate: the installed log, and a reopen of the running asyncd after rotating.
    const std::string rotate_path = prefix + "/etc/logrotate.d/asyncd";
    const std::string rotate = slurp(rotate_path);
    EXPECT_TRUE(contains(rotate, "/var/log/asyncd/asyncd.log")) << rotate;
    EXPECT_TRUE(contains(rotate, asyncd + " -s reopen -c " + conf + "\n")) << rotate;
    for (const char *word : {"postrotate", "endscript", "missingok", "notifempty", "\n    compress",
                             "delaycompress"}) {
        EXPECT_TRUE(contains(rotate, word)) << "no " << word << " in\n" << rotate;
    }
    EXPECT_EQ(placeholder(rotate), "") << rotate;
    if (have_tool("logrotate")) {
        EXPECT_EQ(run_shell("logrotate -d -s " + shell_quote(tmp_ + "/logrotate.state") + " " +
                                shell_quote(rotate_path),
                            &out),
                  0)
            << out;
    }

    ASSERT_EQ(script("uninstall", settings, &out), 0) << out;
    for (const Installed &f : expected(prefix, prefix + "/etc")) {
        EXPECT_FALSE(fs::exists(f.path)) << f.path << " left by uninstall\n" << out;
    }
    for (const std::string &d : own_dirs(prefix, prefix + "/etc")) {
        EXPECT_FALSE(fs::exists(d)) << d << " left by uninstall\n" << out;
    }
    EXPECT_TRUE(fs::is_directory(prefix + "/bin")) << "uninstall removes only asyncd's folders";
}

// A packager's staged install: the files go under DESTDIR, but what they name is PREFIX
// (and SYSCONFDIR, LOGDIR, RUNDIR as given).
TEST_F(InstallTest, DestdirStagesWhatNamesThePrefix) {
    const std::string stage = tmp_ + "/stage";
    const std::string settings =
        "PREFIX=/opt/asyncd SYSCONFDIR=/etc LOGDIR=/srv/asyncd/log "
        "RUNDIR=/srv/asyncd/run DESTDIR=" +
        shell_quote(stage);
    std::string out;
    ASSERT_EQ(script("install", settings, &out), 0) << out;
    for (const Installed &f : expected(stage + "/opt/asyncd", stage + "/etc")) {
        EXPECT_TRUE(fs::is_regular_file(f.path)) << f.path << " not installed\n" << out;
    }
    std::string unit = slurp(stage + "/opt/asyncd/lib/systemd/system/asyncd.service");
    EXPECT_TRUE(contains(unit, "\nExecStart=/opt/asyncd/bin/asyncd -c /etc/asyncd/asyncd.conf\n"))
        << unit;
    EXPECT_FALSE(contains(unit, stage)) << unit;
    // systemd makes log and pid folders only under /var/log and /run.
    EXPECT_FALSE(contains(unit, "LogsDirectory=")) << unit;
    EXPECT_FALSE(contains(unit, "RuntimeDirectory=")) << unit;
    std::string conf = slurp(stage + "/etc/asyncd/asyncd.conf");
    EXPECT_TRUE(contains(conf, "/opt/asyncd/lib/asyncd/plugins/echo.so\n")) << conf;
    EXPECT_TRUE(contains(conf, "/srv/asyncd/log/asyncd.log\n")) << conf;
    EXPECT_TRUE(contains(conf, "/srv/asyncd/run/asyncd.pid\n")) << conf;
    EXPECT_FALSE(contains(conf, stage)) << conf;
    std::string rotate = slurp(stage + "/etc/logrotate.d/asyncd");
    EXPECT_TRUE(contains(rotate, "/srv/asyncd/log/asyncd.log")) << rotate;
    EXPECT_TRUE(contains(rotate, "/opt/asyncd/bin/asyncd -s reopen -c /etc/asyncd/asyncd.conf"))
        << rotate;

    ASSERT_EQ(script("uninstall", settings, &out), 0) << out;
    for (const Installed &f : expected(stage + "/opt/asyncd", stage + "/etc")) {
        EXPECT_FALSE(fs::exists(f.path)) << f.path << " left by uninstall\n" << out;
    }
}

// An operator's edits to an installed config survive a reinstall and an uninstall.
TEST_F(InstallTest, KeepsAnEditedConfig) {
    const std::string prefix = tmp_ + "/prefix";
    const std::string settings = "PREFIX=" + shell_quote(prefix);
    const std::string conf = prefix + "/etc/asyncd/asyncd.conf";
    std::string out;
    ASSERT_EQ(script("install", settings, &out), 0) << out;
    std::ofstream(conf, std::ios::app) << "workers 4\n";
    const std::string edited = slurp(conf);

    ASSERT_EQ(script("install", settings, &out), 0) << out;
    EXPECT_TRUE(contains(out, "keeping " + conf)) << out;
    EXPECT_EQ(slurp(conf), edited);

    ASSERT_EQ(script("uninstall", settings, &out), 0) << out;
    EXPECT_EQ(slurp(conf), edited) << out;
    EXPECT_FALSE(fs::exists(prefix + "/etc/asyncd/resp.conf")) << out;
    EXPECT_FALSE(fs::exists(prefix + "/bin/asyncd")) << out;
}

}  // namespace
}  // namespace asyncd::test
