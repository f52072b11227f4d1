/* The echo plugin: answers every packet with the same bytes, length prefix included. */
#include "plugin_api/asyncd_plugin.h"

int proc_pkg_cli(asyncd_conn_t conn, const void *pkg, size_t len) {
    return net_send_cli(conn, pkg, len) == 0 ? 0 : -1;
}
