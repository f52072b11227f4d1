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
