/* The http example plugin: HTTP/1.1 with keep-alive and pipelining, for curl, wrk and
 * browsers. GET / (and HEAD /) answers 200 with a short body, other paths 404, other
 * methods 405; a malformed request gets 400 and a close; `Connection: close` is honoured.
 *
 * It frames its own packets (`frame plugin`): get_pkg_len runs in the conn process and
 * finds where each request ends (its header block, then Content-Length bytes of body);
 * proc_pkg_cli runs in a worker and answers one request. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "plugin_api/asyncd_plugin.h"
#include "plugin_api/examples/http_parse.h"

static const char kBody[] = "Hello from asyncd\n";

int get_pkg_len(asyncd_conn_t conn, const void *data, size_t avail) {
    size_t n = http_frame((const char *)data, avail);
    (void)conn;
    return n > 0x7fffffff ? -1 : (int)n;
}

/* The Date header, formatted once a second. */
static char g_date[64];
static time_t g_date_at = -1;

static const char *date_header(void) {
    time_t now = time(NULL);
    if (now != g_date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(g_date, sizeof g_date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        g_date_at = now;
    }
    return g_date;
}

static const char *reason(int status) {
    switch (status) {
        case 200:
            return "OK";
        case 400:
            return "Bad Request";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 431:
            return "Request Header Fields Too Large";
        case 501:
            return "Not Implemented";
        case 505:
            return "HTTP Version Not Supported";
    }
    return "Error";
}

/* Sends one response. `close` adds Connection: close (the caller then returns non-zero);
 * `keep_10` says keep-alive to an HTTP/1.0 client that asked for it. */
static int respond(asyncd_conn_t c, int status, const char *body, size_t body_len, int head,
                   int close, int keep_10) {
    char buf[512];
    int n =
        snprintf(buf, sizeof buf,
                 "HTTP/1.1 %d %s\r\nServer: asyncd\r\n%sContent-Type: text/plain\r\n"
                 "Content-Length: %zu\r\n%s%s\r\n",
                 status, reason(status), date_header(), body_len,
                 status == 405 ? "Allow: GET, HEAD\r\n" : "",
                 close ? "Connection: close\r\n" : (keep_10 ? "Connection: keep-alive\r\n" : ""));
    if (n < 0 || (size_t)n >= sizeof buf) return -1;
    if (!head && body_len <= sizeof buf - (size_t)n) {
        memcpy(buf + n, body, body_len);
        n += (int)body_len;
        body_len = 0;
    }
    if (net_send_cli(c, buf, (size_t)n) != 0) return -1;
    if (!head && body_len) return net_send_cli(c, body, body_len);
    return 0;
}

static int fail(asyncd_conn_t c, int status) {
    char body[64];
    int n = snprintf(body, sizeof body, "%s\n", reason(status));
    respond(c, status, body, (size_t)n, 0, 1, 0);
    return 1; /* close once it has gone out */
}

/* The answer to a keep-alive `GET /`, the request a load test repeats: built once a second
 * (its Date changes) rather than formatted each time. */
static char g_ok[512];
static size_t g_ok_len;
static time_t g_ok_at = -1;

static int send_ok(asyncd_conn_t c) {
    const char *date = date_header();
    if (g_ok_at != g_date_at) {
        int n = snprintf(g_ok, sizeof g_ok,
                         "HTTP/1.1 200 OK\r\nServer: asyncd\r\n%sContent-Type: text/plain\r\n"
                         "Content-Length: %zu\r\n\r\n%s",
                         date, sizeof kBody - 1, kBody);
        if (n < 0 || (size_t)n >= sizeof g_ok) return -1;
        g_ok_len = (size_t)n;
        g_ok_at = g_date_at;
    }
    return net_send_cli(c, g_ok, g_ok_len);
}

int proc_pkg_cli(asyncd_conn_t conn, const void *pkg, size_t len) {
    const char *d = (const char *)pkg;
    http_req r;
    size_t hl;
    int status, head, close;
    if (d[0] == '\r' || d[0] == '\n') return 0; /* stray line ends between requests */
    hl = http_header_end(d, len < HTTP_MAX_HEADER ? len : HTTP_MAX_HEADER);
    if (hl == 0) return fail(conn, len >= HTTP_MAX_HEADER ? 431 : 400);
    status = http_parse_header(d, hl, &r);
    if (status) return fail(conn, status);
    if (hl + r.content_length != len) return fail(conn, 400); /* framing disagrees */
    head = r.method_len == 4 && memcmp(r.method, "HEAD", 4) == 0;
    close = !r.keep_alive;
    if (!head && !(r.method_len == 3 && memcmp(r.method, "GET", 3) == 0)) {
        respond(conn, 405, "Method Not Allowed\n", 19, 0, close, r.minor == 0 && !close);
    } else if (r.target_len == 1 && r.target[0] == '/') {
        if (!head && !close && r.minor >= 1) return send_ok(conn) == 0 ? 0 : 1;
        respond(conn, 200, kBody, sizeof kBody - 1, head, close, r.minor == 0 && !close);
    } else {
        respond(conn, 404, "Not Found\n", 10, head, close, r.minor == 0 && !close);
    }
    return close;
}
