// asyncd: the command line.
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "conn/discovery.h"
#include "core/config.h"
#include "core/log.h"
#include "core/plugin.h"
#include "core/stats.h"
#include "main/pidfile.h"
#include "main/proctitle.h"
#include "main/supervisor.h"

namespace {

constexpr const char *kDefaultConfig = "etc/asyncd.conf";
constexpr const char *kVersion = "0.1.0";

void usage(FILE *out) {
    fprintf(out,
            "usage: asyncd [-c FILE] [-t] [-s SIGNAL [--json]] [-h] [-v]\n"
            "  -c FILE     the config file (default %s)\n"
            "  -t          check the config (and that the plugin loads), then exit 0 or 1\n"
            "  -s SIGNAL   tell the asyncd running with FILE's pid_file:\n"
            "                stop    stop now, answering what is in the rings (SIGTERM)\n"
            "                quit    stop accepting, let clients finish (SIGQUIT)\n"
            "                reload  re-read the config and apply it (SIGHUP)\n"
            "                reopen  reopen the log file, after logrotate (SIGUSR1)\n"
            "                status  say whether it runs, and its processes\n"
            "                        (--json: the same as one JSON object, for scripts)\n"
            "                top     rates, workers and nodes, a screen a second, until\n"
            "                        Ctrl-C (--count N: N screens, then exit)\n"
            "  -h          this help\n"
            "  -v          the version and plugin ABI\n"
            "asyncd runs in the foreground and logs to stderr unless the config says `daemon\n"
            "yes` (which needs a log_file) or log_file says otherwise. SIGTERM or SIGINT stops\n"
            "it: conn stops taking input, workers answer what is in their rings and call\n"
            "fini_service, conn writes the answers, all exit.\n",
            kDefaultConfig);
}

std::string read_text(const std::string &path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Fields of /proc/PID/stat after the command name (field 3 is the state).
std::vector<std::string> stat_fields(pid_t pid) {
    std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
    std::vector<std::string> out;
    size_t rp = stat.rfind(')');
    if (rp == std::string::npos) return out;
    std::istringstream rest(stat.substr(rp + 2));
    std::string f;
    while (rest >> f)
        out.push_back(f);
    return out;
}

long rss_kib(pid_t pid) {
    std::string s = read_text("/proc/" + std::to_string(pid) + "/status");
    size_t at = s.find("VmRSS:");
    return at == std::string::npos ? 0 : atol(s.c_str() + at + 6);
}

std::string comm_of(pid_t pid) {
    std::string c = read_text("/proc/" + std::to_string(pid) + "/comm");
    while (!c.empty() && c.back() == '\n')
        c.pop_back();
    return c;
}

// -s status: the running instance's processes, from /proc.
int print_status(pid_t pid, const std::string &config, bool json) {
    std::vector<std::string> f = stat_fields(pid);
    double up = 0;
    if (f.size() > 19) {
        double boot_s = atof(read_text("/proc/uptime").c_str());
        up = boot_s - atof(f[19].c_str()) / double(sysconf(_SC_CLK_TCK));
    }
    long secs = long(up);
    std::vector<pid_t> procs = {pid};
    if (DIR *d = opendir("/proc")) {
        while (struct dirent *e = readdir(d)) {
            pid_t p = pid_t(atoi(e->d_name));
            if (p <= 0) continue;
            std::vector<std::string> pf = stat_fields(p);
            if (pf.size() > 1 && atoi(pf[1].c_str()) == pid) procs.push_back(p);
        }
        closedir(d);
    }
    std::string err;
    const asyncd::Stats *stats = asyncd::map_stats(pid, &err);
    if (json) {
        // One object: the processes, then the counters (null when they cannot be mapped).
        printf("{\"pid\": %d, \"config\": \"%s\", \"processes\": [", int(pid),
               asyncd::json_escape(config.c_str()).c_str());
        for (size_t i = 0; i < procs.size(); i++) {
            printf("%s{\"name\": \"%s\", \"pid\": %d, \"rss_kib\": %ld}", i ? ", " : "",
                   asyncd::json_escape(comm_of(procs[i]).c_str()).c_str(), int(procs[i]),
                   rss_kib(procs[i]));
        }
        std::string counters = stats ? asyncd::format_status_json(*stats) : "null\n";
        printf("], \"counters\": %s}\n", counters.substr(0, counters.size() - 1).c_str());
        return 0;
    }
    printf("asyncd is running: pid %d, up %ldd %02ld:%02ld:%02ld, config %s\n", int(pid),
           secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60, config.c_str());
    printf("%-16s %8s %10s\n", "process", "pid", "rss");
    for (pid_t p : procs) {
        printf("%-16s %8d %7.1f MiB\n", comm_of(p).c_str(), int(p), double(rss_kib(p)) / 1024);
    }
    if (!stats) {
        fprintf(stderr, "asyncd: no counters: %s\n", err.c_str());
        return 0;
    }
    fputs(asyncd::format_status(*stats).c_str(), stdout);
    return 0;
}

// -s top: a screen a second of rates (from two reads of the counters) until Ctrl-C, or
// `count` screens.
int run_top(pid_t pid, long count) {
    std::string err;
    const asyncd::Stats *stats = asyncd::map_stats(pid, &err);
    if (!stats) {
        fprintf(stderr, "asyncd: no counters: %s\n", err.c_str());
        return 1;
    }
    bool tty = isatty(1);
    asyncd::TopSample before = asyncd::top_sample(*stats);
    for (long i = 0; count <= 0 || i < count; i++) {
        usleep(1000000);
        if (kill(pid, 0) != 0) {
            fprintf(stderr, "asyncd: pid %d is gone\n", int(pid));
            return 1;
        }
        asyncd::TopSample now = asyncd::top_sample(*stats);
        std::string screen = asyncd::format_top(*stats, before, now);
        if (tty) fputs("\033[H\033[2J", stdout);  // one screen, redrawn, as top does
        fputs(screen.c_str(), stdout);
        if (!tty) fputs("\n", stdout);
        fflush(stdout);
        before = now;
    }
    return 0;
}

// -s SIGNAL: finds the running asyncd by the config's pid_file and signals it.
int send_signal(const asyncd::Config &cfg, const std::string &what, bool json, long count) {
    struct Verb {
        const char *name;
        int sig;
    } verbs[] = {{"stop", SIGTERM},   {"quit", SIGQUIT}, {"reload", SIGHUP},
                 {"reopen", SIGUSR1}, {"status", 0},     {"top", 0}};
    const Verb *verb = nullptr;
    for (const Verb &v : verbs) {
        if (what == v.name) verb = &v;
    }
    if (!verb) {
        fprintf(stderr, "asyncd: -s wants stop, quit, reload, reopen, status or top, got '%s'\n",
                what.c_str());
        return 1;
    }
    if (cfg.pid_file.empty()) {
        fprintf(stderr, "asyncd: %s has no pid_file, so -s cannot find the running asyncd\n",
                cfg.path.c_str());
        return 1;
    }
    std::string why;
    pid_t pid = asyncd::running_pid(cfg.pid_file, &why);
    if (pid == 0) {
        fprintf(stderr, "asyncd: %s\n", why.c_str());
        return what == "status" ? 3 : 1;  // 3: "not running", as init scripts expect
    }
    if (what == "top") return run_top(pid, count);
    if (!verb->sig) return print_status(pid, cfg.path, json);
    if (kill(pid, verb->sig) != 0) {
        fprintf(stderr, "asyncd: kill(%d, %s): %s\n", int(pid), strsignal(verb->sig),
                strerror(errno));
        return 1;
    }
    return 0;
}

// -t: everything a start would check before forking, plus loading the plugin.
int test_config(const asyncd::Config &cfg) {
    asyncd::Plugin plugin;
    std::string err;
    if (!plugin.load(cfg.plugin, &err)) {
        fprintf(stderr, "asyncd: %s\n", err.c_str());
        return 1;
    }
    if (cfg.frame == asyncd::FrameMode::kPlugin && !plugin.exports().get_pkg_len) {
        fprintf(stderr, "asyncd: %s: frame plugin needs get_pkg_len, which %s does not export\n",
                cfg.path.c_str(), cfg.plugin.c_str());
        return 1;
    }
    if (!asyncd::conn::check_discovery_module(cfg, &err)) {
        fprintf(stderr, "asyncd: %s: %s\n", cfg.path.c_str(), err.c_str());
        return 1;
    }
    printf("asyncd: the configuration file %s syntax is ok\n", cfg.path.c_str());
    printf("asyncd: configuration file %s test is successful\n", cfg.path.c_str());
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    std::string config_path = kDefaultConfig;
    bool test_only = false;
    std::string signal_name;
    bool json = false;
    long count = 0;
    int opt;
    static const struct option longs[] = {{"json", no_argument, nullptr, 'j'},
                                          {"count", required_argument, nullptr, 'n'},
                                          {nullptr, 0, nullptr, 0}};
    while ((opt = getopt_long(argc, argv, "c:ts:hv", longs, nullptr)) != -1) {
        switch (opt) {
            case 'j':
                json = true;
                break;
            case 'n': {
                char *end = nullptr;
                count = strtol(optarg, &end, 10);
                if (!*optarg || *end || count < 1) {
                    fprintf(stderr,
                            "asyncd: --count takes a number of screens, 1 or more, got '%s'\n",
                            optarg);
                    return 2;
                }
                break;
            }
            case 'c':
                config_path = optarg;
                break;
            case 't':
                test_only = true;
                break;
            case 's':
                signal_name = optarg;
                break;
            case 'h':
                usage(stdout);
                return 0;
            case 'v':
                printf("asyncd %s (plugin ABI %d)\n", kVersion, ASYNCD_ABI_VERSION);
                return 0;
            default:
                usage(stderr);
                return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "asyncd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 1;
    }
    asyncd::Config cfg;
    std::string err;
    if (!asyncd::load_config(config_path, &cfg, &err)) {
        fprintf(stderr, "asyncd: %s\n", err.c_str());
        return 1;
    }
    if (json && signal_name != "status") {
        fprintf(stderr, "asyncd: --json goes with -s status\n");
        return 1;
    }
    if (!signal_name.empty()) return send_signal(cfg, signal_name, json, count);
    if (test_only) return test_config(cfg);
    if (!asyncd::conn::check_discovery_module(cfg, &err)) {
        fprintf(stderr, "asyncd: %s: %s\n", cfg.path.c_str(), err.c_str());
        return 1;
    }

    signal(SIGPIPE, SIG_IGN);
    asyncd::Log log;
    if (!log.open(cfg.log_file, cfg.log_level, &err)) {
        fprintf(stderr, "asyncd: log_file: %s\n", err.c_str());
        return 1;
    }
    log.set_role("sup", -1);
    // The pid file is locked before detaching, so that "already running" reaches the
    // terminal; the lock goes with the open file into the daemon.
    asyncd::PidFile pid_file;
    if (!cfg.pid_file.empty() && !pid_file.lock(cfg.pid_file, &err)) {
        fprintf(stderr, "asyncd: %s\n", err.c_str());
        return 1;
    }
    if (cfg.daemon && daemon(1, 0) != 0) {
        fprintf(stderr, "asyncd: daemon: %s\n", strerror(errno));
        return 1;
    }
    if (pid_file.fd() >= 0 && !pid_file.write_pid(&err)) {
        log.write(asyncd::LogLevel::kError, "%s", err.c_str());
        return 1;
    }
    asyncd::proctitle_init(argc, argv);
    std::string title = "asyncd: supervisor -c " + config_path;
    asyncd::proctitle_set(title.c_str(), "asyncd-sup");
    asyncd::Supervisor supervisor(cfg, &log);
    supervisor.set_pid_fd(pid_file.fd());
    int rc = supervisor.run();
    pid_file.release();
    return rc;
}
