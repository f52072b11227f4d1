/*
 * asyncd plugin API: the one header a plugin includes. Plain C with C linkage; it compiles
 * as C and as C++.
 *
 * A plugin is a shared object (cc -shared -fPIC) that exports the functions below by name.
 * Only proc_pkg_cli is required. Everything it exports runs in a work process, except
 * get_pkg_len and select_worker, which run in the conn process on every packet and must be
 * fast, pure functions of their arguments.
 *
 * Connections are named by a 64-bit asyncd_conn_t that is never reused, never by an fd.
 */
#ifndef ASYNCD_PLUGIN_H
#define ASYNCD_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#define ASYNCD_ABI_VERSION 1

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t asyncd_conn_t;

/* The client's address as text ("127.0.0.1", "::1") and ports. */
typedef struct asyncd_peer {
    char addr[46];
    uint16_t port;
    uint16_t local_port;
} asyncd_peer_t;

/* Why link_down_cli is called. */
enum asyncd_down_reason {
    ASYNCD_DOWN_PEER_CLOSED = 1,   /* the client closed or reset the connection */
    ASYNCD_DOWN_ERROR = 2,         /* a socket error */
    ASYNCD_DOWN_BAD_FRAME = 3,     /* a length or get_pkg_len answer out of bounds */
    ASYNCD_DOWN_PLUGIN_CLOSE = 4,  /* net_close_cli, or proc_pkg_cli returned non-zero */
    ASYNCD_DOWN_IDLE = 5,          /* idle_timeout */
    ASYNCD_DOWN_LIMIT = 6,         /* a limit tripped (output buffer, packet deadline) */
    ASYNCD_DOWN_CONN_RESTART = 7,  /* the conn process restarted; every connection is gone */
    ASYNCD_DOWN_SHUTDOWN = 8,      /* asyncd is stopping */
    ASYNCD_DOWN_WORKER_RESTART = 9 /* the connection lives on, but this worker process is being
                                    * replaced (a reload, worker_max_rss): its successor gets
                                    * link_up_cli for the connection as it starts */
};

enum asyncd_log_level {
    ASYNCD_LOG_DEBUG = 0,
    ASYNCD_LOG_INFO = 1,
    ASYNCD_LOG_WARN = 2,
    ASYNCD_LOG_ERROR = 3,
    ASYNCD_LOG_CRIT = 4,
    ASYNCD_LOG_ALERT = 5
};

/* ---- What a plugin exports (only proc_pkg_cli is required) -------------------------- */

/* Work: once at start. 0 to run; anything else is fatal for the worker (not restarted). */
int init_service(int worker_index);
/* Work: once at a clean stop, after the last packet. */
void fini_service(int worker_index);
/* Conn, with frame plugin: >0 the length of the packet at data, 0 need more bytes, <0 the
 * stream is bad and the connection is closed. */
int get_pkg_len(asyncd_conn_t conn, const void *data, size_t avail);
/* Conn: which worker (0..nworkers-1) serves this connection, from its first packet. Out of
 * range answers fall back to round-robin. */
int select_worker(asyncd_conn_t conn, const void *pkg, size_t len, int nworkers);
/* Work: a client connected (before its first packet). */
void link_up_cli(asyncd_conn_t conn, const asyncd_peer_t *peer);
/* Work: one whole packet, exactly as framed (length prefix included). Non-zero closes the
 * connection after what was sent to it has gone out. */
int proc_pkg_cli(asyncd_conn_t conn, const void *pkg, size_t len);
/* Work: the connection is gone; reason is an asyncd_down_reason. */
void link_down_cli(asyncd_conn_t conn, int reason);
/* Work: on every loop turn, and at least every 100 ms. */
void proc_events(void);

/* ---- What asyncd gives a plugin (work side) ----------------------------------------- */

/* Queues len bytes for the client, sent as they are. Returns 0, or -1 when len is above
 * max_reply_len or conn is 0. A reply for a connection that has gone is dropped by conn.
 * Replies to one connection go out in order, coalesced into one write per loop turn. */
int net_send_cli(asyncd_conn_t conn, const void *buf, size_t len);
/* Closes the connection once everything sent to it before has gone out. Returns 0, or -1
 * when conn is 0 or called outside a worker. */
int net_close_cli(asyncd_conn_t conn);

typedef void (*asyncd_timer_fn)(void *arg);
/* Calls fn(arg) once, ms milliseconds from now, from the worker's loop. Returns a timer id
 * (never 0). */
uint64_t asyncd_timer_add(uint32_t ms, asyncd_timer_fn fn, void *arg);
/* Cancels a timer that has not fired. Returns 0, or -1 if there was no such timer. */
int asyncd_timer_cancel(uint64_t timer_id);
/* Milliseconds on a monotonic clock. */
uint64_t asyncd_now_ms(void);

