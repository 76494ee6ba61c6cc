/* Peer: the echo service in C on epoll, the practical limit of a machine.
 *
 * Each complete message a connection sends (2-byte big-endian header length,
 * JSON header, content of the header's "content-length") is written back as
 * it came: for the echo application on one machine the answer is the same
 * bytes (same content, type, encoding and byte order). Every complete message
 * of a read is answered in one write; a connection that does not read its
 * answers stops being read. No validation beyond what framing needs: this is
 * a yardstick, not a server.
 *
 *   gcc -O2 -o c_echo_server c_echo_server.c && ./c_echo_server PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_SIZE 65536

typedef struct {
    int fd;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
} conn_t;

static void grow(char **buf, size_t *cap, size_t need) {
    if (*cap >= need) return;
    size_t cap2 = *cap ? *cap : 65536;
    while (cap2 < need) cap2 *= 2;
    *buf = realloc(*buf, cap2);
    if (!*buf) { perror("realloc"); exit(1); }
    *cap = cap2;
}

/* The content length a header announces, or -1. */
static long content_length(const char *header, size_t size) {
    static const char key[] = "\"content-length\"";
    const char *end = header + size;
    const char *at = memmem(header, size, key, sizeof key - 1);
    if (!at) return -1;
    at += sizeof key - 1;
    while (at < end && (*at == ' ' || *at == ':' || *at == '\t')) at++;
    long value = 0;
    int digits = 0;
    while (at < end && *at >= '0' && *at <= '9' && digits < 18) { value = value * 10 + (*at - '0'); at++; digits++; }
    return digits ? value : -1;
}

static void close_conn(int ep, conn_t *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->in);
    free(c->out);
    free(c);
}

/* Write what is queued; 0 when all went, 1 when the socket is full, -1 on error. */
static int flush_out(conn_t *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 1 : -1;
        c->out_off += (size_t)n;
    }
    c->out_len = c->out_off = 0;
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s PORT\n", argv[0]); return 2; }
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 4096) < 0) { perror("listen"); return 1; }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event events[512];
    for (;;) {
        int n = epoll_wait(ep, events, 512, -1);
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn_t *nc = calloc(1, sizeof *nc);
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            if (events[i].events & EPOLLOUT) {
                int r = flush_out(c);
                if (r < 0) { close_conn(ep, c); continue; }
                if (r == 0) {
                    struct epoll_event cev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
                }
                continue;
            }
            /* Straight into the connection's buffer (at least READ_SIZE free,
               and all the room it has: a large message comes in few calls),
               until a read comes back short. */
            ssize_t got;
            int gone = 0;
            for (;;) {
                grow(&c->in, &c->in_cap, c->in_len + READ_SIZE);
                size_t room = c->in_cap - c->in_len;
                got = recv(c->fd, c->in + c->in_len, room, 0);
                if (got > 0) {
                    c->in_len += (size_t)got;
                    if ((size_t)got < room) break;
                    continue;
                }
                if (got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) gone = 1;
                break;
            }
            if (gone) { close_conn(ep, c); continue; }
            size_t pos = 0;
            int bad = 0;
            while (c->in_len - pos >= 2) {
                size_t hlen = ((unsigned char)c->in[pos] << 8) | (unsigned char)c->in[pos + 1];
                if (c->in_len - pos < 2 + hlen) break;
                long clen = content_length(c->in + pos + 2, hlen);
                if (clen < 0) { bad = 1; break; }
                size_t whole = 2 + hlen + (size_t)clen;
                if (c->in_len - pos < whole) break;
                grow(&c->out, &c->out_cap, c->out_len + whole);
                memcpy(c->out + c->out_len, c->in + pos, whole);
                c->out_len += whole;
                pos += whole;
            }
            if (bad) { close_conn(ep, c); continue; }
            memmove(c->in, c->in + pos, c->in_len - pos);
            c->in_len -= pos;
            if (c->out_len) {
                int r = flush_out(c);
                if (r < 0) { close_conn(ep, c); continue; }
                if (r == 1) {  /* full: wait for room, and read no more until then */
                    struct epoll_event cev = {.events = EPOLLOUT, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &cev);
                }
            }
        }
    }
}
