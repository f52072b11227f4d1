/* The resp example plugin: enough of the redis protocol (RESP2) for redis-cli and
 * redis-benchmark. PING, ECHO, SET, GET, DEL, INCR, EXISTS, MGET, MSET, DBSIZE,
 * FLUSHDB/FLUSHALL, SELECT 0, QUIT, and the handshake the tools send (COMMAND, CONFIG GET).
 * Keys live in the worker's memory: with one worker this is a small real key-value store;
 * with several, each worker has its own keys, unless plugin.shard_nodes makes one key space
 * of every worker of every node named (see "Sharding" below, and the README).
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

static void load_shard_nodes(void);
static int g_starting; /* init_service ran and no record yet: link_up_cli is for the
                        * connections a predecessor served (see link_up_cli) */

int init_service(int worker_index) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    g_seed = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ (uint64_t)worker_index;
    g_buckets = 1024;
    g_table = (entry **)calloc(g_buckets, sizeof *g_table);
    load_shard_nodes();
    g_starting = 1;
    return g_table ? 0 : 1;
}

void fini_service(int worker_index) {
    (void)worker_index;
    flush_all();
    free(g_table);
    g_table = NULL;
}

/* ---- Replies ------------------------------------------------------------------------ */

/* A reply is built here, then sent to the client, handed back to a calling node, or kept
 * until the replies before it are in (a sharded connection's queue). */
static char *g_out;
static size_t g_out_n, g_out_cap;
static int g_out_failed; /* memory ran out while building it */

static void out_raw(const char *p, size_t n) {
    if (g_out_n + n > g_out_cap) {
        size_t cap = g_out_cap ? g_out_cap : 4096;
        char *q;
        while (cap < g_out_n + n)
            cap *= 2;
        q = (char *)realloc(g_out, cap);
        if (!q) {
            g_out_failed = 1;
            return;
        }
        g_out = q;
        g_out_cap = cap;
    }
    memcpy(g_out + g_out_n, p, n);
    g_out_n += n;
}

static int send_str(const char *s) {
    out_raw(s, strlen(s));
    return 0;
}

static int send_int(long long v) {
    char buf[32];
    int n = snprintf(buf, sizeof buf, ":%lld\r\n", v);
    out_raw(buf, (size_t)n);
    return 0;
}

static int send_bulk(const char *p, size_t n) {
    char head[32];
    int h = snprintf(head, sizeof head, "$%zu\r\n", n);
    out_raw(head, (size_t)h);
    out_raw(p, n);
    out_raw("\r\n", 2);
    return 0;
}

/* Redis's wording for an unknown command: the name and the first arguments, quoted. */
static int send_unknown(const resp_str *args, long argc) {
    char buf[512];
    int n = snprintf(buf, sizeof buf, "-ERR unknown command '%.*s', with args beginning with: ",
                     (int)(args[0].n > 128 ? 128 : args[0].n), args[0].p);
    long i;
    for (i = 1; i < argc && i < 8 && n < (int)sizeof buf - 140; i++) {
        n += snprintf(buf + n, sizeof buf - (size_t)n, "'%.*s' ",
                      (int)(args[i].n > 128 ? 128 : args[i].n), args[i].p);
    }
    n += snprintf(buf + n, sizeof buf - (size_t)n, "\r\n");
    out_raw(buf, (size_t)n);
    return 0;
}

static int send_arity(const resp_str *name) {
    char lower[64], buf[160];
    size_t i, n = name->n < sizeof lower ? name->n : sizeof lower;
    int len;
    for (i = 0; i < n; i++) /* redis names the command in lower case */
        lower[i] =
            (char)(name->p[i] >= 'A' && name->p[i] <= 'Z' ? name->p[i] - 'A' + 'a' : name->p[i]);
    len = snprintf(buf, sizeof buf, "-ERR wrong number of arguments for '%.*s' command\r\n", (int)n,
                   lower);
    out_raw(buf, (size_t)len);
    return 0;
}

/* ---- Commands ----------------------------------------------------------------------- */

static int cmd_incr(const resp_str *key) {
    entry *e = lookup(key);
    long long v = 0;
    char buf[32];
    int n;
    if (e) {
        char *end;
        char tmp[32];
        if (e->vlen == 0 || e->vlen >= sizeof tmp)
            return send_str("-ERR value is not an integer or out of range\r\n");
        memcpy(tmp, e->val, e->vlen);
        tmp[e->vlen] = '\0';
        v = strtoll(tmp, &end, 10);
        if (*end || (v == 0 && tmp[0] != '0') || v == 0x7fffffffffffffffll)
            return send_str("-ERR value is not an integer or out of range\r\n");
    }
    v++;
    n = snprintf(buf, sizeof buf, "%lld", v);
    if (store(key, buf, (size_t)n) != 0) return send_str("-ERR out of memory\r\n");
    return send_int(v);
}