/* One log line at level (asyncd_log_level), with asyncd's time, level and process. */
void asyncd_log(int level, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

int asyncd_worker_index(void);
/* The running `workers` setting: a reload that changes it changes it in every worker at once
 * (a retiring worker's index is at or past it). */
int asyncd_worker_count(void);

/* The plugin's own config value for `plugin.KEY VALUE` lines: asyncd_config("KEY"), or
 * NULL when the file has no such line. */
const char *asyncd_config(const char *key);

/* ---- The cluster: calls between nodes (and to this node's other workers) --------------- */

typedef uint64_t asyncd_call_t; /* a call this worker made; never 0, never reused by it */
typedef uint64_t asyncd_req_t;  /* a call this worker was given */

enum asyncd_node_status {
    ASYNCD_NODE_OK = 0,          /* reply is the callee's answer */
    ASYNCD_NODE_REMOTE = 1,      /* the callee answered with a non-zero status (in code) */
    ASYNCD_NODE_TIMEOUT = 2,     /* no answer by the deadline; a later one is dropped */
    ASYNCD_NODE_UNKNOWN = 3,     /* the cluster file names no such node */
    ASYNCD_NODE_DOWN = 4,        /* marked down, or unreachable now (backing off) */
    ASYNCD_NODE_LINK_LOST = 5,   /* the link broke after the call was written: it may have run */
    ASYNCD_NODE_QUEUE_FULL = 6,  /* too much already waits for that node */
    ASYNCD_NODE_TOO_LARGE = 7,   /* above the cluster's max_message */
    ASYNCD_NODE_BUSY = 8,        /* the callee's node had no room in the worker's ring */
    ASYNCD_NODE_WORKER_DIED = 9, /* the callee's worker died on it: it may have run */
    ASYNCD_NODE_STOPPING = 10,   /* this node or that one is stopping */
    ASYNCD_NODE_PEER_RESTARTED = 11, /* the callee's node restarted with the call pending */
    ASYNCD_NODE_NO_SERVICE = 12      /* the callee's plugin does not export proc_pkg_node */
};
#define ASYNCD_ROUTE_ANY (-1) /* the callee's conn picks a worker */
#define ASYNCD_ROUTE_KEY (-2) /* the worker that key maps to on that node */

typedef void (*asyncd_call_fn)(void *arg, asyncd_call_t call, int status, int code,
                               const void *reply, size_t len);
/* Calls `service` on `node` (a name from the cluster file, or "." for this node); route is a
 * worker index, ASYNCD_ROUTE_ANY or ASYNCD_ROUTE_KEY (by key). Returns the call id, or 0 (and
 * fn is never called) when fn, node or service is NULL. Every other outcome reaches fn
 * exactly once, from the worker's loop, never from inside node_call. timeout_ms 0: the
 * cluster's call_timeout. */
asyncd_call_t node_call(const char *node, const char *service, int route, uint64_t key,
                        const void *msg, size_t len, uint32_t timeout_ms, asyncd_call_fn fn,
                        void *arg);
/* A message with no answer: 0 when queued, or the asyncd_node_status it was dropped with at
 * once (a send dropped later is counted). */
int node_send(const char *node, const char *service, int route, uint64_t key, const void *msg,
              size_t len);
/* Answers a call given to proc_pkg_node, once, now or later. -1 for an unknown or already
 * answered req. status 0: OK; anything else reaches the caller as ASYNCD_NODE_REMOTE with
 * status as its code. */
int node_reply(asyncd_req_t req, int status, const void *buf, size_t len);
/* This node's name (node_name), or "" without a cluster. */
const char *asyncd_node_name(void);

/* Exports, all optional. proc_pkg_node: a call (req != 0: answer it with node_reply) or a
 * send (req 0) from node `from`; deadline_ms is on asyncd_now_ms()'s clock, 0 for none. */
void proc_pkg_node(asyncd_req_t req, const char *from, const char *service, const void *msg,
                   size_t len, uint64_t deadline_ms);
void link_up_node(const char *node);
/* reason: an asyncd_node_status (LINK_LOST, PEER_RESTARTED, STOPPING, ...). */
void link_down_node(const char *node, int reason);

/* ---- The ABI check ------------------------------------------------------------------ */

/* asyncd refuses a plugin whose asyncd_plugin_abi differs from its own ASYNCD_ABI_VERSION.
 * Including this header defines it; a weak definition, so every file may include it. */
#if defined(__cplusplus)
__attribute__((weak, visibility("default"))) extern const int asyncd_plugin_abi =
    ASYNCD_ABI_VERSION;
#else
__attribute__((weak, visibility("default"))) const int asyncd_plugin_abi = ASYNCD_ABI_VERSION;
#endif

#ifdef __cplusplus
}
#endif

#endif /* ASYNCD_PLUGIN_H */
