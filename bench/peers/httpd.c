/* httpd: the W8/W9 HTTP target, a minimal HTTP/1.1 server on 127.0.0.1.
 *
 *   httpd [PORT [LOG]]  listen on 127.0.0.1:PORT (0, the default: a free port), print the port on
 *                       one line of stdout once listening, then serve until SIGTERM/SIGINT.
 *
 * With LOG, every /ping request is also timed (CLOCK_REALTIME ns): T_IN, when epoll reported its
 * socket readable (before reading it), and T_OUT, when its response was ready, just before the
 * write() (so the client cannot have it earlier, even if this thread is preempted right after).
 * At exit one line per request goes to LOG: "KEY T_IN T_OUT", KEY being the request's
 * Idempotency-Key header ("-" when it has none). W9 pairs them up: T_IN of a step's request minus
 * T_OUT of the previous step's response is what the engine adds between the two steps. Both
 * reads err on the side of a longer gap: it includes the write() syscall and any time this
 * thread took to reach the next request's event.
 *
 * One thread, epoll, non-blocking sockets, keep-alive (HTTP/1.1 default; "Connection: close" or
 * HTTP/1.0 without keep-alive closes after the response), pipelined requests answered in order.
 * Any request whose path starts with /ping gets "200 OK" and the body "pong"; GET /count answers
 * the number of /ping requests served so far (so a driver can check that N jobs made N requests);
 * anything else is a 404. A request body (Content-Length) is read and ignored; chunked bodies are
 * not supported (none of the clients sends one). Without LOG, nothing is recorded per request.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 16384
#define MAXFD 65536

struct conn {
    char in[BUF];
    size_t len;
    char out[BUF];
    size_t olen, off;
    int close_after;
    int writing; /* waiting for EPOLLOUT rather than EPOLLIN */
};

struct entry {
    char key[48];
    long long t_in, t_out;
};

static struct entry *entries;
static size_t nentries, centries;
static int logging;
static long long t_event; /* when epoll reported the connection being handled */

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void log_request(const char *head, size_t n) {
    if (nentries == centries) {
        centries = centries ? centries * 2 : 65536;
        entries = realloc(entries, centries * sizeof *entries);
        if (!entries) { perror("httpd: realloc"); exit(1); }
    }
    struct entry *e = &entries[nentries++];
    strcpy(e->key, "-");
    e->t_in = t_event;
    e->t_out = 0;
    static const char name[] = "idempotency-key:";
    for (const char *p = head; p < head + n;) {
        const char *eol = memmem(p, head + n - p, "\r\n", 2);
        if (!eol) break;
        if ((size_t)(eol - p) > sizeof name - 1 && strncasecmp(p, name, sizeof name - 1) == 0) {
            const char *v = p + sizeof name - 1;
            while (v < eol && *v == ' ') v++;
            size_t len = eol - v < (long)sizeof e->key - 1 ? (size_t)(eol - v) : sizeof e->key - 1;
            memcpy(e->key, v, len);
            e->key[len] = 0;
            for (char *q = e->key; *q; q++)
                if (*q == ' ') *q = '_';
        }
        p = eol + 2;
    }
}

static struct conn *conns[MAXFD];
static volatile sig_atomic_t stop;
static unsigned long long pings;

static void on_signal(int s) { (void)s; stop = 1; }

static void drop(int ep, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(conns[fd]);
    conns[fd] = NULL;
}

/* Case-insensitive search for a header line "Name: value" containing `value`. */
static int header_has(const char *head, size_t n, const char *name, const char *value) {
    size_t nl = strlen(name);
    for (const char *p = head; p < head + n;) {
        const char *eol = memmem(p, head + n - p, "\r\n", 2);
        if (!eol) break;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            size_t vl = strlen(value);
            for (const char *q = p + nl + 1; q + vl <= eol; q++)
                if (strncasecmp(q, value, vl) == 0) return 1;
        }
        p = eol + 2;
    }
    return 0;
}

static size_t content_length(const char *head, size_t n) {
    for (const char *p = head; p < head + n;) {
        const char *eol = memmem(p, head + n - p, "\r\n", 2);
        if (!eol) break;
        if (eol - p > 15 && strncasecmp(p, "content-length:", 15) == 0) return strtoul(p + 15, NULL, 10);
        p = eol + 2;
    }
    return 0;
}

static void respond(struct conn *c, int status, const char *body) {
    const char *reason = status == 200 ? "OK" : status == 404 ? "Not Found" : "Bad Request";
    int k = snprintf(c->out + c->olen, BUF - c->olen,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n%s",
                     status, reason, strlen(body), c->close_after ? "Connection: close\r\n" : "", body);
    if (k > 0 && (size_t)k < BUF - c->olen) c->olen += k;
}

