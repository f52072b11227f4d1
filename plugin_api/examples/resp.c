/* The resp example plugin: enough of the redis protocol (RESP2) for redis-cli and
 * redis-benchmark. PING, ECHO, SET, GET, DEL, INCR, EXISTS, DBSIZE, FLUSHDB/FLUSHALL,
 * SELECT 0, QUIT, and the handshake the tools send (COMMAND, CONFIG GET). Keys live in the
 * worker's memory: with one worker this is a small real key-value store; with several, each
 * worker has its own keys (see the README).
 *
 * It frames its own packets (`frame plugin`): get_pkg_len runs in the conn process and says
 * where each request ends; proc_pkg_cli runs in a worker and answers one request. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "plugin_api/asyncd_plugin.h"
#include "plugin_api/examples/resp_parse.h"

/* ---- Framing (conn process) --------------------------------------------------------- */

int get_pkg_len(asyncd_conn_t conn, const void *data, size_t avail) {
    size_t n = resp_frame((const char *)data, avail);
    (void)conn;
    return n > 0x7fffffff ? -1 : (int)n;
}

/* ---- The key space (one per worker) ------------------------------------------------- */

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    size_t klen, vlen;
    char *val;
    char key[]; /* klen bytes */
} entry;

static entry **g_table;
static size_t g_buckets; /* a power of two */
static size_t g_count;
static uint64_t g_seed; /* per worker, so that nobody can pick keys that all collide */

static uint64_t hash_of(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull ^ g_seed;
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static entry **find_slot(const resp_str *key, uint64_t h) {
    entry **at = &g_table[h & (g_buckets - 1)];
    for (; *at; at = &(*at)->next) {
        if ((*at)->hash == h && (*at)->klen == key->n && memcmp((*at)->key, key->p, key->n) == 0)
            break;
    }
    return at;
}

static int grow(void) {
    size_t nb = g_buckets * 2, i;
    entry **t = (entry **)calloc(nb, sizeof *t);
    if (!t) return -1;
    for (i = 0; i < g_buckets; i++) {
        entry *e = g_table[i];
        while (e) {
            entry *next = e->next;
            e->next = t[e->hash & (nb - 1)];
            t[e->hash & (nb - 1)] = e;
            e = next;
        }
    }
    free(g_table);
    g_table = t;
    g_buckets = nb;
    return 0;
}

static entry *lookup(const resp_str *key) {
    return *find_slot(key, hash_of(key->p, key->n));
}

/* Sets key to val; -1 when memory ran out (nothing changed then). */
static int store(const resp_str *key, const char *val, size_t vlen) {
    uint64_t h = hash_of(key->p, key->n);
    entry **at = find_slot(key, h);
    char *copy = (char *)malloc(vlen ? vlen : 1);
    if (!copy) return -1;
    memcpy(copy, val, vlen);
    if (*at) {
        free((*at)->val);
        (*at)->val = copy;
        (*at)->vlen = vlen;
        return 0;
    }
    entry *e = (entry *)malloc(sizeof *e + key->n);
    if (!e) {
        free(copy);
        return -1;
    }
    e->hash = h;
    e->klen = key->n;
    memcpy(e->key, key->p, key->n);
    e->val = copy;
    e->vlen = vlen;
    e->next = NULL;
    *at = e;
    if (++g_count > g_buckets) grow(); /* a failed grow only makes chains longer */
    return 0;
}

static int erase(const resp_str *key) {
    entry **at = find_slot(key, hash_of(key->p, key->n));
    entry *e = *at;
    if (!e) return 0;
    *at = e->next;
    free(e->val);
    free(e);
    g_count--;
    return 1;
}

static void flush_all(void) {
    size_t i;
    for (i = 0; i < g_buckets; i++) {
        while (g_table[i]) {
            entry *e = g_table[i];
            g_table[i] = e->next;
            free(e->val);
            free(e);
        }
    }
    g_count = 0;
}

int init_service(int worker_index) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    g_seed = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)worker_index;
    g_buckets = 1024;
    g_table = (entry **)calloc(g_buckets, sizeof *g_table);
    return g_table ? 0 : 1;
}

