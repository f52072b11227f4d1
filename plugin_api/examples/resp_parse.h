/* The RESP2 request framer and splitter of the resp example plugin: pure functions of the
 * bytes, no asyncd calls, so that they can be tested on their own (and compile as C and as
 * C++).
 *
 * A request is either multibulk ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", what clients send) or
 * inline ("GET k\r\n", what a person types into telnet). resp_frame() says how long the
 * first request is, resp_split() cuts a whole one into its arguments. */
#ifndef ASYNCD_RESP_PARSE_H
#define ASYNCD_RESP_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Redis's own limits. */
#define RESP_MAX_ARGS (1024L * 1024)
#define RESP_MAX_BULK (512L * 1024 * 1024)
#define RESP_MAX_INLINE (64 * 1024)

typedef struct resp_str {
    const char *p;
    size_t n;
} resp_str;

/* Scan results of one header line ("*3\r\n", "$5\r\n"). */
enum { RESP_SCAN_OK = 1, RESP_SCAN_MORE = 0, RESP_SCAN_BAD = -1 };

/* Reads "<prefix><integer>\r\n" at d[*pos]. On RESP_SCAN_OK *value is the integer and *pos
 * is past the line. A line that cannot end within `line_max` bytes is bad. */
static inline int resp_scan_int_line(const char *d, size_t avail, size_t *pos, long *value,
                                     size_t line_max) {
    size_t i = *pos + 1; /* past the prefix */
    long v = 0;
    int neg = 0, digits = 0;
    if (i < avail && d[i] == '-') {
        neg = 1;
        i++;
    }
    for (; i < avail && d[i] >= '0' && d[i] <= '9'; i++) {
        if (v > (RESP_MAX_BULK + 9) / 10) return RESP_SCAN_BAD; /* far beyond any limit */
        v = v * 10 + (d[i] - '0');
        digits++;
    }
    if (i >= avail) return i - *pos > line_max ? RESP_SCAN_BAD : RESP_SCAN_MORE;
    if (d[i] != '\r' || !digits) return RESP_SCAN_BAD;
    if (i + 1 >= avail) return RESP_SCAN_MORE;
    if (d[i + 1] != '\n') return RESP_SCAN_BAD;
    *value = neg ? -v : v;
    *pos = i + 2;
    return RESP_SCAN_OK;
}

/* Walks one multibulk request. Returns its length, 0 if more bytes are needed, or -1 with
 * *err set. With args, stores up to max of them and counts the rest in *argc. */
static inline long resp_walk_multibulk(const char *d, size_t avail, resp_str *args, size_t max,
                                       long *argc, const char **err) {
    size_t pos = 0;
    long n = 0, i;
    int s = resp_scan_int_line(d, avail, &pos, &n, 32);
    if (s == RESP_SCAN_MORE) return 0;
    if (s == RESP_SCAN_BAD || n > RESP_MAX_ARGS) {
        *err = "Protocol error: invalid multibulk length";
        return -1;
    }
    *argc = n < 0 ? 0 : n;
    for (i = 0; i < n; i++) {
        long blen = 0;
        if (pos >= avail) return 0;
        if (d[pos] != '$') {
            *err = "Protocol error: expected '$'";
            return -1;
        }
        s = resp_scan_int_line(d, avail, &pos, &blen, 32);
        if (s == RESP_SCAN_MORE) return 0;
        if (s == RESP_SCAN_BAD || blen < 0 || blen > RESP_MAX_BULK) {
            *err = "Protocol error: invalid bulk length";
            return -1;
        }
        if (avail - pos < (size_t)blen + 2) return 0;
        if (d[pos + (size_t)blen] != '\r' || d[pos + (size_t)blen + 1] != '\n') {
            *err = "Protocol error: expected CRLF after a bulk string";
            return -1;
        }
        if (args && (size_t)i < max) {
            args[i].p = d + pos;
            args[i].n = (size_t)blen;
        }
        pos += (size_t)blen + 2;
    }
    return (long)pos;
}

/* The length of the first request at d: > 0 when it is all there, 0 when more bytes are
 * needed. Input that no request can start with (a bad multibulk header, an inline line
 * past 64 KiB) is framed whole as one bad request, so that the handler answers it with an
 * error and closes, as redis does. */
static inline size_t resp_frame(const char *d, size_t avail) {
    const char *err = NULL;
    long argc = 0, n;
    const char *nl;
    if (avail == 0) return 0;
    if (d[0] == '*') {
        n = resp_walk_multibulk(d, avail, NULL, 0, &argc, &err);
        return n < 0 ? avail : (size_t)n;
    }
    nl = (const char *)memchr(d, '\n', avail < RESP_MAX_INLINE ? avail : RESP_MAX_INLINE);
    if (nl) return (size_t)(nl - d) + 1;
    return avail >= RESP_MAX_INLINE ? avail : 0;
}

/* Splits one whole request (as framed by resp_frame) into its arguments: stores up to max
 * in args and returns how many there are (0 for an empty line or "*0"), or -1 with *err
 * set for a request that is not valid RESP. */
static inline long resp_split(const char *d, size_t len, resp_str *args, size_t max,
                              const char **err) {
    long argc = 0;
    size_t i = 0, end = len;
    if (len == 0) return 0;
    if (d[0] == '*') {
        long n = resp_walk_multibulk(d, len, args, max, &argc, err);
        if (n < 0) return -1;
        if ((size_t)n != len) {
            *err = "Protocol error: unbalanced multibulk request";
            return -1;
        }
        return argc;
    }
    if (d[end - 1] != '\n') {
        *err = "Protocol error: too big inline request";
        return -1;
    }
    end--;
    if (end > 0 && d[end - 1] == '\r') end--;
    while (i < end) {
        size_t start;
        while (i < end && (d[i] == ' ' || d[i] == '\t'))
            i++;
        if (i == end) break;
        start = i;
        while (i < end && d[i] != ' ' && d[i] != '\t')
            i++;
        if (args && (size_t)argc < max) {
            args[argc].p = d + start;
            args[argc].n = i - start;
        }
        argc++;
    }
    return argc;
}

/* Case-insensitive comparison of an argument with a lower-case word. */
static inline int resp_is(const resp_str *a, const char *word) {
    size_t i, n = strlen(word);
    if (a->n != n) return 0;
    for (i = 0; i < n; i++) {
        char c = a->p[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != word[i]) return 0;
    }
    return 1;
}

#endif /* ASYNCD_RESP_PARSE_H */