static int cmd_config_get(const resp_str *param) {
    /* What redis-benchmark asks at start; anything else matches nothing, as in redis. */
    if (resp_is(param, "save")) return send_str("*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    if (resp_is(param, "appendonly")) return send_str("*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n");
    return send_str("*0\r\n");
}

/* Answers one request; non-zero closes the connection after the answer. */
static int dispatch(const resp_str *a, long argc) {
    long i, n = 0;
    const resp_str *cmd = &a[0];
    if (resp_is(cmd, "ping")) {
        if (argc > 2) return send_arity(cmd);
        return argc == 2 ? send_bulk(a[1].p, a[1].n) : send_str("+PONG\r\n");
    }
    if (resp_is(cmd, "echo")) {
        if (argc != 2) return send_arity(cmd);
        return send_bulk(a[1].p, a[1].n);
    }
    if (resp_is(cmd, "get")) {
        entry *e;
        if (argc != 2) return send_arity(cmd);
        e = lookup(&a[1]);
        return e ? send_bulk(e->val, e->vlen) : send_str("$-1\r\n");
    }
    if (resp_is(cmd, "set")) {
        if (argc < 3) return send_arity(cmd);
        if (argc > 3) return send_str("-ERR syntax error\r\n");
        if (store(&a[1], a[2].p, a[2].n) != 0) return send_str("-ERR out of memory\r\n");
        return send_str("+OK\r\n");
    }
    if (resp_is(cmd, "del") || resp_is(cmd, "exists")) {
        int del = resp_is(cmd, "del");
        if (argc < 2) return send_arity(cmd);
        for (i = 1; i < argc; i++)
            n += del ? erase(&a[i]) : lookup(&a[i]) != NULL;
        return send_int(n);
    }
    if (resp_is(cmd, "incr")) {
        if (argc != 2) return send_arity(cmd);
        return cmd_incr(&a[1]);
    }
    if (resp_is(cmd, "dbsize")) return send_int((long long)g_count);
    if (resp_is(cmd, "flushdb") || resp_is(cmd, "flushall")) {
        flush_all();
        return send_str("+OK\r\n");
    }
    if (resp_is(cmd, "select")) {
        if (argc != 2) return send_arity(cmd);
        if (a[1].n == 1 && a[1].p[0] == '0') return send_str("+OK\r\n");
        return send_str("-ERR DB index is out of range\r\n");
    }
    if (resp_is(cmd, "command")) return send_str("*0\r\n"); /* no command table here */
    if (resp_is(cmd, "config")) {
        if (argc == 3 && resp_is(&a[1], "get")) return cmd_config_get(&a[2]);
        return send_str("-ERR only CONFIG GET is supported\r\n");
    }
    if (resp_is(cmd, "quit")) {
        send_str("+OK\r\n");
        return 1;
    }
    if (resp_is(cmd, "mget")) {
        if (argc < 2) return send_arity(cmd);
        {
            char head[32];
            int h = snprintf(head, sizeof head, "*%ld\r\n", argc - 1);
            out_raw(head, (size_t)h);
        }
        for (i = 1; i < argc; i++) {
            entry *e = lookup(&a[i]);
            if (e)
                send_bulk(e->val, e->vlen);
            else
                send_str("$-1\r\n");
        }
        return 0;
    }
    if (resp_is(cmd, "mset")) {
        if (argc < 3 || argc % 2 == 0) return send_arity(cmd);
        for (i = 1; i + 1 < argc; i += 2) {
            if (store(&a[i], a[i + 1].p, a[i + 1].n) != 0)
                return send_str("-ERR out of memory\r\n");
        }
        return send_str("+OK\r\n");
    }
    return send_unknown(a, argc);
}

#define MAX_ARGS_ON_STACK 16

/* Cuts a request into *argsp (the stack array, or a malloc'd one for many arguments).
 * Returns argc; -1 with the answer in g_out when it is malformed (the connection closes). */
static long split(const char *pkg, size_t len, resp_str *stack_args, resp_str **argsp) {
    const char *err = NULL;
    long argc = resp_split(pkg, len, stack_args, MAX_ARGS_ON_STACK, &err);
    *argsp = stack_args;
    if (argc < 0) {
        char buf[128];
        int n = snprintf(buf, sizeof buf, "-ERR %s\r\n", err);
        out_raw(buf, (size_t)n);
        return -1;
    }
    if (argc > MAX_ARGS_ON_STACK) {
        *argsp = (resp_str *)malloc((size_t)argc * sizeof **argsp);
        if (!*argsp) {
            *argsp = stack_args;
            send_str("-ERR out of memory\r\n");
            return -1;
        }
        resp_split(pkg, len, *argsp, (size_t)argc, &err);
    }
    return argc;
}

/* ---- Sharding over the cluster (plugin.shard_nodes) --------------------------------- *
 *
 * Each key has one owner: a node of shard_nodes (jump consistent hash of a stable hash of
 * the key, the same on every node) and, on it, the worker ASYNCD_ROUTE_KEY maps the key's
 * second hash to. A command whose owner is this worker runs at once; any other goes to its
 * owner with node_call (service "resp"; "." when the owner is another worker of this
 * node) and its answer is relayed. A connection's answers go out in the order its
 * commands came: each command takes a place in the connection's queue, and the queue is
 * sent from its head as far as the answers are in. Multi-key commands are split per key
 * and gathered; DBSIZE and FLUSHDB/FLUSHALL go to every node ("resp_all"), whose worker
 * asks every worker of its node. A forwarded command that fails is answered with a
 * redis-style error naming the node and the cause, never with silence. */

#define MAX_SHARD_NODES 64
#define MAX_QUEUED 1000000 /* answers one connection may be waiting for */

static char *g_nodes[MAX_SHARD_NODES];
static int g_nnodes;       /* 0: not sharded, today's per-worker key space */
static int g_self = -1;    /* this node's place in shard_nodes, or -1 */
static uint32_t g_timeout; /* node_call's timeout (plugin.shard_timeout_ms; 0: the cluster's) */
/* Calls this worker keeps in flight at most (plugin.shard_max_inflight): past it, commands
 * wait here, in order, for answers to come back. The owners' rings and the cluster's
 * per-worker bounds then never see more than they can take, so a burst is slowed down, not
 * answered "busy". */
static long g_max_inflight = 4096;
static long g_inflight;
/* The largest client command taken (plugin.shard_max_command): below the cluster's
 * max_message and max_reply_len (16M by default), so that whatever is stored can be read
 * back through any node. */
static size_t g_max_command = (size_t)16 * 1024 * 1024 - 4096;

static uint64_t stable_hash(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t mix(uint64_t x) { /* splitmix64's finaliser */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Lamping and Veach's jump consistent hash: adding a bucket moves only its share. The same
 * function as asyncd's ASYNCD_ROUTE_KEY, so that a worker knows which keys are its own. */
static int jump(uint64_t key, int buckets) {
    int64_t b = -1, j = 0;
    if (buckets <= 1) return 0;
    while (j < buckets) {
        b = j;
        key = key * 2862933555777941757ull + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1ll << 31) / (double)((key >> 33) + 1)));
    }
    return (int)b;
}

