/* The plugin of the lifecycle tests: it echoes every packet and writes what asyncd called it
 * with, so that the tests can hold asyncd to its promises about the plugin's callbacks
 * (every link_up_cli has its link_down_cli in the process that saw it, each callback is
 * timed on its own, link_up_cli always gets the peer).
 *
 * plugin.event_log FILE: one line per event, appended with one write each (O_APPEND), so
 * that the lines of every process that ran the plugin interleave whole:
 *   init PID INDEX / fini PID INDEX
 *   up PID CONN ADDR:PORT / down PID CONN REASON      (CONN in hex)
 *   timer PID                                         (one per timer callback)
 *   flood start PID CONN N / flood end PID CONN
 *
 * Magic payloads (the bytes after the 4-byte length prefix):
 *   "PEER"      answer the ADDR:PORT link_up_cli was given for this connection ("none"
 *               if no link_up_cli came for it in this process)
 *   "COUNT"     answer asyncd_worker_count()
 *   "WHO"       answer "w<worker index>"
 *   "TIMERS N"  add N timers, all due in 50 ms; answer "timers N"
 *   "FLOOD N"   send N replies of 60 KiB each (valid frames "flood I ..."), then "done"
 *   "LEAK N"    allocate and touch N MiB, never freed; answer "leaked N"
 *
 * Settings:
 *   plugin.down_us N     sleep N microseconds in every link_down_cli
 *   plugin.timer_us N    sleep N microseconds in every timer callback
 *   plugin.delay_us N    sleep N microseconds in every packet's callback (a slow handler)
 *   plugin.flood_gate F  FLOOD waits (at most 10 s) for file F to exist after its "flood
 *                        start" line and before its first reply, so that a test can
 *                        arrange what conn is doing before the replies are sent
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugin_api/asyncd_plugin.h"
#include "test/plugins/plugin_util.h"

#define PEER_SLOTS 4096
#define FLOOD_FRAME (60 << 10)

struct peer_entry {
    asyncd_conn_t conn; /* 0: free */
    char text[64];
};

static long g_down_us, g_timer_us, g_delay_us;
static const char *g_flood_gate;
static struct peer_entry g_peers[PEER_SLOTS];
static void *volatile g_leaked; /* keeps the compiler from dropping the leak */

static long setting(const char *key) {
    const char *v = asyncd_config(key);
    return v ? atol(v) : 0;
}

static void put_be32(char *p, uint32_t v) {
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
}

/* Open addressing on the connection id; a slot is freed by link_down_cli. */
static struct peer_entry *peer_slot(asyncd_conn_t conn, int insert) {
    size_t h = (size_t)((conn * 0x9e3779b97f4a7c15ull) >> 52) % PEER_SLOTS;
    for (size_t i = 0; i < PEER_SLOTS; i++) {
        struct peer_entry *e = &g_peers[(h + i) % PEER_SLOTS];
        if (e->conn == conn) return e;
        if (e->conn == 0) return insert ? e : NULL;
    }
    return NULL;
}

static void peer_forget(asyncd_conn_t conn) {
    struct peer_entry *e = peer_slot(conn, 0);
    if (!e) return;
    /* Re-insert the rest of the cluster, so that lookups past the hole still work. */
    size_t at = (size_t)(e - g_peers);
    e->conn = 0;
    for (size_t i = (at + 1) % PEER_SLOTS; g_peers[i].conn; i = (i + 1) % PEER_SLOTS) {
        struct peer_entry moved = g_peers[i];
        g_peers[i].conn = 0;
        struct peer_entry *to = peer_slot(moved.conn, 1);
        if (to) *to = moved;
    }
}

int init_service(int worker_index) {
    const char *path = asyncd_config("event_log");
    g_down_us = setting("down_us");
    g_timer_us = setting("timer_us");
    g_delay_us = setting("delay_us");
    g_flood_gate = asyncd_config("flood_gate");
    if (path) {
        g_log_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (g_log_fd < 0) return 1;
    }
    event("init %d %d", (int)getpid(), worker_index);
    return 0;
}

