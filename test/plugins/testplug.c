/* The test plugin of the black-box tests. It echoes, and does more on magic payloads (the
 * bytes after the 4-byte length prefix):
 *   "HOLD"   remember this connection; answer "held"
 *   "FIRE"   send "late" to the held connection (which may be gone), answer "fired"
 *   "DOWNS"  answer the number of link_down_cli calls this worker has had
 *   "WHO"    answer "w<worker index>"
 *   "WHERE"  answer the file this plugin was loaded from (which build is answering)
 *   "CLOSE"  answer "bye" and close
 *   "CRASH"  abort()
 *   "HANG"   loop for ever
 *   "SLOW N" sleep N ms, then echo
 * With plugin.event_log FILE it appends one line per callback:
 *   up CONN PEER / pkg CONN PAYLOAD-PREFIX / down CONN REASON
 * plugin.fail_init yes makes init_service refuse; plugin.crash_init yes makes it abort;
 * plugin.leak_kib N leaks N KiB (touched) per packet; plugin.delay_us N sleeps N microseconds
 * in every packet's callback before it does anything else (a slow handler). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugin_api/asyncd_plugin.h"
#include "test/plugins/plugin_util.h"

static asyncd_conn_t g_held;
static unsigned long g_downs;
static long g_leak_kib;
static long g_delay_us;
static void *volatile g_leaked; /* keeps the compiler from dropping the leak */

int init_service(int worker_index) {
    const char *path = asyncd_config("event_log");
    const char *fail = asyncd_config("fail_init");
    const char *crash = asyncd_config("crash_init");
    const char *leak = asyncd_config("leak_kib");
    const char *delay = asyncd_config("delay_us");
    if (crash && strcmp(crash, "yes") == 0) abort();
    if (leak) g_leak_kib = atol(leak);
    if (delay) g_delay_us = atol(delay);
    if (fail && strcmp(fail, "yes") == 0) {
        asyncd_log(ASYNCD_LOG_ERROR, "testplug: refusing to start (fail_init)");
        return 1;
    }
    if (path) {
        g_log_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (g_log_fd < 0) return 1;
    }
    asyncd_log(ASYNCD_LOG_DEBUG, "testplug: worker %d of %d", worker_index, asyncd_worker_count());
    return 0;
}

void link_up_cli(asyncd_conn_t conn, const asyncd_peer_t *peer) {
    event("up %llx %s:%u", (unsigned long long)conn, peer->addr, (unsigned)peer->port);
}

void link_down_cli(asyncd_conn_t conn, int reason) {
    g_downs++;
    event("down %llx %d", (unsigned long long)conn, reason);
}

static int is(const void *pkg, size_t len, const char *word) {
    size_t n = strlen(word);
    return len == n + 4 && memcmp((const char *)pkg + 4, word, n) == 0;
}

int proc_pkg_cli(asyncd_conn_t conn, const void *pkg, size_t len) {
    char text[64];
    size_t body = len - 4 < 32 ? len - 4 : 32;
    if (g_delay_us > 0) usleep((useconds_t)g_delay_us);
    memcpy(text, (const char *)pkg + 4, body);
    text[body] = 0;
    for (size_t i = 0; i < body; i++) {
        if (text[i] < 32 || text[i] > 126) text[i] = '.';
    }
    event("pkg %llx %s", (unsigned long long)conn, text);
    if (is(pkg, len, "HOLD")) {
        g_held = conn;
        return reply(conn, "held");
    }
    if (is(pkg, len, "FIRE")) {
        reply(g_held, "late");
        return reply(conn, "fired");
    }
    if (is(pkg, len, "DOWNS")) {
        snprintf(text, sizeof text, "%lu", g_downs);
        return reply(conn, text);
    }
    if (is(pkg, len, "WHO")) {
        snprintf(text, sizeof text, "w%d", asyncd_worker_index());
        return reply(conn, text);
    }
    if (is(pkg, len, "WHERE")) {
        Dl_info info;
        if (!dladdr((void *)proc_pkg_cli, &info) || !info.dli_fname) return reply(conn, "?");
        return reply(conn, info.dli_fname);
    }
    if (is(pkg, len, "CLOSE")) {
        reply(conn, "bye");
        return 1;
    }
    if (is(pkg, len, "CRASH")) abort();
    if (is(pkg, len, "HANG")) {
        for (;;) {
            volatile int spin = 0;
            (void)spin;
        }
    }
    if (len > 9 && memcmp((const char *)pkg + 4, "SLOW ", 5) == 0) {
        usleep((useconds_t)atoi(text + 5) * 1000);
    }
    if (g_leak_kib > 0) {
        char *p = malloc((size_t)g_leak_kib << 10);
        if (p) memset(p, 1, (size_t)g_leak_kib << 10); /* never freed: that is the point */
        g_leaked = p;
    }
    return net_send_cli(conn, pkg, len) == 0 ? 0 : -1;
}

void fini_service(int worker_index) {
    event("fini %d", worker_index);
    if (g_log_fd >= 0) close(g_log_fd);
}