void fini_service(int worker_index) {
    (void)worker_index;
    flush_all();
    free(g_table);
    g_table = NULL;
}

/* ---- Replies ------------------------------------------------------------------------ */

static int send_str(asyncd_conn_t c, const char *s) {
    return net_send_cli(c, s, strlen(s));
}

static int send_int(asyncd_conn_t c, long long v) {
    char buf[32];
    int n = snprintf(buf, sizeof buf, ":%lld\r\n", v);
    return net_send_cli(c, buf, (size_t)n);
}

static int send_bulk(asyncd_conn_t c, const char *p, size_t n) {
    char head[32];
    int h = snprintf(head, sizeof head, "$%zu\r\n", n);
    /* Small replies go as one piece; a big value is sent without a copy. */
    if (n <= 512) {
        char buf[32 + 512 + 2];
        memcpy(buf, head, (size_t)h);
        memcpy(buf + h, p, n);
        memcpy(buf + h + n, "\r\n", 2);
        return net_send_cli(c, buf, (size_t)h + n + 2);
    }
    if (net_send_cli(c, head, (size_t)h) != 0 || net_send_cli(c, p, n) != 0) return -1;
    return net_send_cli(c, "\r\n", 2);
}

/* Redis's wording for an unknown command: the name and the first arguments, quoted. */
static int send_unknown(asyncd_conn_t c, const resp_str *args, long argc) {
    char buf[512];
    int n = snprintf(buf, sizeof buf, "-ERR unknown command '%.*s', with args beginning with: ",
                     (int)(args[0].n > 128 ? 128 : args[0].n), args[0].p);
    long i;
    for (i = 1; i < argc && i < 8 && n < (int)sizeof buf - 140; i++) {
        n += snprintf(buf + n, sizeof buf - (size_t)n, "'%.*s' ",
                      (int)(args[i].n > 128 ? 128 : args[i].n), args[i].p);
    }
    n += snprintf(buf + n, sizeof buf - (size_t)n, "\r\n");
    return net_send_cli(c, buf, (size_t)n);
}

static int send_arity(asyncd_conn_t c, const resp_str *name) {
    char lower[64], buf[160];
    size_t i, n = name->n < sizeof lower ? name->n : sizeof lower;
    int len;
    for (i = 0; i < n; i++) /* redis names the command in lower case */
        lower[i] =
            (char)(name->p[i] >= 'A' && name->p[i] <= 'Z' ? name->p[i] - 'A' + 'a' : name->p[i]);
    len = snprintf(buf, sizeof buf, "-ERR wrong number of arguments for '%.*s' command\r\n", (int)n,
                   lower);
    return net_send_cli(c, buf, (size_t)len);
}

/* ---- Commands ----------------------------------------------------------------------- */

static int cmd_incr(asyncd_conn_t c, const resp_str *key) {
    entry *e = lookup(key);
    long long v = 0;
    char buf[32];
    int n;
    if (e) {
        char *end;
        char tmp[32];
        if (e->vlen == 0 || e->vlen >= sizeof tmp)
            return send_str(c, "-ERR value is not an integer or out of range\r\n");
        memcpy(tmp, e->val, e->vlen);
        tmp[e->vlen] = '\0';
        v = strtoll(tmp, &end, 10);
        if (*end || (v == 0 && tmp[0] != '0') || v == 0x7fffffffffffffffll)
            return send_str(c, "-ERR value is not an integer or out of range\r\n");
    }
    v++;
    n = snprintf(buf, sizeof buf, "%lld", v);
    if (store(key, buf, (size_t)n) != 0) return send_str(c, "-ERR out of memory\r\n");
    return send_int(c, v);
}