void fini_service(int worker_index) {
    event("fini %d %d", (int)getpid(), worker_index);
}

void link_up_cli(asyncd_conn_t conn, const asyncd_peer_t *peer) {
    struct peer_entry *e = peer_slot(conn, 1);
    char text[64];
    snprintf(text, sizeof text, "%s:%u", peer->addr, (unsigned)peer->port);
    if (e) {
        e->conn = conn;
        memcpy(e->text, text, sizeof e->text);
    }
    event("up %d %llx %s", (int)getpid(), (unsigned long long)conn, text);
}

void link_down_cli(asyncd_conn_t conn, int reason) {
    if (g_down_us > 0) usleep((useconds_t)g_down_us);
    peer_forget(conn);
    event("down %d %llx %d", (int)getpid(), (unsigned long long)conn, reason);
}

static void on_timer(void *arg) {
    (void)arg;
    if (g_timer_us > 0) usleep((useconds_t)g_timer_us);
    event("timer %d", (int)getpid());
}

/* The packet's payload is `word`, or `word` and a number (then *n is set). */
static int is(const char *body, size_t len, const char *word, long *n) {
    size_t w = strlen(word);
    if (len < w || memcmp(body, word, w) != 0) return 0;
    if (!n) return len == w;
    if (len < w + 2 || len > w + 12 || body[w] != ' ') return 0;
    char digits[16];
    memcpy(digits, body + w + 1, len - w - 1);
    digits[len - w - 1] = 0;
    *n = atol(digits);
    return 1;
}

static int flood(asyncd_conn_t conn, long count) {
    static char buf[FLOOD_FRAME];
    event("flood start %d %llx %ld", (int)getpid(), (unsigned long long)conn, count);
    if (g_flood_gate) {
        for (int i = 0; i < 10000 && access(g_flood_gate, F_OK) != 0; i++)
            usleep(1000);
    }
    memset(buf, 'f', sizeof buf);
    put_be32(buf, (uint32_t)sizeof buf);
    for (long i = 0; i < count; i++) {
        int n = snprintf(buf + 4, 32, "flood %ld ", i);
        buf[4 + n] = 'f'; /* snprintf's terminator */
        if (net_send_cli(conn, buf, sizeof buf) != 0) return -1;
    }
    event("flood end %d %llx", (int)getpid(), (unsigned long long)conn);
    return reply(conn, "done");
}

int proc_pkg_cli(asyncd_conn_t conn, const void *pkg, size_t len) {
    const char *body = (const char *)pkg + 4;
    size_t blen = len - 4;
    char text[96];
    long n = 0;
    if (g_delay_us > 0) usleep((useconds_t)g_delay_us);
    if (is(body, blen, "PEER", NULL)) {
        struct peer_entry *e = peer_slot(conn, 0);
        return reply(conn, e ? e->text : "none");
    }
    if (is(body, blen, "COUNT", NULL)) {
        snprintf(text, sizeof text, "%d", asyncd_worker_count());
        return reply(conn, text);
    }
    if (is(body, blen, "WHO", NULL)) {
        snprintf(text, sizeof text, "w%d", asyncd_worker_index());
        return reply(conn, text);
    }
    if (is(body, blen, "TIMERS", &n)) {
        for (long i = 0; i < n; i++)
            asyncd_timer_add(50, on_timer, NULL);
        snprintf(text, sizeof text, "timers %ld", n);
        return reply(conn, text);
    }
    if (is(body, blen, "FLOOD", &n)) return flood(conn, n);
    if (is(body, blen, "LEAK", &n)) {
        size_t bytes = (size_t)n << 20;
        char *p = malloc(bytes);
        if (p) memset(p, 1, bytes); /* never freed: that is the point */
        g_leaked = p;
        snprintf(text, sizeof text, "leaked %ld", n);
        return reply(conn, text);
    }
    return net_send_cli(conn, pkg, len) == 0 ? 0 : -1;
}
