/* The smallest honest load client, as a yardstick for asyncd-bench: one thread, one epoll,
 * C connections; each writes P length-prefixed 64-byte echo requests in one send, reads
 * until all P replies are in (only their lengths are checked), then writes the next P
 * (redis-benchmark's -P). Runs for SECONDS and prints requests/s. If asyncd-bench with one
 * thread reaches what this does against the same server, the tool is not the limit.
 *
 *   min_client PORT CONNS PIPELINE SECONDS */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAYLOAD 64
#define FRAME (4 + PAYLOAD)
#define MAX_CONNS 1024
#define MAX_PIPELINE 256

struct conn {
    int fd;
    size_t want; /* reply bytes still to come for this batch */
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char batch[FRAME * MAX_PIPELINE];

static int send_batch(struct conn *c, int pipeline) {
    size_t len = (size_t)FRAME * (size_t)pipeline, off = 0;
    while (off < len) { /* the socket buffer takes a batch this small at once */
        ssize_t n = send(c->fd, batch + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        off += (size_t)n;
    }
    c->want = len;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: min_client PORT CONNS PIPELINE SECONDS\n");
        return 2;
    }
    int port = atoi(argv[1]), nconns = atoi(argv[2]), pipeline = atoi(argv[3]);
    double seconds = atof(argv[4]);
    if (port <= 0 || nconns < 1 || nconns > MAX_CONNS || pipeline < 1 || pipeline > MAX_PIPELINE ||
        seconds <= 0 || seconds > 600) {
        fprintf(stderr, "min_client: bad arguments\n");
        return 2;
    }
    for (int i = 0; i < pipeline; i++) {
        char *f = batch + i * FRAME;
        uint32_t len = htonl(FRAME);
        memcpy(f, &len, 4);
        memset(f + 4, 'x', PAYLOAD);
    }
    static struct conn conns[MAX_CONNS];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < nconns; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
            perror("min_client: connect");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    double start = now_s(), end = start + seconds;
    unsigned long long done = 0;
    for (int i = 0; i < nconns; i++) {
        if (send_batch(&conns[i], pipeline) < 0) return 1;
    }
    static char buf[1 << 16];
    struct epoll_event events[MAX_CONNS];
    while (now_s() < end) {
        int n = epoll_wait(ep, events, MAX_CONNS, 100);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            ssize_t got = recv(c->fd, buf, sizeof buf, 0);
            if (got <= 0) {
                if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
                fprintf(stderr, "min_client: the server closed a connection\n");
                return 1;
            }
            if ((size_t)got > c->want) {
                fprintf(stderr, "min_client: more bytes than were asked for\n");
                return 1;
            }
            c->want -= (size_t)got;
            if (c->want == 0) {
                done += (unsigned long long)pipeline;
                if (send_batch(c, pipeline) < 0) return 1;
            }
        }
    }
    double elapsed = now_s() - start;
    printf("min_client: %llu requests in %.2f s: %.0f req/s\n", done, elapsed,
           (double)done / elapsed);
    return 0;
}