typedef struct owner {
    int node;      /* in g_nodes */
    uint64_t wkey; /* the key for ASYNCD_ROUTE_KEY on that node */
} owner;

static owner owner_of(const resp_str *key) {
    uint64_t h = stable_hash(key->p, key->n);
    owner o;
    o.node = jump(mix(h), g_nnodes);
    o.wkey = mix(h ^ 0x9e3779b97f4a7c15ull);
    return o;
}

static int is_mine(owner o) {
    return o.node == g_self && jump(o.wkey, asyncd_worker_count()) == asyncd_worker_index();
}

static const char *call_target(int node) {
    return node == g_self ? "." : g_nodes[node];
}

/* A call to an owner, sent now or parked until the calls in flight go below the bound. */
typedef struct flight {
    struct flight *next;
    char target[72];
    const char *service;
    int route;
    uint64_t key;
    char *cmd; /* parked: a copy of the command */
    size_t len;
    asyncd_call_fn fn;
    void *arg;
} flight;

static flight *g_parked_head, *g_parked_tail;

static void flight_done(void *arg, asyncd_call_t call, int status, int code, const void *reply,
                        size_t len);

static void flight_send(flight *f, const char *cmd, size_t len) {
    g_inflight++;
    if (!node_call(f->target, f->service, f->route, f->key, cmd, len, g_timeout, flight_done, f)) {
        g_inflight--;
        f->fn(f->arg, 0, ASYNCD_NODE_DOWN, 0, NULL, 0);
        free(f);
    }
}

static void pump_parked(void) {
    while (g_parked_head && g_inflight < g_max_inflight) {
        flight *f = g_parked_head;
        char *cmd = f->cmd;
        size_t len = f->len;
        g_parked_head = f->next;
        if (!g_parked_head) g_parked_tail = NULL;
        f->next = NULL;
        f->cmd = NULL;
        flight_send(f, cmd, len);
        free(cmd);
    }
}

static void flight_done(void *arg, asyncd_call_t call, int status, int code, const void *reply,
                        size_t len) {
    flight *f = (flight *)arg;
    g_inflight--;
    f->fn(f->arg, call, status, code, reply, len);
    free(f);
    pump_parked();
}

/* node_call through the bound: now, or parked in order behind the others. fn always runs
 * once (with ASYNCD_NODE_QUEUE_FULL when there is no memory to park). */
