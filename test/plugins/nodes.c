/* The cluster test plugin. A client drives it with text commands (one per frame):
 *
 *   call NODE SERVICE ROUTE TIMEOUT_MS BODY   node_call; answers "S<status> C<code> <reply>"
 *                                              ROUTE: a worker index, "any" or "key:<n>"
 *   send NODE SERVICE ROUTE BODY               node_send; answers "sent <rc>"
 *   sendn N NODE SERVICE ROUTE                 N node_sends of "x"; answers "sent <failures>"
 *   big NODE SIZE TIMEOUT_MS                   a call to echo of SIZE bytes; answers
 *                                              "S<status> <len> <ok|bad>"
 *   nullcall                                   node_call with NULL fn: answers its id
 *   name                                       asyncd_node_name()
 *   worker                                     the index of the worker serving this client
 *   links                                      the link_up_node/link_down_node it saw
 *
 * As a node service (proc_pkg_node): echo, whoami ("NODE/WORKER"), fail (status 7), never
 * (no answer), later (answers after BODY ms from a timer), crash (abort), count (sends of
 * this worker so far), twice (answers "one"; aborts if a second node_reply is not refused).
 * A callback that finds itself inside node_call answers "REENTERED". With plugin.event_log
 * FILE, each node_call callback also appends "done <status>" to it (the caller's view, for
 * tests whose clients go away). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fcntl.h>

#include "plugin_util.h"

static int in_call;
static unsigned long sends;
static char links[2048];

static void answered(void *arg, asyncd_call_t call, int status, int code, const void *answer,
                     size_t len) {
    asyncd_conn_t conn = (asyncd_conn_t)(uintptr_t)arg;
    char text[4096];
    (void)call;
    event("done %d", status);
    if (in_call) {
        reply(conn, "REENTERED");
        return;
    }
    if (len > 4000) len = 4000;
    snprintf(text, sizeof text, "S%d C%d %.*s", status, code, (int)len, (const char *)answer);
    reply(conn, text);
}

static void big_answered(void *arg, asyncd_call_t call, int status, int code, const void *rep,
                         size_t len) {
    asyncd_conn_t conn = (asyncd_conn_t)(uintptr_t)arg;
    const unsigned char *p = rep;
    char text[64];
    int ok = 1;
    size_t i;
    (void)call;
    (void)code;
    for (i = 0; i < len; i++) {
        if (p[i] != (unsigned char)(i * 7 + 3)) {
            ok = 0;
            break;
        }
    }
    snprintf(text, sizeof text, "S%d %zu %s", status, len, ok ? "ok" : "bad");
    reply(conn, text);
}

static int parse_route(const char *s, uint64_t *key) {
    *key = 0;
    if (strcmp(s, "any") == 0) return ASYNCD_ROUTE_ANY;
    if (strncmp(s, "key:", 4) == 0) {
        *key = strtoull(s + 4, NULL, 10);
        return ASYNCD_ROUTE_KEY;
    }
    return atoi(s);
}

int proc_pkg_cli(asyncd_conn_t conn, const void *pkg, size_t len) {
    char cmd[4096], a[128], b[128], c[128], d[128];
    int off = 0;
    uint64_t key;
    if (len < 4 || len - 4 >= sizeof cmd) return -1;
    memcpy(cmd, (const char *)pkg + 4, len - 4);
    cmd[len - 4] = 0;
    if (sscanf(cmd, "call %127s %127s %127s %127s %n", a, b, c, d, &off) == 4 && off) {
        int route = parse_route(c, &key);
        const char *body = cmd + off;
        in_call = 1;
        asyncd_call_t id =
            node_call(a, b, route, key, body, strlen(body), (uint32_t)strtoul(d, NULL, 10),
                      answered, (void *)(uintptr_t)conn);
        in_call = 0;
        if (!id) reply(conn, "ZERO");
        return 0;
    }
    {
        unsigned long n, i, failed = 0;
        if (sscanf(cmd, "sendn %lu %127s %127s %127s", &n, a, b, c) == 4) {
            char text[32];
            int route = parse_route(c, &key);
            for (i = 0; i < n; i++) {
                if (node_send(a, b, route, key, "x", 1) != 0) failed++;
            }
            snprintf(text, sizeof text, "sent %lu", failed);
            reply(conn, text);
            return 0;
        }
    }
    if (sscanf(cmd, "send %127s %127s %127s %n", a, b, c, &off) == 3 && off) {
        char text[32];
        int route = parse_route(c, &key);
        const char *body = cmd + off;
        snprintf(text, sizeof text, "sent %d", node_send(a, b, route, key, body, strlen(body)));
        reply(conn, text);
        return 0;
    }
    {
        unsigned long size;
        if (sscanf(cmd, "big %127s %lu %127s", a, &size, d) == 3) {
            unsigned char *buf = malloc(size ? size : 1);
            unsigned long i;
            for (i = 0; i < size; i++)
                buf[i] = (unsigned char)(i * 7 + 3);
            node_call(a, "echo", ASYNCD_ROUTE_ANY, 0, buf, size, (uint32_t)strtoul(d, NULL, 10),
                      big_answered, (void *)(uintptr_t)conn);
            free(buf);
            return 0;
        }
    }
    if (strcmp(cmd, "nullcall") == 0) {
        char text[32];
        snprintf(text, sizeof text, "%llu",
                 (unsigned long long)node_call(".", "echo", 0, 0, "", 0, 0, NULL, NULL));
        reply(conn, text);
        return 0;
    }
    if (strcmp(cmd, "worker") == 0) {
        char text[16];
        snprintf(text, sizeof text, "%d", asyncd_worker_index());
        reply(conn, text);
        return 0;
    }
    if (strcmp(cmd, "name") == 0) {
        reply(conn, asyncd_node_name());
        return 0;
    }
    if (strcmp(cmd, "links") == 0) {
        reply(conn, links);
        return 0;
    }
    reply(conn, "?");
    return 0;
}

int init_service(int worker_index) {
    const char *path = asyncd_config("event_log");
    (void)worker_index;
    if (path) g_log_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    return 0;
}

static void later_fire(void *arg) {
    asyncd_req_t req = (asyncd_req_t)(uintptr_t)arg;
    node_reply(req, 0, "late", 4);
}

void proc_pkg_node(asyncd_req_t req, const char *from, const char *service, const void *msg,
                   size_t len, uint64_t deadline_ms) {
    char text[256];
    (void)deadline_ms;
    if (!req) {
        sends++;
        return;
    }
    if (strcmp(service, "echo") == 0) {
        node_reply(req, 0, msg, len);
    } else if (strcmp(service, "whoami") == 0) {
        snprintf(text, sizeof text, "%s/%d from %s", asyncd_node_name(), asyncd_worker_index(),
                 from);
        node_reply(req, 0, text, strlen(text));
    } else if (strcmp(service, "fail") == 0) {
        node_reply(req, 7, "nope", 4);
    } else if (strcmp(service, "never") == 0) {
        /* no answer: the caller's deadline decides */
    } else if (strcmp(service, "later") == 0) {
        char ms[16];
        size_t n = len < sizeof ms - 1 ? len : sizeof ms - 1;
        memcpy(ms, msg, n);
        ms[n] = 0;
        asyncd_timer_add((uint32_t)strtoul(ms, NULL, 10), later_fire, (void *)(uintptr_t)req);
    } else if (strcmp(service, "crash") == 0) {
        abort();
    } else if (strcmp(service, "count") == 0) {
        snprintf(text, sizeof text, "%lu", sends);
        node_reply(req, 0, text, strlen(text));
    } else if (strcmp(service, "twice") == 0) {
        int first = node_reply(req, 0, "one", 3);
        int second = node_reply(req, 0, "two", 3);
        (void)first;
        if (second != -1) abort(); /* a second answer must be refused */
    } else {
        node_reply(req, 99, "no such service", 15);
    }
}

void link_up_node(const char *node) {
    size_t n = strlen(links);
    snprintf(links + n, sizeof links - n, "up:%s ", node);
}

void link_down_node(const char *node, int reason) {
    size_t n = strlen(links);
    snprintf(links + n, sizeof links - n, "down:%s:%d ", node, reason);
}
