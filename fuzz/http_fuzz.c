/* libFuzzer target: the request side of src/api/http.c that runs after libmicrohttpd has parsed
 * the request line: the routing (route_find, route_match: literal segments and {name}
 * captures, over wisp-vmm's route patterns) and the body's accumulation (request_take_body:
 * chunks as libmicrohttpd hands them over, against the body limit). http.c is compiled into
 * the target (#include) to reach its static functions; no socket is made. libmicrohttpd's own
 * request parser is not fuzzed here.
 *
 * Input: [0] the method (byte % 4: GET, PUT, PATCH, DELETE), [1] the body limit (byte * 4
 * bytes), then the path up to the first '\n', then the body, handed over in chunks whose sizes
 * are the body's bytes at the chunk starts (b % 64 + 1). */
#include "../src/api/http.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void handler(struct api_request *req, void *opaque)
{
    (void)req;
    (void)opaque;
}

/* wisp-vmm's patterns (src/vmm/api_routes.c) and a few with more captures. */
static const struct api_route routes[] = {
    {"GET", "/", handler},
    {"GET", "/vm/config", handler},
    {"PUT", "/machine-config", handler},
    {"PATCH", "/machine-config", handler},
    {"PUT", "/drives/{drive_id}", handler},
    {"PATCH", "/drives/{drive_id}", handler},
    {"PUT", "/network-interfaces/{iface_id}", handler},
    {"PUT", "/snapshot/create", handler},
    {"GET", "/balloon/statistics", handler},
    {"PUT", "/pmem/{id}", handler},
    {"GET", "/a/{b}/{c}/{d}/{e}", handler},
    {"GET", "/a/{b}/{c}/{d}/{e}/{f}", handler},
    {"PUT", "/{x}", handler},
    {"DELETE", "/{0123456789012345678901234567890123456789}", handler},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"GET", "PUT", "PATCH", "DELETE"};
    if (size < 2)
        return 0;
    struct route_entry entries[sizeof(routes) / sizeof(routes[0])];
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
        entries[i] = (struct route_entry){.route = &routes[i], .opaque = NULL};
    struct api_server s = {
        .limits = {.max_body = (size_t)data[1] * 4},
        .routes = entries,
        .nr_routes = sizeof(entries) / sizeof(entries[0]),
    };
    struct api_request *r = calloc(1, sizeof(*r));
    if (!r)
        abort();
    r->s = &s;
    snprintf(r->method, sizeof(r->method), "%s", methods[data[0] % 4]);
    const uint8_t *p = data + 2, *end = data + size;
    const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
    const uint8_t *path_end = nl ? nl : end;
    if (!(r->path = strndup((const char *)p, (size_t)(path_end - p))))
        abort();
    const struct route_entry *e = route_find(&s, r);
    if (e) {
        /* every capture names one of the route's and holds a whole, non-empty segment */
        for (unsigned i = 0; i < r->nr_params; i++) {
            const char *v = api_request_param(r, r->param_names[i]);
            if (!v || !*v || strchr(v, '/') || !strstr(e->route->pattern, r->param_names[i]))
                abort();
        }
    }
    for (const uint8_t *b = nl ? nl + 1 : end; b < end;) {
        size_t n = (size_t)(*b % 64) + 1;
        if (n > (size_t)(end - b))
            n = (size_t)(end - b);
        request_take_body(r, (const char *)b, n);
        b += n;
    }
    size_t len;
    const char *body = api_request_body(r, &len);
    if (len > s.limits.max_body || body[len] != '\0' || (r->too_large && len != 0))
        abort();
    request_free(r);
    return 0;
}
