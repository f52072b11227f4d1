/* A test plugin with the quirks of real plugins that asyncd must bound. It echoes every
 * packet, and:
 *   plugin.init_alloc_mib N   init_service allocates and touches N MiB that it keeps: a
 *                             plugin whose start-up size is large (tables, caches)
 *   plugin.first_alloc_mib N  the first proc_pkg_cli of a process allocates and touches N MiB
 *                             that it keeps: a plugin that grows on its first request
 *   plugin.delay_us N         every proc_pkg_cli sleeps N microseconds first (a slow handler)
 *
 * get_pkg_len (with `frame plugin`) reads a 4-byte big-endian length that counts itself, as
 * len32be does. A packet whose payload starts with "FLAKY" breaks get_pkg_len's contract of
 * being a pure function of the bytes: asked again about the same whole packet at the same
 * place in the same connection's stream, it answers 8 instead of the length every other
 * time. (The switch is in the packet, not in a plugin.* key: get_pkg_len runs in the conn
 * process, where asyncd_config has no worker to answer for.) A FLAKY packet's first 16 bytes
 * must differ from those of the packet before it on its connection (a sequence number does),
 * so that "the same place" is told from "the next packet". */
#define _DEFAULT_SOURCE /* usleep */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugin_api/asyncd_plugin.h"

static long g_first_alloc_mib;
static long g_delay_us;
static int g_first_done;
static void *volatile g_kept_init; /* kept for the life of the process: that is the point */
static void *volatile g_kept_first;

/* Allocates n MiB and writes every page, so that all of it is resident. */
static void *touch_mib(long n) {
    size_t bytes = (size_t)n << 20;
    char *p = malloc(bytes);
    if (p) memset(p, 0x5a, bytes);
    return p;
}

static long config_long(const char *key) {
    const char *v = asyncd_config(key);
    return v ? atol(v) : 0;
}

int init_service(int worker_index) {
    long init_mib = config_long("init_alloc_mib");
    (void)worker_index;
    g_first_alloc_mib = config_long("first_alloc_mib");
    g_delay_us = config_long("delay_us");
    if (init_mib > 0) {
        g_kept_init = touch_mib(init_mib);
        if (!g_kept_init) return 1;
    }
    return 0;
}

int proc_pkg_cli(asyncd_conn_t conn, const void *pkg, size_t len) {
    if (g_delay_us > 0) usleep((useconds_t)g_delay_us);
    if (!g_first_done) {
        g_first_done = 1;
        if (g_first_alloc_mib > 0) g_kept_first = touch_mib(g_first_alloc_mib);
    }
    return net_send_cli(conn, pkg, len) == 0 ? 0 : -1;
}

/* What get_pkg_len last saw whole for a connection (conn runs it on one thread). */
struct seen {
    asyncd_conn_t conn;
    unsigned char head[16];
    unsigned long asked; /* times asked about this packet beyond the first */
};
static struct seen g_seen[256];

static int flaky_answer(asyncd_conn_t conn, const unsigned char *data, int len) {
    struct seen *s = &g_seen[(conn * 0x9e3779b97f4a7c15ull) >> 56];
    if (s->conn == conn && memcmp(s->head, data, sizeof s->head) == 0) {
        s->asked++;
    } else {
        s->conn = conn;
        memcpy(s->head, data, sizeof s->head);
        s->asked = 0;
    }
    return s->asked % 2 ? 8 : len;
}

int get_pkg_len(asyncd_conn_t conn, const void *data, size_t avail) {
    const unsigned char *p = data;
    unsigned long n;
    if (avail < 4) return 0;
    n = ((unsigned long)p[0] << 24) | ((unsigned long)p[1] << 16) | ((unsigned long)p[2] << 8) |
        (unsigned long)p[3];
    if (n < 4 || n > 0x7fffffffUL) return -1;
    if (n >= 16 && avail >= n && memcmp(p + 4, "FLAKY", 5) == 0) {
        return flaky_answer(conn, p, (int)n);
    }
    return (int)n;
}