static void shard_call(const char *target, const char *service, int route, uint64_t key,
                       const char *cmd, size_t len, asyncd_call_fn fn, void *arg) {
    flight *f = (flight *)calloc(1, sizeof *f);
    if (!f) {
        fn(arg, 0, ASYNCD_NODE_QUEUE_FULL, 0, NULL, 0);
        return;
    }
    snprintf(f->target, sizeof f->target, "%s", target);
    f->service = service;
    f->route = route;
    f->key = key;
    f->fn = fn;
    f->arg = arg;
    if (!g_parked_head && g_inflight < g_max_inflight) {
        flight_send(f, cmd, len);
        return;
    }
    f->cmd = (char *)malloc(len ? len : 1);
    if (!f->cmd) {
        free(f);
        fn(arg, 0, ASYNCD_NODE_QUEUE_FULL, 0, NULL, 0);
        return;
    }
    memcpy(f->cmd, cmd, len);
    f->len = len;
    if (g_parked_tail)
        g_parked_tail->next = f;
    else
        g_parked_head = f;
    g_parked_tail = f;
}

/* One answer a connection waits for, in its queue. */
typedef struct gather gather;
typedef struct pend {
    struct pend *next;
    struct conn_state *cs;
    int ready;
    char *data; /* the answer once ready (malloc'd) */
    size_t n;
    gather *g;        /* a multi-key or fan-out command: its parts fill this in */
    asyncd_req_t req; /* not a client's: the answer to a node's resp_all call */
    int static_data;  /* data is not ours to free */
} pend;

/* A command split into parts: what they answered, put together when the last is in. */
enum { G_SUM, G_OK, G_MGET };
struct gather {
    pend *p;
    int kind;
    long parts, left;
    long long sum;
    char **vals; /* G_MGET: each key's bulk answer ("$-1" when absent), in order */
    size_t *lens;
    char err[160]; /* the first part that failed, as its error line */
};

typedef struct conn_state {
    struct conn_state *hnext;
    asyncd_conn_t conn;
    pend *head, *tail;
    long queued;
    int gone;        /* the client went away: answers still due are dropped */
    int close_after; /* QUIT or a protocol error: close once the queue is out */
    int closing;     /* ... and nothing after it is run */
} conn_state;

static conn_state **g_conns;
static size_t g_conn_buckets;

static conn_state **conn_slot(asyncd_conn_t conn) {
    conn_state **at = &g_conns[mix(conn) & (g_conn_buckets - 1)];
    while (*at && (*at)->conn != conn)
        at = &(*at)->hnext;
    return at;
}

static conn_state *conn_get(asyncd_conn_t conn) {
    conn_state **at = conn_slot(conn);
    if (!*at) {
        conn_state *cs = (conn_state *)calloc(1, sizeof *cs);
        if (!cs) return NULL;
        cs->conn = conn;
        *at = cs;
    }
    return *at;
}

static void conn_free_if_done(conn_state *cs) {
    if (cs->head || !cs->gone) return;
    conn_state **at = conn_slot(cs->conn);
    if (*at == cs) *at = cs->hnext;
    free(cs);
}

/* An answer to a client; one above max_reply_len becomes an error in its place, so that
 * the answers after it stay in step with their commands. */
static void send_answer(asyncd_conn_t conn, const char *data, size_t n) {
    char line[128];
    int len;
    if (net_send_cli(conn, data, n) == 0) return;
    len = snprintf(line, sizeof line,
                   "-ERR reply of %zu bytes is above this server's max_reply_len\r\n", n);
    net_send_cli(conn, line, (size_t)len);
}

/* Sends what is ready from the head of the queue. */
static void flush_queue(conn_state *cs) {
    while (cs->head && cs->head->ready) {
        pend *p = cs->head;
        cs->head = p->next;
        if (!cs->head) cs->tail = NULL;
        cs->queued--;
        if (!cs->gone && p->n) send_answer(cs->conn, p->data, p->n);
        if (!p->static_data) free(p->data);
        free(p);
    }
    if (!cs->head && cs->close_after && !cs->gone) {
        cs->close_after = 0;
        net_close_cli(cs->conn);
    }
    conn_free_if_done(cs);
}

static pend *enqueue(conn_state *cs) {
    pend *p = (pend *)calloc(1, sizeof *p);
    if (!p) return NULL;
    p->cs = cs;
    if (cs->tail)
        cs->tail->next = p;
    else
        cs->head = p;
    cs->tail = p;
    cs->queued++;
    return p;
}

static void set_ready(pend *p, const char *data, size_t n) {
    if (p->req) {
        node_reply(p->req, 0, data, n);
        free(p);
        return;
    }
    p->data = (char *)malloc(n ? n : 1);
    if (p->data) {
        memcpy(p->data, data, n);
        p->n = n;
    } else {
        /* In its place in the queue, like any answer (a static text: 20 bytes, no copy). */
        static char oom[] = "-ERR out of memory\r\n";
        p->data = oom;
        p->n = sizeof oom - 1;
        p->static_data = 1;
    }
    p->ready = 1;
    flush_queue(p->cs);
}

