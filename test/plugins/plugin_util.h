/* What the test plugins share: a reply of text as one length-prefixed frame, and one line
 * per callback in the event log (plugin.event_log), written whole or not at all. */
#ifndef ASYNCD_TEST_PLUGIN_UTIL_H
#define ASYNCD_TEST_PLUGIN_UTIL_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugin_api/asyncd_plugin.h"

static int g_log_fd = -1; /* the event log, when the plugin opened one */

/* text as a frame: a 4-byte big-endian length that counts itself, then the bytes (at most
 * 4 KiB of them). */
__attribute__((unused)) static int reply(asyncd_conn_t conn, const char *text) {
    char buf[4 + 4096];
    size_t n = strlen(text);
    uint32_t total;
    if (n > sizeof buf - 4) n = sizeof buf - 4;
    total = (uint32_t)(n + 4);
    buf[0] = (char)(total >> 24);
    buf[1] = (char)(total >> 16);
    buf[2] = (char)(total >> 8);
    buf[3] = (char)total;
    memcpy(buf + 4, text, n);
    return net_send_cli(conn, buf, n + 4);
}

__attribute__((unused, format(printf, 1, 2))) static void event(const char *fmt, ...) {
    char line[256];
    va_list ap;
    int n;
    if (g_log_fd < 0) return;
    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    if (write(g_log_fd, line, (size_t)n) != n) abort(); /* a lost line would mislead a test */
}

#endif
