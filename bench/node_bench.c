/* The cluster benchmark's plugin, on both nodes. As the callee it answers service "echo"
 * with the message and counts what service "sink" is sent ("count" answers that count and
 * resets it). As the caller it is driven by one client command (a len32be frame):
 *
 *   run NODE K SIZE MS call   keeps K node_calls of SIZE bytes to NODE's echo in flight for
 *                             MS milliseconds
 *   run NODE K SIZE MS send   node_sends K messages of SIZE bytes to NODE's sink per loop
 *                             turn (a 0 ms timer) for MS milliseconds, then asks NODE for its
 *                             count
 *
 * and answers "done N ERRORS P50_NS P99_NS ELAPSED_NS" (for send: N is what arrived, ERRORS
 * what node_send refused). Latency is from node_call to its callback, on asyncd_now_ms()'s
 * clock's finer sibling (CLOCK_MONOTONIC). */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plugin_api/asyncd_plugin.h"

#define MAX_SAMPLES (4u << 20)

static unsigned long long sink_count;

static struct {
    int running, sending;
    asyncd_conn_t client;
    char node[64];
    unsigned k, size;
    uint64_t start_ns, end_ns;
    unsigned char *msg;
    uint64_t *sent_ns; /* per slot: when its call went */
    uint64_t *lat;     /* samples */
    size_t nlat;
    unsigned long long done, errors, in_flight;
} b;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void answer(const char *text) {
    size_t n = strlen(text), total = n + 4;
    unsigned char head[4] = {(unsigned char)(total >> 24), (unsigned char)(total >> 16),
                             (unsigned char)(total >> 8), (unsigned char)total};
    net_send_cli(b.client, head, 4);
    net_send_cli(b.client, text, n);
}

static int cmp_u64(const void *x, const void *y) {
    uint64_t a = *(const uint64_t *)x, c = *(const uint64_t *)y;
    return a < c ? -1 : a > c;
}

static void finish(unsigned long long n, uint64_t elapsed) {
    char text[160];
    uint64_t p50 = 0, p99 = 0;
    if (b.nlat) {
        qsort(b.lat, b.nlat, sizeof *b.lat, cmp_u64);
        p50 = b.lat[b.nlat / 2];
        p99 = b.lat[(size_t)((double)b.nlat * 0.99)];
    }
    snprintf(text, sizeof text, "done %llu %llu %llu %llu %llu", n, b.errors,
             (unsigned long long)p50, (unsigned long long)p99, (unsigned long long)elapsed);
    answer(text);
    b.running = 0;
}

static void call_done(void *arg, asyncd_call_t call, int status, int code, const void *reply,
                      size_t len);

static void issue(unsigned slot) {
    b.sent_ns[slot] = now_ns();
    b.in_flight++;
    node_call(b.node, "echo", ASYNCD_ROUTE_ANY, 0, b.msg, b.size, 10000, call_done,
              (void *)(uintptr_t)slot);
}

static void call_done(void *arg, asyncd_call_t call, int status, int code, const void *reply,
                      size_t len) {
    unsigned slot = (unsigned)(uintptr_t)arg;
    uint64_t t = now_ns();
    (void)call;
    (void)code;
    (void)reply;
    b.in_flight--;
    if (status != ASYNCD_NODE_OK || len != b.size) {
        b.errors++;
    } else {
        b.done++;
        if (b.nlat < MAX_SAMPLES) b.lat[b.nlat++] = t - b.sent_ns[slot];
    }
    if (t < b.end_ns) {
        issue(slot);
    } else if (b.in_flight == 0) {
        finish(b.done, t - b.start_ns);
    }
}

static void count_done(void *arg, asyncd_call_t call, int status, int code, const void *reply,
                       size_t len) {
    char text[32];
    size_t n = len < sizeof text - 1 ? len : sizeof text - 1;
    (void)arg;
    (void)call;
    (void)code;
    memcpy(text, reply, n);
    text[n] = 0;
    if (status != ASYNCD_NODE_OK) b.errors++;
    finish(strtoull(text, NULL, 10), now_ns() - b.start_ns);
}

static void send_tick(void *arg) {
    unsigned i;
    (void)arg;
    if (!b.running || !b.sending) return;
    if (now_ns() >= b.end_ns) {
        b.sending = 0;
        /* Behind every send on the same worker pair: it sees them all. */
        node_call(b.node, "count", 0, 0, "", 0, 30000, count_done, NULL);
        return;
    }
    for (i = 0; i < b.k; i++) {
        if (node_send(b.node, "sink", 0, 0, b.msg, b.size) != 0) b.errors++;
    }
    asyncd_timer_add(0, send_tick, NULL); /* the next turn, after the ring's records */
}

int proc_pkg_cli(asyncd_conn_t conn, const void *pkg, size_t len) {
    char cmd[256], node[64], mode[16];
    unsigned k, size, ms, i;
    if (len < 4 || len - 4 >= sizeof cmd || b.running) return -1;
    memcpy(cmd, (const char *)pkg + 4, len - 4);
    cmd[len - 4] = 0;
    if (sscanf(cmd, "run %63s %u %u %u %15s", node, &k, &size, &ms, mode) != 5 || !k) return -1;
    free(b.msg);
    free(b.sent_ns);
    if (!b.lat) b.lat = malloc(MAX_SAMPLES * sizeof *b.lat);
    b.msg = malloc(size ? size : 1);
    memset(b.msg, 'x', size);
    b.sent_ns = calloc(k, sizeof *b.sent_ns);
    snprintf(b.node, sizeof b.node, "%s", node);
    b.client = conn;
    b.k = k;
    b.size = size;
    b.nlat = 0;
    b.done = b.errors = b.in_flight = 0;
    b.running = 1;
    b.start_ns = now_ns();
    b.end_ns = b.start_ns + (uint64_t)ms * 1000000ull;
    if (strcmp(mode, "send") == 0) {
        b.sending = 1;
        asyncd_timer_add(0, send_tick, NULL);
        return 0;
    }
    for (i = 0; i < k; i++)
        issue(i);
    return 0;
}

void proc_pkg_node(asyncd_req_t req, const char *from, const char *service, const void *msg,
                   size_t len, uint64_t deadline_ms) {
    char text[32];
    (void)from;
    (void)deadline_ms;
    if (strcmp(service, "sink") == 0) {
        sink_count++;
        return;
    }
    if (strcmp(service, "count") == 0) {
        snprintf(text, sizeof text, "%llu", sink_count);
        sink_count = 0;
        node_reply(req, 0, text, strlen(text));
        return;
    }
    node_reply(req, 0, msg, len);
}