static const char *status_words(int status) {
    switch (status) {
        case ASYNCD_NODE_TIMEOUT:
            return "timed out";
        case ASYNCD_NODE_UNKNOWN:
            return "unreachable (not in the cluster)";
        case ASYNCD_NODE_DOWN:
            return "unreachable";
        case ASYNCD_NODE_LINK_LOST:
            return "unreachable (link lost; the command may have run)";
        case ASYNCD_NODE_QUEUE_FULL:
            return "busy (queue full)";
        case ASYNCD_NODE_TOO_LARGE:
            return "cannot take it: the command or its reply is above the cluster's max_message";
        case ASYNCD_NODE_BUSY:
            return "busy";
        case ASYNCD_NODE_WORKER_DIED:
            return "failed (its worker died; the command may have run)";
        case ASYNCD_NODE_STOPPING:
            return "unreachable (stopping)";
        case ASYNCD_NODE_PEER_RESTARTED:
            return "unreachable (restarted; the command may have run)";
        case ASYNCD_NODE_NO_SERVICE:
            return "has no resp service";
        default:
            return "failed";
    }
}

static int error_line(char *buf, size_t cap, const char *node, int status, int code) {
    if (status == ASYNCD_NODE_REMOTE)
        return snprintf(buf, cap, "-ERR node %s failed (code %d)\r\n", node, code);
    return snprintf(buf, cap, "-ERR node %s %s\r\n", node, status_words(status));
}

/* A gather's part answered (or failed: reply NULL, err the error line). */
static void gather_part(gather *g, long index, const char *reply, size_t len, const char *err) {
    if (err) {
        if (!g->err[0]) snprintf(g->err, sizeof g->err, "%s", err);
    } else if (len && reply[0] == '-') {
        if (!g->err[0])
            snprintf(g->err, sizeof g->err, "%.*s", (int)(len < 150 ? len : 150), reply);
    } else if (g->kind == G_SUM) {
        if (len && reply[0] == ':') g->sum += strtoll(reply + 1, NULL, 10);
    } else if (g->kind == G_MGET && g->vals) {
        /* The part is "*1\r\n" and one bulk: keep the bulk. */
        const char *b = memchr(reply, '\n', len);
        if (b) {
            size_t n = len - (size_t)(b + 1 - reply);
            g->vals[index] = (char *)malloc(n ? n : 1);
            if (g->vals[index]) {
                memcpy(g->vals[index], b + 1, n);
                g->lens[index] = n;
            }
        }
    }
    if (--g->left > 0) return;
    g_out_n = 0;
    g_out_failed = 0;
    if (g->err[0]) {
        size_t n = strlen(g->err);
        while (n && (g->err[n - 1] == '\n' || g->err[n - 1] == '\r'))
            n--;
        out_raw(g->err, n);
        if (g->parts > 1 && g->kind != G_MGET) /* the other owners did their part */
            send_str(" (the owners that answered ran their part)");
        out_raw("\r\n", 2);
    } else if (g->kind == G_SUM) {
        send_int(g->sum);
    } else if (g->kind == G_OK) {
        send_str("+OK\r\n");
    } else {
        long i;
        char head[32];
        int h = snprintf(head, sizeof head, "*%ld\r\n", g->parts);
        out_raw(head, (size_t)h);
        for (i = 0; i < g->parts; i++) {
            if (g->vals && g->vals[i])
                out_raw(g->vals[i], g->lens[i]);
            else
                send_str("$-1\r\n");
        }
    }
    if (g->vals) {
        long i;
        for (i = 0; i < g->parts; i++)
            free(g->vals[i]);
        free(g->vals);
        free(g->lens);
    }
    pend *p = g->p;
    free(g);
    if (g_out_failed)
        set_ready(p, "-ERR out of memory\r\n", 20);
    else
        set_ready(p, g_out, g_out_n);
}

typedef struct part_arg {
    gather *g;
    long index;
    int node;
} part_arg;

static void part_answered(void *arg, asyncd_call_t call, int status, int code, const void *reply,
                          size_t len) {
    part_arg *pa = (part_arg *)arg;
    (void)call;
    if (status == ASYNCD_NODE_OK) {
        gather_part(pa->g, pa->index, (const char *)reply, len, NULL);
    } else {
        char line[160];
        error_line(line, sizeof line, pa->node < 0 ? asyncd_node_name() : g_nodes[pa->node], status,
                   code);
        gather_part(pa->g, pa->index, NULL, 0, line);
    }
    free(pa);
}

