/* A gateway: each client packet (len32be framed) is forwarded with node_call to a service on
 * another node, and the answer goes back to the client, framed the same way: the shape of a
 * game gateway in front of logic nodes. Config (asyncd.conf):
 *
 *   plugin.target_node  logic     # the node to call ("." for this node); default "."
 *   plugin.service      echo      # the service name; default "echo"
 *   plugin.timeout_ms   0         # 0: the cluster's call_timeout
 *
 * A call that fails answers the client "ERR <status>" (asyncd_node_status as a number), so a
 * client never waits on a lost call. A connection's calls all go to one worker of the target
 * (ASYNCD_ROUTE_KEY by connection), and calls between two workers keep their order, so a
 * pipelining client gets its answers in the order it asked. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_api/asyncd_plugin.h"

static const char *target = ".";
static const char *service = "echo";
static uint32_t timeout_ms;

int init_service(int worker_index) {
    (void)worker_index;
    const char *v;
    if ((v = asyncd_config("target_node"))) target = v;
    if ((v = asyncd_config("service"))) service = v;
    if ((v = asyncd_config("timeout_ms"))) timeout_ms = (uint32_t)strtoul(v, NULL, 10);
    return 0;
}

/* len32be: a 4-byte big-endian length that counts itself, then the body. */
static void send_framed(asyncd_conn_t conn, const void *body, size_t len) {
    size_t total = len + 4;
    uint8_t head[4] = {(uint8_t)(total >> 24), (uint8_t)(total >> 16), (uint8_t)(total >> 8),
                       (uint8_t)total};
    /* Two sends to one connection in a turn travel as one write. */
    net_send_cli(conn, head, 4);
    if (len) net_send_cli(conn, body, len);
}

static void answered(void *arg, asyncd_call_t call, int status, int code, const void *reply,
                     size_t len) {
    (void)call;
    asyncd_conn_t conn = (asyncd_conn_t)(uintptr_t)arg;
    if (status == ASYNCD_NODE_OK) {
        send_framed(conn, reply, len);
        return;
    }
    char text[48];
    int n = snprintf(text, sizeof text, "ERR %d %d", status, code);
    send_framed(conn, text, (size_t)n);
}

int proc_pkg_cli(asyncd_conn_t conn, const void *pkg, size_t len) {
    if (len < 4) return -1;
    asyncd_call_t id = node_call(target, service, ASYNCD_ROUTE_KEY, conn, (const uint8_t *)pkg + 4,
                                 len - 4, timeout_ms, answered, (void *)(uintptr_t)conn);
    return id ? 0 : -1;
}
