/* frame plugin: a packet is a line ending in '\n' (at most 1000 bytes; longer is a bad
 * stream). Answers each line upper-cased. */
#include <string.h>

#include "plugin_api/asyncd_plugin.h"

int get_pkg_len(asyncd_conn_t conn, const void *data, size_t avail) {
    (void)conn;
    const char *nl = memchr(data, '\n', avail);
    if (nl) return (int)(nl - (const char *)data) + 1;
    return avail > 1000 ? -1 : 0;
}

int proc_pkg_cli(asyncd_conn_t conn, const void *pkg, size_t len) {
    char out[1024];
    const char *in = pkg;
    for (size_t i = 0; i < len; i++) {
        out[i] = (in[i] >= 'a' && in[i] <= 'z') ? (char)(in[i] - 32) : in[i];
    }
    return net_send_cli(conn, out, len);
}
