/* A plugin whose workers die on cue, for the tests of what asyncd promises when they do. It
 * echoes every packet, and on magic payloads (the bytes after the 4-byte length prefix):
 *   "REPLY+CRASH"      echo it, then abort(): the reply is written but the batch is not done
 *   "REPLY+HANG"       echo it, then spin for ever (until handler_timeout kills the worker)
 *   "REPLY+CRASHONCE"  echo it, then abort() unless the file plugin.marker names exists; the
 *                      file is made first, so the worker that takes over answers and lives
 *   "WHO"              answer "w<worker index>"
 *   "WHERE"            answer the file this plugin was loaded from (which copy is answering)
 * Settings: plugin.fail_init_worker N makes init_service refuse on worker N only;
 * plugin.crash_init yes makes it abort; plugin.exit_init yes makes it _exit(0) (a worker that
 * exits before it is ready); plugin.delay_us N sleeps N microseconds in every proc_pkg_cli
 * before anything else (a slow handler). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugin_api/asyncd_plugin.h"
#include "test/plugins/plugin_util.h"

static long g_delay_us;

static int yes(const char *key) {
    const char *v = asyncd_config(key);
    return v && strcmp(v, "yes") == 0;
}

int init_service(int worker_index) {
    const char *fail = asyncd_config("fail_init_worker");
    const char *delay = asyncd_config("delay_us");
    if (yes("crash_init")) abort();
    if (yes("exit_init")) _exit(0);
    if (fail && atoi(fail) == worker_index) {
        asyncd_log(ASYNCD_LOG_ERROR, "dies: worker %d refuses to start (fail_init_worker)",
                   worker_index);
        return 1;
    }
    if (delay) g_delay_us = atol(delay);
    return 0;
}

static int is(const void *pkg, size_t len, const char *word) {
    size_t n = strlen(word);
    return len == n + 4 && memcmp((const char *)pkg + 4, word, n) == 0;
}

/* True the first time any worker asks: the marker file did not exist and now does. */
static int first_time(void) {
    const char *marker = asyncd_config("marker");
    int fd;
    if (!marker) return 1;
    fd = open(marker, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return 0;
    close(fd);
    return 1;
}

int proc_pkg_cli(asyncd_conn_t conn, const void *pkg, size_t len) {
    char text[64];
    if (g_delay_us > 0) usleep((useconds_t)g_delay_us);
    if (is(pkg, len, "WHO")) {
        snprintf(text, sizeof text, "w%d", asyncd_worker_index());
        return reply(conn, text);
    }
    if (is(pkg, len, "WHERE")) {
        Dl_info info;
        if (!dladdr((void *)proc_pkg_cli, &info) || !info.dli_fname) return reply(conn, "?");
        return reply(conn, info.dli_fname);
    }
    if (net_send_cli(conn, pkg, len) != 0) return -1;
    if (is(pkg, len, "REPLY+CRASH")) abort();
    if (is(pkg, len, "REPLY+CRASHONCE") && first_time()) abort();
    if (is(pkg, len, "REPLY+HANG")) {
        for (;;) {
            volatile int spin = 0;
            (void)spin;
        }
    }
    return 0;
}