static void single_answered(void *arg, asyncd_call_t call, int status, int code, const void *reply,
                            size_t len) {
    part_arg *pa = (part_arg *)arg;
    pend *p = (pend *)pa->g;
    (void)call;
    if (status == ASYNCD_NODE_OK) {
        set_ready(p, (const char *)reply, len);
    } else {
        char line[160];
        int n = error_line(line, sizeof line, g_nodes[pa->node], status, code);
        set_ready(p, line, (size_t)n);
    }
    free(pa);
}

/* Runs a whole command here into g_out (the owner's side of a call). */
static void run_local(const char *msg, size_t len) {
    resp_str stack_args[MAX_ARGS_ON_STACK], *args;
    long argc;
    g_out_n = 0;
    g_out_failed = 0;
    argc = split(msg, len, stack_args, &args);
    if (argc > 0) dispatch(args, argc);
    if (args != stack_args) free(args);
    if (g_out_failed) {
        g_out_n = 0;
        g_out_failed = 0;
        send_str("-ERR out of memory\r\n");
    }
}

/* A command of argc arguments as RESP, into *buf. */
static char *build_command(const resp_str *a, long argc, size_t *len) {
    size_t cap = 32, n = 0;
    long i;
    char *b;
    for (i = 0; i < argc; i++)
        cap += a[i].n + 32;
    b = (char *)malloc(cap);
    if (!b) return NULL;
    n += (size_t)snprintf(b + n, cap - n, "*%ld\r\n", argc);
    for (i = 0; i < argc; i++) {
        n += (size_t)snprintf(b + n, cap - n, "$%zu\r\n", a[i].n);
        memcpy(b + n, a[i].p, a[i].n);
        n += a[i].n;
        memcpy(b + n, "\r\n", 2);
        n += 2;
    }
    *len = n;
    return b;
}

/* Part `index` of a gather run here: cmd's answer, copied out of g_out (which gather_part
 * reuses for the whole answer). */
static void part_here(gather *g, long index, const char *cmd, size_t len) {
    char *copy;
    size_t n;
    run_local(cmd, len);
    n = g_out_n;
    copy = (char *)malloc(n ? n : 1);
    if (!copy) {
        gather_part(g, index, NULL, 0, "-ERR out of memory");
        return;
    }
    memcpy(copy, g_out, n);
    gather_part(g, index, copy, n, NULL);
    free(copy);
}

/* Part `index` of a gather sent to an owner (node: its place in shard_nodes, or -1 for this
 * node, as the error line names it). */
static void part_there(gather *g, long index, int node, const char *service, int route,
                       uint64_t key, const char *cmd, size_t len) {
    part_arg *pa = (part_arg *)malloc(sizeof *pa);
    if (!pa) {
        gather_part(g, index, NULL, 0, "-ERR out of memory");
        return;
    }
    pa->g = g;
    pa->index = index;
    pa->node = node;
    shard_call(node < 0 ? "." : call_target(node), service, route, key, cmd, len, part_answered,
               pa);
}

/* One part of a gather: the command `a` (argc arguments) to the owner of its key a[1]. */
static void send_part(gather *g, long index, const resp_str *a, long argc) {
    owner o = owner_of(&a[1]);
    size_t len;
    char *cmd = build_command(a, argc, &len);
    if (!cmd) {
        gather_part(g, index, NULL, 0, "-ERR out of memory");
    } else if (is_mine(o)) {
        part_here(g, index, cmd, len);
    } else {
        part_there(g, index, o.node, "resp", ASYNCD_ROUTE_KEY, o.wkey, cmd, len);
    }
    free(cmd);
}

static gather *new_gather(pend *p, int kind, long parts) {
    gather *g = (gather *)calloc(1, sizeof *g);
    if (!g) return NULL;
    g->p = p;
    p->g = g;
    g->kind = kind;
    g->parts = g->left = parts;
    if (kind == G_MGET) {
        g->vals = (char **)calloc((size_t)parts, sizeof *g->vals);
        g->lens = (size_t *)calloc((size_t)parts, sizeof *g->lens);
    }
    return g;
}

/* DBSIZE, FLUSHDB, FLUSHALL: summed or OK'd over `parts` owners. Every node of shard_nodes
 * ("resp_all" there, whose worker asks its own node), or, with nodes 0, every worker of this
 * node (the owner side of resp_all). Answers into p. */
static void fan_out(pend *p, const resp_str *a, long argc, int nodes) {
    int i, parts = nodes ? g_nnodes : asyncd_worker_count();
    gather *g = new_gather(p, resp_is(&a[0], "dbsize") ? G_SUM : G_OK, parts);
    size_t len;
    char *cmd = build_command(a, argc, &len);
    if (!g || !cmd) {
        free(cmd);
        if (g) {
            p->g = NULL;
            free(g);
        }
        set_ready(p, "-ERR out of memory\r\n", 20);
        return;
    }
    for (i = 0; i < parts; i++) {
        if (nodes)
            part_there(g, i, i, "resp_all", ASYNCD_ROUTE_ANY, 0, cmd, len);
        else if (i == asyncd_worker_index())
            part_here(g, i, cmd, len);
        else
            part_there(g, i, -1, "resp", i, 0, cmd, len);
    }
    free(cmd);
}

