/* loadgen: a load generator in C for framewire's echo benchmarks.
 *
 * A Python load client tops out below the fastest servers, so `make bench`
 * measures the servers with this one: epoll, one thread, every answer
 * checked against the request it echoes.
 *
 *   loadgen -p PORT [-c CONNS] [-d DEPTH] [-s BYTES] [-t SECONDS] [-o]
 *
 * -c connections, -d requests kept in flight on each (pipelining), -s the
 * content size, -t seconds, -o one request per connection (connect, send,
 * read the answer, close: the guide's client). Prints one JSON line:
 * rps, mb_per_s, latency_us {p50, p90, p99}, done, errors, mismatches.
 *
 * Build: gcc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_LATENCY_US 2000000 /* a histogram bucket per microsecond, up to 2 s */

typedef struct {
    int fd;
    int connecting;
    uint32_t events;
    size_t out_off, out_len; /* bytes of the request buffer still to write */
    unsigned char *in;
    size_t in_len, in_cap;
    double *sent_at; /* a ring of send times, one per request in flight */
    int head, tail, in_flight;
} Conn;

static int port = 0, conns = 1, depth = 1, oneshot = 0;
static size_t size = 64;
static double seconds = 5.0;
static unsigned char *payload, *requests; /* depth copies of one request */
static size_t request_len;
static int epfd;
static uint32_t *histogram;
static uint64_t done = 0, errors = 0, mismatches = 0, overflow = 0;
static Conn *all;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void watch(Conn *c, uint32_t events) {
    if (c->events == events) return;
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

static void queue(Conn *c, int count, double t) {
    for (int i = 0; i < count; i++) {
        c->sent_at[c->head] = t;
        c->head = (c->head + 1) % depth;
    }
    c->in_flight += count;
    c->out_len += (size_t)count * request_len;
}

static int open_conn(Conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->connecting = 1;
    c->out_off = c->out_len = 0;
    c->in_len = 0;
    c->head = c->tail = c->in_flight = 0;
    c->events = EPOLLOUT;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    queue(c, oneshot ? 1 : depth, now());
    return 0;
}

static void close_conn(Conn *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (oneshot) {
        /* A reset, not a FIN: closing first, the client would keep every
         * connection in TIME_WAIT and run out of ephemeral ports (at 14k
         * connections/s, in about two seconds), then wait in connect() for
         * one, against every server that waits for the client to close. */
        struct linger reset = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    }
    close(c->fd);
    c->fd = -1;
}

static void reopen(Conn *c, int running) {
    close_conn(c);
    if (running && open_conn(c) < 0) errors++;
}

/* Writes what is queued; the request buffer holds `depth` copies, so any
 * count of whole requests up to depth is one contiguous range of it. */
static int flush(Conn *c) {
    while (c->out_off < c->out_len) {
        size_t start = c->out_off % (request_len * (size_t)depth);
        size_t end = request_len * (size_t)depth;
        size_t want = c->out_len - c->out_off;
        if (want > end - start) want = end - start;
        ssize_t n = send(c->fd, requests + start, want, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return -1;
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
    watch(c, EPOLLIN | (c->out_len ? EPOLLOUT : 0));
    return 0;
}

static long content_length(const unsigned char *header, size_t len) {
    const char *key = "\"content-length\"";
    size_t klen = strlen(key);
    for (size_t i = 0; i + klen < len; i++) {
        if (memcmp(header + i, key, klen) == 0) {
            size_t j = i + klen;
            while (j < len && (header[j] == ' ' || header[j] == ':')) j++;
            long value = 0;
            int digits = 0;
            while (j < len && header[j] >= '0' && header[j] <= '9') {
                value = value * 10 + (header[j++] - '0');
                digits++;
            }
            return digits ? value : -1;
        }
    }
    return -1;
}

/* The answers complete in the input buffer; returns -1 on a broken stream. */
static int answers(Conn *c, int running) {
    size_t at = 0;
    double t = now();
    for (;;) {
        size_t left = c->in_len - at;
        if (left < 2) break;
        size_t hlen = ((size_t)c->in[at] << 8) | c->in[at + 1];
        if (left < 2 + hlen) break;
        long clen = content_length(c->in + at + 2, hlen);
        if (clen < 0) return -1;
        if (left < 2 + hlen + (size_t)clen) {
            size_t need = 2 + hlen + (size_t)clen;
            if (need > c->in_cap) { /* room for the whole answer */
                c->in_cap = need;
                c->in = realloc(c->in, c->in_cap);
            }
            break;
        }
        if ((size_t)clen != size || memcmp(c->in + at + 2 + hlen, payload, size) != 0) mismatches++;
        at += 2 + hlen + (size_t)clen;
        if (c->in_flight == 0) return -1; /* an answer nobody asked for */
        double latency = (t - c->sent_at[c->tail]) * 1e6;
        c->tail = (c->tail + 1) % depth;
        c->in_flight--;
        if (latency < MAX_LATENCY_US) histogram[(int)latency]++;
        else overflow++;
        done++;
        if (oneshot) {
            reopen(c, running);
            return 1;
        }
        if (running) queue(c, 1, t);
    }
    if (at) {
        memmove(c->in, c->in + at, c->in_len - at);
        c->in_len -= at;
    }
    return 0;
}

static void readable(Conn *c, int running) {
    for (;;) {
        if (c->in_cap - c->in_len < 65536) {
            c->in_cap = c->in_len + 65536;
            c->in = realloc(c->in, c->in_cap);
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n <= 0) {
            errors++;
            reopen(c, running);
            return;
        }
        c->in_len += (size_t)n;
        int r = answers(c, running);
        if (r < 0) {
            errors++;
            reopen(c, running);
            return;
        }
        if (r > 0) return; /* one-shot: a new connection */
        if ((size_t)n < c->in_cap - c->in_len + (size_t)n) break; /* the kernel had no more */
    }
    if (c->out_len && flush(c) < 0) {
        errors++;
        reopen(c, running);
    }
}

static double percentile(double p) {
    uint64_t total = done, seen = 0, rank = (uint64_t)(p * (double)total);
    for (int i = 0; i < MAX_LATENCY_US; i++) {
        seen += histogram[i];
        if (seen > rank) return i;
    }
    return MAX_LATENCY_US;
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "p:c:d:s:t:o")) != -1) {
        switch (opt) {
        case 'p': port = atoi(optarg); break;
        case 'c': conns = atoi(optarg); break;
        case 'd': depth = atoi(optarg); break;
        case 's': size = (size_t)atol(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'o': oneshot = 1; break;
        default:
            fprintf(stderr, "usage: loadgen -p PORT [-c CONNS] [-d DEPTH] [-s BYTES] [-t SECONDS] [-o]\n");
            return 2;
        }
    }
    if (port <= 0 || conns < 1 || depth < 1 || seconds <= 0) {
        fprintf(stderr, "loadgen: -p PORT is needed; -c, -d and -t must be positive\n");
        return 2;
    }
    if (oneshot) depth = 1;
    char header[256];
    int hlen = snprintf(header, sizeof header,
                        "{\"byteorder\":\"little\",\"content-type\":\"binary/custom-client-binary-type\","
                        "\"content-encoding\":\"binary\",\"content-length\":%zu}",
                        size);
    payload = malloc(size ? size : 1);
    for (size_t i = 0; i < size; i++) payload[i] = (unsigned char)('a' + i % 26);
    request_len = 2 + (size_t)hlen + size;
    requests = malloc(request_len * (size_t)depth);
    for (int i = 0; i < depth; i++) {
        unsigned char *r = requests + (size_t)i * request_len;
        r[0] = (unsigned char)(hlen >> 8);
        r[1] = (unsigned char)(hlen & 0xff);
        memcpy(r + 2, header, (size_t)hlen);
        memcpy(r + 2 + hlen, payload, size);
    }
    histogram = calloc(MAX_LATENCY_US, sizeof *histogram);
    epfd = epoll_create1(0);
    all = calloc((size_t)conns, sizeof *all);
    for (int i = 0; i < conns; i++) {
        all[i].sent_at = malloc(sizeof(double) * (size_t)depth);
        if (open_conn(&all[i]) < 0) {
            fprintf(stderr, "loadgen: cannot connect to 127.0.0.1:%d: %s\n", port, strerror(errno));
            return 1;
        }
    }
    struct epoll_event events[256];
    double start = now(), end = start + seconds;
    while (now() < end) {
        int n = epoll_wait(epfd, events, 256, 100);
        for (int i = 0; i < n; i++) {
            Conn *c = events[i].data.ptr;
            if (c->fd < 0) continue;
            if (c->connecting) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    errors++;
                    reopen(c, 1);
                    continue;
                }
                c->connecting = 0;
            }
            if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) readable(c, 1);
            else if (events[i].events & EPOLLOUT && flush(c) < 0) {
                errors++;
                reopen(c, 1);
            }
        }
    }
    double elapsed = now() - start;
    int open_at_end = 0;
    for (int i = 0; i < conns; i++) {
        if (all[i].fd >= 0) {
            open_at_end++;
            close_conn(&all[i]);
        }
    }
    printf("{\"rps\": %.1f, \"mb_per_s\": %.2f, \"latency_us\": {\"p50\": %.0f, \"p90\": %.0f, \"p99\": %.0f}, "
           "\"done\": %llu, \"errors\": %llu, \"mismatches\": %llu, \"open\": %d}\n",
           done / elapsed, done * (double)size / elapsed / 1e6, percentile(0.5), percentile(0.9),
           percentile(0.99), (unsigned long long)done, (unsigned long long)errors,
           (unsigned long long)mismatches, open_at_end);
    return 0;
}
