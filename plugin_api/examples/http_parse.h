/* The HTTP/1.x request framer and parser of the http example plugin: pure functions of the
 * bytes, no asyncd calls, so that they can be tested on their own (and compile as C and as
 * C++).
 *
 * http_frame() says how long the first request is (its header block, then Content-Length
 * bytes of body); http_parse() reads a whole one. */
#ifndef ASYNCD_HTTP_PARSE_H
#define ASYNCD_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define HTTP_MAX_HEADER (16 * 1024)
#define HTTP_MAX_BODY (1024L * 1024 * 1024)

typedef struct http_req {
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    int minor;         /* HTTP/1.<minor> */
    int keep_alive;    /* the connection stays open after the answer */
    size_t header_len; /* request line and headers, with the empty line */
    size_t content_length;
} http_req;

/* Where the header block ends (just past its empty line) within d[0..avail), or 0. Lines
 * may end with CRLF or a bare LF. */
static inline size_t http_header_end(const char *d, size_t avail) {
    size_t i;
    for (i = 0; i < avail; i++) {
        if (d[i] != '\n') continue;
        if (i + 1 < avail && d[i + 1] == '\n') return i + 2;
        if (i + 2 < avail && d[i + 1] == '\r' && d[i + 2] == '\n') return i + 3;
    }
    return 0;
}

static inline int http_lower_eq(const char *p, size_t n, const char *word) {
    size_t i;
    if (strlen(word) != n) return 0;
    for (i = 0; i < n; i++) {
        char c = p[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != word[i]) return 0;
    }
    return 1;
}

/* Does the comma-separated header value hold token (case-insensitive)? */
static inline int http_has_token(const char *v, size_t n, const char *token) {
    size_t i = 0;
    while (i < n) {
        size_t start, end;
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        start = i;
        while (i < n && v[i] != ',')
            i++;
        end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end > start && http_lower_eq(v + start, end - start, token)) return 1;
    }
    return 0;
}

static inline int http_tchar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Parses the header block of a request that starts at d and whose header block ends at
 * header_len. Returns 0, or the status to answer with: 400 (malformed), 501 (a transfer
 * coding: not supported here), 505 (not HTTP/1.x). */
static inline int http_parse_header(const char *d, size_t header_len, http_req *r) {
    size_t i = 0, end = header_len;
    int has_host = 0, has_length = 0, conn_close = 0, conn_keep = 0;
    memset(r, 0, sizeof *r);
    r->header_len = header_len;
    /* request line: METHOD SP TARGET SP HTTP/1.x */
    r->method = d;
    while (i < end && http_tchar(d[i]))
        i++;
    r->method_len = i;
    if (i == 0 || i >= end || d[i] != ' ') return 400;
    r->target = d + ++i;
    while (i < end && d[i] > ' ' && d[i] != 0x7f)
        i++;
    r->target_len = (size_t)(d + i - r->target);
    if (r->target_len == 0 || i >= end || d[i] != ' ') return 400;
    i++;
    if (end - i < 9 || memcmp(d + i, "HTTP/", 5) != 0) return 400;
    if (d[i + 5] != '1' || d[i + 6] != '.') return 505;
    if (d[i + 7] < '0' || d[i + 7] > '9') return 400;
    r->minor = d[i + 7] - '0';
    i += 8;
    if (d[i] == '\r') i++;
    if (i >= end || d[i] != '\n') return 400;
    i++;
    /* header fields, up to the empty line */
    for (;;) {
        size_t name, name_len, val, val_end;
        if (i >= end) return 400;
        if (d[i] == '\n' || (d[i] == '\r' && i + 1 < end && d[i + 1] == '\n')) break;
        name = i;
        while (i < end && http_tchar(d[i]))
            i++;
        name_len = i - name;
        if (name_len == 0 || i >= end || d[i] != ':') return 400;
        i++;
        while (i < end && (d[i] == ' ' || d[i] == '\t'))
            i++;
        val = i;
        while (i < end && d[i] != '\n')
            i++;
        if (i >= end) return 400;
        val_end = i;
        if (val_end > val && d[val_end - 1] == '\r') val_end--;
        while (val_end > val && (d[val_end - 1] == ' ' || d[val_end - 1] == '\t'))
            val_end--;
        i++;
        if (http_lower_eq(d + name, name_len, "content-length")) {
            size_t v = 0, k;
            if (val_end == val) return 400;
            for (k = val; k < val_end; k++) {
                if (d[k] < '0' || d[k] > '9') return 400;
                v = v * 10 + (size_t)(d[k] - '0');
                if (v > (size_t)HTTP_MAX_BODY) return 400;
            }
            if (has_length && v != r->content_length) return 400;
            has_length = 1;
            r->content_length = v;
        } else if (http_lower_eq(d + name, name_len, "transfer-encoding")) {
            return 501;
        } else if (http_lower_eq(d + name, name_len, "connection")) {
            conn_close |= http_has_token(d + val, val_end - val, "close");
            conn_keep |= http_has_token(d + val, val_end - val, "keep-alive");
        } else if (http_lower_eq(d + name, name_len, "host")) {
            if (has_host) return 400;
            has_host = 1;
        }
    }
    if (r->minor >= 1 && !has_host) return 400; /* HTTP/1.1 requires Host */
    r->keep_alive = r->minor >= 1 ? !conn_close : (conn_keep && !conn_close);
    return 0;
}

/* The length of the first request at d: > 0 when it is all there (header block and body),
 * 0 when more bytes are needed. A header block past HTTP_MAX_HEADER, or one that cannot be
 * parsed, is framed as it is, so that the handler answers it (400, 431) and closes. */
static inline size_t http_frame(const char *d, size_t avail) {
    http_req r;
    size_t hl;
    if (avail == 0) return 0;
    if (d[0] == '\n') return 1; /* stray line ends between requests */
    if (d[0] == '\r') return avail > 1 && d[1] == '\n' ? 2 : (avail > 1 ? 1 : 0);
    hl = http_header_end(d, avail < HTTP_MAX_HEADER ? avail : HTTP_MAX_HEADER);
    if (hl == 0) return avail >= HTTP_MAX_HEADER ? avail : 0;
    if (http_parse_header(d, hl, &r) != 0) return hl;
    return hl + r.content_length;
}

#endif /* ASYNCD_HTTP_PARSE_H */