/* Answers every complete request in c->in; returns -1 on a malformed one. */
static int handle(struct conn *c) {
    size_t used = 0;
    while (!c->close_after) {
        char *start = c->in + used;
        size_t avail = c->len - used;
        char *end = memmem(start, avail, "\r\n\r\n", 4);
        if (!end) break;
        size_t head = end + 4 - start;
        size_t body = content_length(start, head);
        if (head + body > avail) break;
        if (BUF - c->olen < 256) break; /* output full: answer the rest once it drains */
        char *sp1 = memchr(start, ' ', head);
        char *sp2 = sp1 ? memchr(sp1 + 1, ' ', start + head - sp1 - 1) : NULL;
        if (!sp2) return -1;
        int http10 = (size_t)(start + head - sp2) > 9 && strncmp(sp2 + 1, "HTTP/1.0", 8) == 0;
        c->close_after = header_has(start, head, "connection", "close") ||
                         (http10 && !header_has(start, head, "connection", "keep-alive"));
        const char *path = sp1 + 1;
        size_t plen = sp2 - path;
        if (plen >= 5 && strncmp(path, "/ping", 5) == 0) {
            pings++;
            if (logging) log_request(start, head);
            respond(c, 200, "pong");
        } else if (plen == 6 && strncmp(path, "/count", 6) == 0) {
            char num[32];
            snprintf(num, sizeof num, "%llu", pings);
            respond(c, 200, num);
        } else {
            respond(c, 404, "not found");
        }
        used += head + body;
    }
    memmove(c->in, c->in + used, c->len - used);
    c->len -= used;
    return 0;
}

/* Writes what is pending; 1 when all is out, 0 when the socket is full, -1 on error. */
static int flush(int fd, struct conn *c) {
    while (c->off < c->olen) {
        ssize_t k = write(fd, c->out + c->off, c->olen - c->off);
        if (k < 0) return errno == EAGAIN ? 0 : -1;
        c->off += k;
    }
    c->olen = c->off = 0;
    return 1;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    const char *log_path = argc > 2 ? argv[2] : NULL;
    logging = log_path != NULL;
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&addr, sizeof addr) || listen(ls, 4096)) {
        perror("httpd: bind/listen");
        return 1;
    }
    socklen_t alen = sizeof addr;
    getsockname(ls, (struct sockaddr *)&addr, &alen);
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, 500);
        if (n < 0 && errno != EINTR) { perror("httpd: epoll_wait"); return 1; }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == ls) {
                int cfd;
                while ((cfd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    if (cfd >= MAXFD) { close(cfd); continue; }
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conns[cfd] = calloc(1, sizeof(struct conn));
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = cfd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev);
                }
                continue;
            }
            struct conn *c = conns[fd];
            if (!c) continue;
            if (logging) t_event = now_ns();
            if (evs[i].events & (EPOLLERR | EPOLLHUP)) { drop(ep, fd); continue; }
            int eof = 0;
            if (evs[i].events & (EPOLLIN | EPOLLRDHUP)) {
                for (;;) {
                    if (c->len == BUF) break;
                    ssize_t k = read(fd, c->in + c->len, BUF - c->len);
                    if (k > 0) { c->len += k; continue; }
                    if (k == 0) eof = 1;
                    else if (errno != EAGAIN) eof = 1;
                    break;
                }
            }
            size_t before = nentries;
            if (handle(c) < 0) {
                c->close_after = 1;
                respond(c, 400, "bad request");
            }
            long long t_out = logging && nentries > before ? now_ns() : 0;
            int w = flush(fd, c);
            if (logging && nentries > before) {
                /* This round's requests; a response that could not be written at once (never
                 * seen with responses this small) is logged with T_OUT 0, i.e. unknown. */
                for (size_t k = before; k < nentries; k++) entries[k].t_out = w == 1 ? t_out : 0;
            }
            if (w < 0 || (w == 1 && (c->close_after || eof))) { drop(ep, fd); continue; }
            if (c->len == BUF && w == 1) { drop(ep, fd); continue; } /* a header over 16 KiB */
            if (c->writing != (w == 0)) {
                c->writing = w == 0;
                struct epoll_event cev = {.events = c->writing ? EPOLLOUT : EPOLLIN | EPOLLRDHUP, .data.fd = fd};
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
            }
        }
    }
    if (logging) {
        FILE *f = fopen(log_path, "w");
        if (!f) { perror("httpd: log"); return 1; }
        for (size_t k = 0; k < nentries; k++)
            fprintf(f, "%s %lld %lld\n", entries[k].key, entries[k].t_in, entries[k].t_out);
        fclose(f);
    }
    return 0;
}