static int cmd_config_get(asyncd_conn_t c, const resp_str *param) {
    /* What redis-benchmark asks at start; anything else matches nothing, as in redis. */
    if (resp_is(param, "save")) return send_str(c, "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    if (resp_is(param, "appendonly")) return send_str(c, "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n");
    return send_str(c, "*0\r\n");
}

/* Answers one request; non-zero closes the connection after the answer. */
static int dispatch(asyncd_conn_t c, const resp_str *a, long argc) {
    long i, n = 0;
    const resp_str *cmd = &a[0];
    if (resp_is(cmd, "ping")) {
        if (argc > 2) return send_arity(c, cmd);
        return argc == 2 ? send_bulk(c, a[1].p, a[1].n) : send_str(c, "+PONG\r\n");
    }
    if (resp_is(cmd, "echo")) {
        if (argc != 2) return send_arity(c, cmd);
        return send_bulk(c, a[1].p, a[1].n);
    }
    if (resp_is(cmd, "get")) {
        entry *e;
        if (argc != 2) return send_arity(c, cmd);
        e = lookup(&a[1]);
        return e ? send_bulk(c, e->val, e->vlen) : send_str(c, "$-1\r\n");
    }
    if (resp_is(cmd, "set")) {
        if (argc < 3) return send_arity(c, cmd);
        if (argc > 3) return send_str(c, "-ERR syntax error\r\n");
        if (store(&a[1], a[2].p, a[2].n) != 0) return send_str(c, "-ERR out of memory\r\n");
        return send_str(c, "+OK\r\n");
    }
    if (resp_is(cmd, "del") || resp_is(cmd, "exists")) {
        int del = resp_is(cmd, "del");
        if (argc < 2) return send_arity(c, cmd);
        for (i = 1; i < argc; i++)
            n += del ? erase(&a[i]) : lookup(&a[i]) != NULL;
        return send_int(c, n);
    }
    if (resp_is(cmd, "incr")) {
        if (argc != 2) return send_arity(c, cmd);
        return cmd_incr(c, &a[1]);
    }
    if (resp_is(cmd, "dbsize")) return send_int(c, (long long)g_count);
    if (resp_is(cmd, "flushdb") || resp_is(cmd, "flushall")) {
        flush_all();
        return send_str(c, "+OK\r\n");
    }
    if (resp_is(cmd, "select")) {
        if (argc != 2) return send_arity(c, cmd);
        if (a[1].n == 1 && a[1].p[0] == '0') return send_str(c, "+OK\r\n");
        return send_str(c, "-ERR DB index is out of range\r\n");
    }
    if (resp_is(cmd, "command")) return send_str(c, "*0\r\n"); /* no command table here */
    if (resp_is(cmd, "config")) {
        if (argc == 3 && resp_is(&a[1], "get")) return cmd_config_get(c, &a[2]);
        return send_str(c, "-ERR only CONFIG GET is supported\r\n");
    }
    if (resp_is(cmd, "quit")) {
        send_str(c, "+OK\r\n");
        return 1;
    }
    return send_unknown(c, a, argc);
}

#define MAX_ARGS_ON_STACK 16

int proc_pkg_cli(asyncd_conn_t conn, const void *pkg, size_t len) {
    resp_str stack_args[MAX_ARGS_ON_STACK];
    resp_str *args = stack_args;
    const char *err = NULL;
    long argc = resp_split((const char *)pkg, len, args, MAX_ARGS_ON_STACK, &err);
    int rc;
    if (argc < 0) {
        char buf[128];
        int n = snprintf(buf, sizeof buf, "-ERR %s\r\n", err);
        net_send_cli(conn, buf, (size_t)n);
        return 1; /* as redis: answer, then close */
    }
    if (argc == 0) return 0; /* an empty line, or "*0" */
    if (argc > MAX_ARGS_ON_STACK) {
        args = (resp_str *)malloc((size_t)argc * sizeof *args);
        if (!args) {
            send_str(conn, "-ERR out of memory\r\n");
            return 1;
        }
        resp_split((const char *)pkg, len, args, (size_t)argc, &err);
    }
    rc = dispatch(conn, args, argc);
    if (args != stack_args) free(args);
    return rc > 0 ? 1 : 0;
}
