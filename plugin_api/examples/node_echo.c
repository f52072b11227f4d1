/* A node-side service: answers every node_call with the message it was given, and counts
 * node_send arrivals (`count` service: a call answers how many sends came, as text).
 * Clients of this node get the echo plugin's behaviour, so the node can be tried alone. */
#include <stdio.h>
#include <string.h>

#include "plugin_api/asyncd_plugin.h"

static unsigned long long sends_seen;

int proc_pkg_cli(asyncd_conn_t conn, const void *pkg, size_t len) {
    return net_send_cli(conn, pkg, len) == 0 ? 0 : -1;
}

void proc_pkg_node(asyncd_req_t req, const char *from, const char *service, const void *msg,
                   size_t len, uint64_t deadline_ms) {
    (void)from;
    (void)deadline_ms;
    if (!req) {
        sends_seen++;
        return;
    }
    if (strcmp(service, "count") == 0) {
        char text[32];
        int n = snprintf(text, sizeof text, "%llu", sends_seen);
        node_reply(req, 0, text, (size_t)n);
        return;
    }
    if (strcmp(service, "fail") == 0) {
        node_reply(req, 42, "no", 2); /* the caller sees ASYNCD_NODE_REMOTE, code 42 */
        return;
    }
    node_reply(req, 0, msg, len);
}