/* One client command, sharded. */
static void shard_command(conn_state *cs, const char *pkg, size_t len, const resp_str *a,
                          long argc) {
    const resp_str *cmd = &a[0];
    long i;
    int multi = resp_is(cmd, "del") || resp_is(cmd, "exists") || resp_is(cmd, "mget");
    int keyed =
        resp_is(cmd, "get") || resp_is(cmd, "set") || resp_is(cmd, "incr") || (multi && argc == 2);
    pend *p;
    if (resp_is(cmd, "mget") && argc == 2) keyed = 0; /* its answer is an array: gathered */
    if (keyed && argc >= 2) {
        owner o = owner_of(&a[1]);
        if (is_mine(o)) {
            g_out_n = 0;
            dispatch(a, argc);
            if (!cs->head) {
                send_answer(cs->conn, g_out, g_out_n);
                return;
            }
            p = enqueue(cs);
            if (p) set_ready(p, g_out, g_out_n);
            return;
        }
        p = enqueue(cs);
        part_arg *pa = (part_arg *)malloc(sizeof *pa);
        if (!p || !pa) {
            free(pa);
            if (p) set_ready(p, "-ERR out of memory\r\n", 20);
            return;
        }
        pa->g = (gather *)p; /* single_answered's pend */
        pa->index = 0;
        pa->node = o.node;
        shard_call(call_target(o.node), "resp", ASYNCD_ROUTE_KEY, o.wkey, pkg, len, single_answered,
                   pa);
        return;
    }
    if ((multi && argc > 2) || (resp_is(cmd, "mget") && argc == 2) ||
        (resp_is(cmd, "mset") && argc >= 3 && argc % 2 == 1)) {
        int mset = resp_is(cmd, "mset");
        long parts = mset ? (argc - 1) / 2 : argc - 1;
        gather *g;
        p = enqueue(cs);
        g = p ? new_gather(p, mset ? G_OK : resp_is(cmd, "mget") ? G_MGET : G_SUM, parts) : NULL;
        if (!g || (g->kind == G_MGET && (!g->vals || !g->lens))) {
            if (p) set_ready(p, "-ERR out of memory\r\n", 20);
            return;
        }
        for (i = 0; i < parts; i++) {
            resp_str sub[3];
            sub[0] = *cmd;
            if (mset) {
                static const char set_word[] = "SET";
                sub[0].p = set_word;
                sub[0].n = 3;
                sub[1] = a[1 + 2 * i];
                sub[2] = a[2 + 2 * i];
                send_part(g, i, sub, 3);
            } else {
                sub[1] = a[1 + i];
                send_part(g, i, sub, 2);
            }
        }
        return;
    }
    if (resp_is(cmd, "dbsize") || resp_is(cmd, "flushdb") || resp_is(cmd, "flushall")) {
        p = enqueue(cs);
        if (!p) return;
        fan_out(p, a, argc, 1);
        return;
    }
    /* Keyless, or a wrong argument count: answered here. */
    g_out_n = 0;
    if (dispatch(a, argc) > 0) cs->close_after = cs->closing = 1;
    p = enqueue(cs);
    if (p) set_ready(p, g_out, g_out_n);
}

static void load_shard_nodes(void) {
    const char *v = asyncd_config("shard_nodes");
    const char *me = asyncd_node_name();
    const char *t = asyncd_config("shard_timeout_ms");
    const char *mi = asyncd_config("shard_max_inflight");
    const char *mc = asyncd_config("shard_max_command");
    if (t) g_timeout = (uint32_t)strtoul(t, NULL, 10);
    if (mi && atol(mi) > 0) g_max_inflight = atol(mi);
    if (mc && strtoull(mc, NULL, 10) >= 1024) g_max_command = (size_t)strtoull(mc, NULL, 10);
    if (!v || !*v) return;
    while (*v && g_nnodes < MAX_SHARD_NODES) {
        const char *comma = strchr(v, ',');
        size_t n = comma ? (size_t)(comma - v) : strlen(v);
        while (n && (*v == ' ')) {
            v++;
            n--;
        }
        while (n && v[n - 1] == ' ')
            n--;
        if (n) {
            g_nodes[g_nnodes] = strndup(v, n);
            if (me && strcmp(g_nodes[g_nnodes], me) == 0) g_self = g_nnodes;
            g_nnodes++;
        }
        if (!comma) break;
        v = comma + 1;
    }
    g_conn_buckets = 4096;
    g_conns = (conn_state **)calloc(g_conn_buckets, sizeof *g_conns);
}

