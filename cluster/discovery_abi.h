// The membership-provider interface between conn and an optional discovery module (a
// shared object conn loads with dlopen; cluster/zk/ is the ZooKeeper one). The module runs
// its own threads; conn's loop only ever calls the three functions below, none of which
// blocks on the network. The module says that something changed by writing the eventfd it
// was given; conn then takes what changed, on its own thread.
//
// What a module reports is its whole view of the other nodes each time it changes (a node
// appeared, changed its data, disappeared, or the view was replaced after a new session):
// conn diffs it against what it runs, so an event the module coalesced is never lost. A view
// is only ever replaced by what the service said: while the service is unreachable the
// module reports no view, and the table stays as it is.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ASYNCD_DISCOVERY_ABI 1

struct asyncd_discovery_args {
    int abi;             /* ASYNCD_DISCOVERY_ABI */
    const char *servers; /* the service's addresses, "HOST:PORT,HOST:PORT" */
    const char *root;    /* where this cluster lives in it, e.g. "/asyncd/game" */
    const char *name;    /* this node's name */
    const char *data;    /* this node's registration: "addr=HOST:PORT workers=N ..." */
    const char *addr;    /* its address alone ("HOST:PORT"): tells our own earlier life */
    int session_ms;      /* the session timeout */
    int event_fd;        /* an eventfd: the module adds 1 when it has something to take */
};

enum asyncd_discovery_kind {
    ASYNCD_DISC_LOG = 1,     /* a = "error" | "warn" | "info", b = the line */
    ASYNCD_DISC_STATE = 2,   /* a = "connected" | "connecting" | "expired" | "registered" */
    ASYNCD_DISC_REFUSED = 3, /* b = why this node may not register (a live node has it) */
    ASYNCD_DISC_VIEW = 4,    /* a whole view follows: NODE events, then VIEW_END */
    ASYNCD_DISC_NODE = 5,    /* a = name, b = its registration data */
    ASYNCD_DISC_VIEW_END = 6
};

typedef void (*asyncd_discovery_fn)(void *ctx, int kind, const char *a, const char *b);

/* Starts the module (its session is set up in the background). NULL with the reason in
 * err when it cannot even start (bad arguments, no memory, an ABI it does not speak). */
void *asyncd_discovery_open(const struct asyncd_discovery_args *args, char *err, size_t errlen);
/* Hands over what happened since the last take, in order, on the caller's thread. */
void asyncd_discovery_take(void *handle, asyncd_discovery_fn fn, void *ctx);
/* Ends the session (our registration goes with it) and frees the handle. */
void asyncd_discovery_close(void *handle);

#ifdef __cplusplus
}
#endif
