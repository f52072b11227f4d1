// asyncd: the command line.
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <string>

#include "main/config.h"
#include "main/log.h"
#include "main/proctitle.h"
#include "main/supervisor.h"
#include "work/plugin.h"

namespace {

constexpr const char *kDefaultConfig = "etc/asyncd.conf";
constexpr const char *kVersion = "0.1.0";

void usage(FILE *out) {
    fprintf(out,
            "usage: asyncd [-c FILE] [-t] [-h] [-v]\n"
            "  -c FILE   the config file (default %s)\n"
            "  -t        check the config (and that the plugin loads), then exit 0 or 1\n"
            "  -h        this help\n"
            "  -v        the version and plugin ABI\n"
            "asyncd runs in the foreground and logs to stderr unless log_file says otherwise.\n"
            "SIGTERM or SIGINT stops it cleanly: conn stops taking input, workers answer what\n"
            "is in their rings and call fini_service, conn writes the answers, all exit.\n",
            kDefaultConfig);
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
    printf("asyncd: the configuration file %s syntax is ok\n", cfg.path.c_str());
    printf("asyncd: configuration file %s test is successful\n", cfg.path.c_str());
    return 0;
}

}  // namespace

int main(int argc, char **argv) {
    std::string config_path = kDefaultConfig;
    bool test_only = false;
    int opt;
    while ((opt = getopt(argc, argv, "c:thv")) != -1) {
        switch (opt) {
            case 'c':
                config_path = optarg;
                break;
            case 't':
                test_only = true;
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
    if (test_only) return test_config(cfg);

    signal(SIGPIPE, SIG_IGN);
    asyncd::Log log;
    if (!log.open(cfg.log_file, cfg.log_level, &err)) {
        fprintf(stderr, "asyncd: log_file: %s\n", err.c_str());
        return 1;
    }
    log.set_role("sup", -1);
    asyncd::proctitle_init(argc, argv);
    std::string title = "asyncd: supervisor -c " + config_path;
    asyncd::proctitle_set(title.c_str(), "asyncd-sup");
    asyncd::Supervisor supervisor(cfg, &log);
    return supervisor.run();
}
