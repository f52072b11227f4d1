/* ref_echo: the smallest correct single-process epoll echo server for asyncd's frame (a
 * 4-byte big-endian length that counts itself, then the bytes). Non-blocking, TCP_NODELAY,
 * every whole packet read in a turn answered with one write. It is the "no extra hop" limit
 * asyncd's conn/work split is measured against.
 *
 * usage: ref_echo PORT [MAX_PKG_LEN]   (listens on 127.0.0.1) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct conn {
    int fd;
    unsigned char *in; /* bytes of a packet not yet whole */
    size_t in_len, in_cap;
    unsigned char *out; /* replies the socket did not take */
    size_t out_len, out_off, out_cap;
} conn_t;

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static int grow(unsigned char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < need)
        c *= 2;
    unsigned char *p = realloc(*buf, c);
    if (!p) return -1;
    *buf = p;
    *cap = c;
    return 0;
}

static void drop(int ep, conn_t *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

/* Writes what is pending; arms EPOLLOUT only when the socket is full. -1: drop it. */
static int flush_out(int ep, conn_t *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            return 0;
        } else {
            return -1;
        }
    }
    c->out_len = c->out_off = 0;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    return 0;
}

static int on_read(int ep, conn_t *c, unsigned char *scratch, size_t scratch_len, size_t max_pkg) {
    ssize_t n = recv(c->fd, scratch, scratch_len, 0);
    if (n == 0) return -1;
    if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    unsigned char *data = scratch;
    size_t len = (size_t)n;
    if (c->in_len) {
        if (grow(&c->in, &c->in_cap, c->in_len + len) < 0) return -1;
        memcpy(c->in + c->in_len, scratch, len);
        c->in_len += len;
        data = c->in;
        len = c->in_len;
    }
    size_t off = 0;
    while (len - off >= 4) {
        uint32_t pkt = ((uint32_t)data[off] << 24) | ((uint32_t)data[off + 1] << 16) |
                       ((uint32_t)data[off + 2] << 8) | data[off + 3];
        if (pkt < 4 || pkt > max_pkg) return -1;
        if (len - off < pkt) break;
        off += pkt;
    }
    /* Everything whole goes back in one piece: the packets are contiguous. */
    if (off) {
        if (grow(&c->out, &c->out_cap, c->out_len + off) < 0) return -1;
        memcpy(c->out + c->out_len, data, off);
        c->out_len += off;
    }
    size_t rest = len - off;
    if (data == c->in) {
        memmove(c->in, c->in + off, rest);
        c->in_len = rest;
    } else if (rest) {
        if (grow(&c->in, &c->in_cap, rest) < 0) return -1;
        memcpy(c->in, data + off, rest);
        c->in_len = rest;
    }
    return off ? flush_out(ep, c) : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: ref_echo PORT [MAX_PKG_LEN]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    size_t max_pkg = argc > 2 ? (size_t)strtoull(argv[2], NULL, 10) : (1u << 20);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 511) < 0) {
        perror("ref_echo: bind/listen");
        return 1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    static unsigned char scratch[65536];
    struct epoll_event events[512];
    fprintf(stderr, "ref_echo: listening on 127.0.0.1:%d\n", port);
    while (!g_stop) {
        int n = epoll_wait(ep, events, 512, 1000);
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            if (!c) {
                for (;;) {
                    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0) break;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn_t *nc = calloc(1, sizeof *nc);
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            int rc = 0;
            if (events[i].events & EPOLLOUT) rc = flush_out(ep, c);
            if (rc == 0 && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                rc = on_read(ep, c, scratch, sizeof scratch, max_pkg);
            }
            if (rc < 0) drop(ep, c);
        }
    }
    return 0;
}