/* ---- Entry points --------------------------------------------------------------------- */

int proc_pkg_cli(asyncd_conn_t conn, const void *pkg, size_t len) {
    resp_str stack_args[MAX_ARGS_ON_STACK];
    resp_str *args;
    conn_state *cs;
    int rc = 0;
    long argc;
    g_out_n = 0;
    g_out_failed = 0;
    argc = split((const char *)pkg, len, stack_args, &args);
    if (!g_nnodes) { /* not sharded: this worker's keys */
        if (argc > 0) rc = dispatch(args, argc);
        if (argc < 0) rc = 1; /* as redis: answer, then close */
        if (g_out_failed) {
            g_out_n = 0;
            send_str("-ERR out of memory\r\n");
            rc = 1;
        }
        if (g_out_n) send_answer(conn, g_out, g_out_n);
        if (args != stack_args) free(args);
        return rc > 0 ? 1 : 0;
    }
    cs = conn_get(conn);
    if (!cs) {
        send_str("-ERR out of memory\r\n");
        net_send_cli(conn, g_out, g_out_n);
        return 1;
    }
    g_starting = 0;
    if (cs->closing) {
        /* After QUIT, a protocol error or the limit: nothing more is run or answered. */
    } else if (argc > 0 && len > g_max_command) {
        char line[160];
        int n = snprintf(line, sizeof line,
                         "-ERR command of %zu bytes is above the store's limit of %zu "
                         "(plugin.shard_max_command)\r\n",
                         len, g_max_command);
        pend *p = enqueue(cs);
        if (p) set_ready(p, line, (size_t)n);
    } else if (argc < 0 || cs->queued >= MAX_QUEUED) {
        pend *p;
        if (argc >= 0) {
            g_out_n = 0;
            send_str("-ERR too many commands waiting for answers on this connection\r\n");
        }
        cs->close_after = cs->closing = 1;
        p = enqueue(cs);
        if (p) set_ready(p, g_out, g_out_n);
    } else if (argc > 0) {
        shard_command(cs, (const char *)pkg, len, args, argc);
    }
    if (args != stack_args) free(args);
    return 0; /* a close waits for the answers before it (close_after) */
}

/* A worker that replaces one that died (or was rolled) gets link_up_cli, as it starts, for
 * the connections its predecessor served. The answers that one still owed them lived in its
 * memory and are gone: the connections are closed, so that their clients see the loss
 * instead of answers out of step with their commands. */
void link_up_cli(asyncd_conn_t conn, const asyncd_peer_t *peer) {
    (void)peer;
    if (!g_nnodes || !g_starting) return;
    asyncd_log(ASYNCD_LOG_INFO,
               "resp: closing connection %llu, served by this worker's predecessor (the "
               "answers it owed are lost)",
               (unsigned long long)conn);
    net_close_cli(conn);
}

void proc_events(void) {
    g_starting = 0;
}

void link_down_cli(asyncd_conn_t conn, int reason) {
    conn_state **at;
    (void)reason;
    if (!g_nnodes) return;
    at = conn_slot(conn);
    if (!*at) return;
    (*at)->gone = 1;
    conn_free_if_done(*at);
}

/* The owner's side: a command forwarded by another worker ("resp"), or a node-wide one
 * ("resp_all": every worker of this node). */
void proc_pkg_node(asyncd_req_t req, const char *from, const char *service, const void *msg,
                   size_t len, uint64_t deadline_ms) {
    (void)from;
    (void)deadline_ms;
    g_starting = 0;
    if (!req) return; /* a send: nothing here sends */
    if (strcmp(service, "resp") == 0) {
        run_local((const char *)msg, len);
        if (node_reply(req, 0, g_out, g_out_n) != 0) {
            char line[128];
            int n =
                snprintf(line, sizeof line,
                         "-ERR reply of %zu bytes is above the cluster's max_message\r\n", g_out_n);
            node_reply(req, 0, line, (size_t)n);
        }
        return;
    }
    if (strcmp(service, "resp_all") == 0) {
        resp_str stack_args[MAX_ARGS_ON_STACK], *args;
        long argc;
        pend *p;
        g_out_n = 0;
        argc = split((const char *)msg, len, stack_args, &args);
        p = argc > 0 ? (pend *)calloc(1, sizeof *p) : NULL;
        if (p) {
            p->req = req;
            fan_out(p, args, argc, 0);
        } else {
            node_reply(req, 0, argc > 0 ? "-ERR out of memory\r\n" : g_out,
                       argc > 0 ? 20 : g_out_n);
        }
        if (args != stack_args) free(args);
        return;
    }
    node_reply(req, 1, "-ERR no such service\r\n", 22);
}
