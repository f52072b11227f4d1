/* Routes each connection by the first payload byte of its first packet: that byte (an ASCII
 * digit) names the worker. Answers every packet with "w<worker index>". */
#include <stdio.h>
#include <string.h>

#include "plugin_api/asyncd_plugin.h"

int select_worker(asyncd_conn_t conn, const void *pkg, size_t len, int nworkers) {
    (void)conn;
    if (len < 5) return -1;
    int w = ((const unsigned char *)pkg)[4] - '0';
    return w >= 0 && w < nworkers ? w : -1;
}

int proc_pkg_cli(asyncd_conn_t conn, const void *pkg, size_t len) {
    char buf[16];
    (void)pkg;
    (void)len;
    int n = snprintf(buf + 4, sizeof buf - 4, "w%d", asyncd_worker_index());
    buf[0] = 0;
    buf[1] = 0;
    buf[2] = 0;
    buf[3] = (char)(n + 4);
    return net_send_cli(conn, buf, (size_t)n + 4);
}
