/* The wisp CLI's HTTP/1.1 client for wispd's unix socket (cli.h): requests with Content-Length
 * bodies; answers with Content-Length, chunked (streams: logs -f, events, clone progress) or
 * read to the end. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "common/cleanup.h"

const char *cli_sock_path;
bool cli_json;

int cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "wisp: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(wisp --help for usage)\n");
    va_end(ap);
    return EXIT_USAGE;
}

bool cli_name_ok(const char *name)
{
    return *name && !strchr(name, '/') && !strchr(name, '?') && !strchr(name, '%') &&
           !strchr(name, ' ') && strlen(name) <= 64;
}

int cli_send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int cli_open(struct cli_conn *c, const char *method, const char *path, const char *body,
             const char *extra_headers, bool quiet)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    c->fd = -1;
    c->len = c->pos = 0;
    if (strlen(cli_sock_path) >= sizeof(addr.sun_path)) {
        fprintf(stderr, "wisp: %s: the socket path is too long\n", cli_sock_path);
        return -1;
    }
    strcpy(addr.sun_path, cli_sock_path);
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        if (!quiet)
            fprintf(stderr, "wisp: %s: %s (is wispd running? --socket or WISP_SOCKET)\n",
                    cli_sock_path, strerror(errno));
        cli_close(c);
        return -1;
    }
    cleanup_free char *req = NULL;
    int len =
        asprintf(&req,
                 "%s %s HTTP/1.1\r\nHost: localhost\r\n%s%s"
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 method, path, extra_headers ? "" : "Connection: close\r\n",
                 extra_headers ? extra_headers : "", body ? strlen(body) : 0, body ? body : "");
    if (len < 0 || cli_send_all(c->fd, req, (size_t)len) < 0) {
        fprintf(stderr, "wisp: %s: sending: %s\n", cli_sock_path, strerror(errno));
        cli_close(c);
        return -1;
    }
    return 0;
}

void cli_close(struct cli_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static int fill(struct cli_conn *c)
{
    if (c->pos == c->len)
        c->pos = c->len = 0;
    if (c->len == sizeof(c->buf)) {
        if (!c->pos)
            return -1;
        memmove(c->buf, c->buf + c->pos, c->len - c->pos);
        c->len -= c->pos;
        c->pos = 0;
    }
    ssize_t n;
    do
        n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return n < 0 ? -1 : 0;
    c->len += (size_t)n;
    return (int)n;
}

/* A line without its CRLF into out (at most size - 1 bytes kept). -1 at the end. */
static int read_line(struct cli_conn *c, char *out, size_t size)
{
    size_t n = 0;
    for (;;) {
        while (c->pos < c->len) {
            char ch = c->buf[c->pos++];
            if (ch == '\n') {
                if (n && out[n - 1] == '\r')
                    n--;
                out[n] = '\0';
                return 0;
            }
            if (n + 1 < size)
                out[n++] = ch;
        }
        if (fill(c) <= 0)
            return -1;
    }
}

int cli_read_head(struct cli_conn *c, unsigned *status, bool *chunked, long long *length)
{
    char line[1024];
    *chunked = false;
    *length = -1;
    if (read_line(c, line, sizeof(line)) < 0 || sscanf(line, "HTTP/1.%*d %u", status) != 1) {
        fprintf(stderr, "wisp: %s: the answer is not HTTP\n", cli_sock_path);
        return -1;
    }
    for (;;) {
        if (read_line(c, line, sizeof(line)) < 0) {
            fprintf(stderr, "wisp: %s: the answer's headers end early\n", cli_sock_path);
            return -1;
        }
        if (!line[0])
            return 0;
        if (!strncasecmp(line, "Content-Length:", 15))
            *length = strtoll(line + 15, NULL, 10);
        else if (!strncasecmp(line, "Transfer-Encoding:", 18) && strcasestr(line, "chunked"))
            *chunked = true;
    }
}

/* Up to n bytes of the body to sink; -1 when the connection ends first. */
static int pass(struct cli_conn *c, unsigned long long n,
                int (*sink)(void *opaque, const char *data, size_t len), void *opaque, int *stop)
{
    while (n) {
        if (c->pos == c->len && fill(c) <= 0)
            return -1;
        size_t k = c->len - c->pos < n ? c->len - c->pos : (size_t)n;
        if (!*stop && sink(opaque, c->buf + c->pos, k))
            *stop = 1;
        c->pos += k;
        n -= k;
        if (*stop)
            return 0;
    }
    return 0;
}

int cli_read_body(struct cli_conn *c, bool chunked, long long length,
                  int (*sink)(void *opaque, const char *data, size_t len), void *opaque)
{
    int stop = 0;
    if (!chunked && length >= 0)
        return pass(c, (unsigned long long)length, sink, opaque, &stop);
    if (!chunked) { /* to the end of the connection */
        for (;;) {
            if (c->pos < c->len) {
                if (sink(opaque, c->buf + c->pos, c->len - c->pos))
                    return 0;
                c->pos = c->len;
            }
            int r = fill(c);
            if (r <= 0)
                return r;
        }
    }
    char line[128];
    for (;;) {
        if (read_line(c, line, sizeof(line)) < 0)
            return -1;
        char *end;
        unsigned long long n = strtoull(line, &end, 16);
        if (end == line)
            return -1;
        if (n == 0) {
            while (read_line(c, line, sizeof(line)) == 0 && line[0]) /* trailers */
                ;
            return 0;
        }
        if (pass(c, n, sink, opaque, &stop) < 0)
            return -1;
        if (stop)
            return 0;
        if (read_line(c, line, sizeof(line)) < 0)
            return -1;
    }
}

struct growbuf {
    char *p;
    size_t len, cap;
};

static int grow_sink(void *opaque, const char *data, size_t len)
{
    struct growbuf *g = opaque;
    if (g->len + len + 1 > g->cap) {
        size_t cap = (g->len + len + 1) * 2;
        char *p = realloc(g->p, cap);
        if (!p)
            return 1;
        g->p = p;
        g->cap = cap;
    }
    memcpy(g->p + g->len, data, len);
    g->len += len;
    g->p[g->len] = '\0';
    return 0;
}

int cli_request(const char *method, const char *path, const char *body, unsigned *status,
                char **answer)
{
    struct cli_conn c;
    if (cli_open(&c, method, path, body, NULL, false) < 0)
        return -1;
    bool chunked;
    long long length;
    struct growbuf g = {0};
    int r = cli_read_head(&c, status, &chunked, &length);
    if (r == 0)
        r = cli_read_body(&c, chunked, length, grow_sink, &g);
    cli_close(&c);
    if (r < 0) {
        free(g.p);
        fprintf(stderr, "wisp: %s: the answer ended early\n", cli_sock_path);
        return -1;
    }
    *answer = g.p ? g.p : strdup("");
    return 0;
}

int cli_exit_for(unsigned status)
{
    return status < 300    ? 0
           : status == 404 ? EXIT_NO_VM
           : status == 409 ? EXIT_CONFLICT
           : status == 507 ? EXIT_LIMIT
                           : EXIT_REFUSED;
}

int cli_print_error(unsigned status, const char *answer)
{
    json_t *j = json_loads(answer, 0, NULL);
    const char *m = json_string_value(json_object_get(j, "fault_message"));
    fprintf(stderr, "wisp: %s\n", m ? m : answer);
    json_decref(j);
    return cli_exit_for(status);
}
