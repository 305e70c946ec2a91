/* Unit tests of the guest agent protocol's codec (src/agent/proto.c, proto_check.c): every
 * message type round-trips, and every bound and malformation is refused with its message. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/proto.h"

/* Encodes m, checks the header, decodes the payload into *out (which keeps b's data alive). */
static int roundtrip(const struct wa_msg *m, struct wa_buf *b, struct wa_msg *out,
                     struct wisp_err *err)
{
    struct wa_hdr h;

    assert_int_equal(wa_encode(b, m), 0);
    assert_int_equal(wa_hdr_decode(b->data, &h, err), 0);
    assert_int_equal(h.len, b->len - WA_HDR_SIZE);
    assert_int_equal(h.type, m->type);
    assert_int_equal(h.id, m->id);
    return wa_decode(h.type, h.id, b->data + WA_HDR_SIZE, h.len, out, err);
}

static void test_process_create_roundtrip(void **state)
{
    const char *args[] = {"sh", "-c", "echo hi"}, *env[] = {"PATH=/bin", "A=b=c"};
    const uint32_t gids[] = {10, 20, 30};
    const struct wisp_agent_rlimit rl[] = {{"RLIMIT_NOFILE", 123, 456},
                                           {"RLIMIT_CORE", 0, UINT64_MAX}};
    struct wa_msg m = {.type = WA_PROCESS_CREATE, .id = 77, .container = "c1", .exec_id = "e.1"};
    struct wisp_err err = {0};
    struct wa_buf b = {0};
    struct wa_msg d;

    m.process = (struct wisp_agent_process){.args = args,
                                            .nargs = 3,
                                            .env = env,
                                            .nenv = 2,
                                            .cwd = "/tmp",
                                            .uid = 1000,
                                            .gid = 1001,
                                            .additional_gids = gids,
                                            .ngids = 3,
                                            .has_umask = true,
                                            .umask = 027,
                                            .rlimits = rl,
                                            .nrlimits = 2,
                                            .no_new_privileges = true,
                                            .terminal = true,
                                            .rows = 33,
                                            .cols = 101,
                                            .stdio = {0, 1, 1}};
    wa_set(&m, WT_UID);
    wa_set(&m, WT_GID);
    wa_set(&m, WT_STDIN);
    wa_set(&m, WT_STDOUT);
    wa_set(&m, WT_STDERR);
    assert_int_equal(roundtrip(&m, &b, &d, &err), 0);
    assert_string_equal(d.container, "c1");
    assert_string_equal(d.exec_id, "e.1");
    assert_int_equal(d.process.nargs, 3);
    assert_string_equal(d.process.args[2], "echo hi");
    assert_int_equal(d.process.nenv, 2);
    assert_string_equal(d.process.env[1], "A=b=c");
    assert_string_equal(d.process.cwd, "/tmp");
    assert_int_equal(d.process.uid, 1000);
    assert_int_equal(d.process.gid, 1001);
    assert_int_equal(d.process.ngids, 3);
    assert_int_equal(d.process.additional_gids[2], 30);
    assert_true(d.process.has_umask);
    assert_int_equal(d.process.umask, 027);
    assert_int_equal(d.process.nrlimits, 2);
    assert_string_equal(d.process.rlimits[0].type, "RLIMIT_NOFILE");
    assert_int_equal(d.process.rlimits[0].soft, 123);
    assert_int_equal(d.process.rlimits[1].hard, UINT64_MAX);
    assert_true(d.process.no_new_privileges);
    assert_true(d.process.terminal);
    assert_int_equal(d.process.rows, 33);
    assert_int_equal(d.process.cols, 101);
    assert_int_equal(d.process.stdio[0], 0);
    assert_int_equal(d.process.stdio[2], 1);
    wa_msg_free(&d);
    wa_buf_free(&b);
    (void)state;
}

static void test_container_and_network_roundtrip(void **state)
{
    const char *opts[] = {"nosuid", "mode=755"}, *addrs[] = {"10.0.0.2/24", "10.0.1.2/16"};
    const struct wisp_agent_mount mounts[] = {
        {.type = "proc", .source = "proc", .destination = "/proc"},
        {.type = "tmpfs", .destination = "/dev", .options = opts, .noptions = 2}};
    const struct wisp_agent_file files[] = {
        {.path = "/etc/hosts", .data = "1.2.3.4 x\n", .len = 10, .mode = 0600}};
    const struct wisp_agent_iface ifs[] = {
        {.name = "eth0", .mtu = 1400, .addresses = addrs, .naddresses = 2, .up = true}};
    const struct wisp_agent_route routes[] = {{.destination = "0.0.0.0/0", .gateway = "10.0.0.1"},
                                              {.destination = "10.9.0.0/16", .device = "eth0"}};
    struct wa_msg m = {.type = WA_CONTAINER_CREATE, .id = 3, .container = "ctr"};
    struct wisp_err err = {0};
    struct wa_buf b = {0}, b2 = {0};
    struct wa_msg d;

    m.ctr = (struct wisp_agent_container){.rootfs_tag = "root",
                                          .rootfs_readonly = true,
                                          .hostname = "h1",
                                          .mounts = mounts,
                                          .nmounts = 2,
                                          .files = files,
                                          .nfiles = 1,
                                          .default_devices = true,
                                          .seed = "0123456789abcdef0123",
                                          .seed_len = 20};
    assert_int_equal(roundtrip(&m, &b, &d, &err), 0);
    assert_string_equal(d.ctr.rootfs_tag, "root");
    assert_null(d.ctr.rootfs_path);
    assert_true(d.ctr.rootfs_readonly);
    assert_string_equal(d.ctr.hostname, "h1");
    assert_int_equal(d.ctr.nmounts, 2);
    assert_string_equal(d.ctr.mounts[0].source, "proc");
    assert_null(d.ctr.mounts[1].source);
    assert_int_equal(d.ctr.mounts[1].noptions, 2);
    assert_string_equal(d.ctr.mounts[1].options[1], "mode=755");
    assert_int_equal(d.ctr.nfiles, 1);
    assert_int_equal(d.ctr.files[0].len, 10);
    assert_memory_equal(d.ctr.files[0].data, "1.2.3.4 x\n", 10);
    assert_int_equal(d.ctr.files[0].mode, 0600);
    assert_true(d.ctr.default_devices);
    assert_int_equal(d.ctr.seed_len, 20);
    assert_memory_equal(d.ctr.seed, "0123456789abcdef0123", 20);
    wa_msg_free(&d);
    /* a seed shorter or longer than the agent takes is refused on decode */
    struct wa_buf bs = {0};
    m.ctr.seed_len = WISP_AGENT_SEED_MIN - 1;
    assert_int_equal(wa_encode(&bs, &m), 0);
    assert_int_equal(
        wa_decode(WA_CONTAINER_CREATE, 3, bs.data + WA_HDR_SIZE, bs.len - WA_HDR_SIZE, &d, &err),
        -EPROTO);
    assert_non_null(strstr(err.msg, "a seed of 15 bytes"));
    wa_buf_free(&bs);
    m.ctr.seed_len = 20;

    m = (struct wa_msg){.type = WA_NETWORK, .id = 4};
    m.net = (struct wisp_agent_network){.ifaces = ifs,
                                        .nifaces = 1,
                                        .routes = routes,
                                        .nroutes = 2,
                                        .resolv_conf = "nameserver 1.1.1.1\n"};
    assert_int_equal(roundtrip(&m, &b2, &d, &err), 0);
    assert_int_equal(d.net.nifaces, 1);
    assert_string_equal(d.net.ifaces[0].name, "eth0");
    assert_int_equal(d.net.ifaces[0].mtu, 1400);
    assert_int_equal(d.net.ifaces[0].naddresses, 2);
    assert_string_equal(d.net.ifaces[0].addresses[1], "10.0.1.2/16");
    assert_true(d.net.ifaces[0].up);
    assert_int_equal(d.net.nroutes, 2);
    assert_string_equal(d.net.routes[0].gateway, "10.0.0.1");
    assert_string_equal(d.net.routes[1].device, "eth0");
    assert_string_equal(d.net.resolv_conf, "nameserver 1.1.1.1\n");
    wa_msg_free(&d);
    wa_buf_free(&b);
    wa_buf_free(&b2);
    (void)state;
}

static void test_answers_roundtrip(void **state)
{
    struct wisp_agent_ps_entry procs[] = {
        {.pid = 5, .ppid = 1, .uid = 0, .state = "S", .cmd = "sleep 1000", .exec_id = ""},
        {.pid = 9, .ppid = 5, .uid = 1000, .state = "R", .cmd = "sh"}};
    struct wa_msg m = {.type = WA_PS | WA_RESPONSE, .id = 9, .procs = procs, .nprocs = 2};
    struct wisp_err err = {0};
    struct wa_buf b = {0}, b2 = {0}, b3 = {0};
    struct wa_msg d;

    assert_int_equal(roundtrip(&m, &b, &d, &err), 0);
    assert_int_equal(d.errnum, 0);
    assert_int_equal(d.nprocs, 2);
    assert_string_equal(d.procs[0].cmd, "sleep 1000");
    assert_string_equal(d.procs[0].exec_id, "");
    assert_null(d.procs[1].exec_id);
    assert_int_equal(d.procs[1].uid, 1000);
    wa_msg_free(&d);

    m = (struct wa_msg){.type = WA_WAIT | WA_RESPONSE, .id = 10, .status = 3 << 8};
    wa_set(&m, WT_STATUS);
    assert_int_equal(roundtrip(&m, &b2, &d, &err), 0);
    assert_int_equal(d.status, 3 << 8);

    /* an error answer needs no result fields */
    m = (struct wa_msg){
        .type = WA_WAIT | WA_RESPONSE, .id = 11, .errnum = ENOENT, .message = "no process 'x'"};
    assert_int_equal(roundtrip(&m, &b3, &d, &err), 0);
    assert_int_equal(d.errnum, ENOENT);
    assert_string_equal(d.message, "no process 'x'");
    wa_buf_free(&b);
    wa_buf_free(&b2);
    wa_buf_free(&b3);
    (void)state;
}

/* --- hand-made payloads */

struct raw {
    uint8_t data[4096];
    size_t len;
};

static void raw_field(struct raw *r, uint16_t tag, const void *val, uint32_t len)
{
    uint8_t *p = r->data + r->len;

    p[0] = (uint8_t)tag;
    p[1] = (uint8_t)(tag >> 8);
    for (int i = 0; i < 4; i++)
        p[2 + i] = (uint8_t)(len >> (8 * i));
    memcpy(p + 6, val, len);
    r->len += 6 + len;
}

static void raw_str(struct raw *r, uint16_t tag, const char *s)
{
    raw_field(r, tag, s, (uint32_t)strlen(s) + 1);
}

static void raw_u32(struct raw *r, uint16_t tag, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};

    raw_field(r, tag, b, 4);
}

/* r emptied, then the fields of a valid PROCESS_CREATE: container c1's init (exec id ""), sh. */
static void raw_process(struct raw *r)
{
    r->len = 0;
    raw_str(r, WT_CONTAINER, "c1");
    raw_str(r, WT_EXEC_ID, "");
    raw_str(r, WT_ARG, "sh");
}

/* r emptied, then the fields of a valid CONTAINER_CREATE: container c1, rootfs /r. */
static void raw_container(struct raw *r)
{
    r->len = 0;
    raw_str(r, WT_CONTAINER, "c1");
    raw_str(r, WT_ROOTFS_PATH, "/r");
}

/* A START request's ids, then `extra` fields; decodes and expects errnum with `msg` in it. */
static void expect_refused(uint16_t type, const struct raw *r, int errnum, const char *msg)
{
    struct wisp_err err = {0};
    struct wa_msg d;

    assert_int_equal(wa_decode(type, 1, r->data, r->len, &d, &err), -errnum);
    if (!strstr(err.msg, msg))
        fail_msg("message '%s' lacks '%s'", err.msg, msg);
}

static void test_malformed_fields(void **state)
{
    struct raw r = {0};
    uint8_t junk[3] = {1, 2, 3};

    raw_str(&r, WT_CONTAINER, "c1");
    r.len -= 2; /* the field's value cut short */
    expect_refused(WA_PS, &r, EPROTO, "only");

    r.len = 0;
    raw_str(&r, WT_CONTAINER, "c1");
    r.len = 4; /* a header cut short */
    expect_refused(WA_PS, &r, EPROTO, "cut short");

    r.len = 0;
    raw_field(&r, WT_CONTAINER, "c1", 2); /* no NUL */
    expect_refused(WA_PS, &r, EPROTO, "without its NUL");

    r.len = 0;
    raw_field(&r, WT_CONTAINER, "c\0001", 4);
    expect_refused(WA_PS, &r, EPROTO, "NUL inside");

    r.len = 0;
    raw_str(&r, WT_CONTAINER, "c1");
    raw_str(&r, WT_CONTAINER, "c2");
    expect_refused(WA_PS, &r, EPROTO, "given twice");

    r.len = 0;
    raw_str(&r, WT_CONTAINER, "c1");
    raw_field(&r, WT_SIGNAL, junk, 3);
    expect_refused(WA_SIGNAL, &r, EPROTO, "for a u32");

    r.len = 0;
    raw_str(&r, WT_CONTAINER, "c1");
    raw_u32(&r, WT_ALL, 2);
    expect_refused(WA_SIGNAL, &r, EPROTO, "for a flag");

    r.len = 0; /* a string over its bound: an id of 65 bytes */
    raw_str(&r, WT_CONTAINER, "0123456789012345678901234567890123456789012345678901234567890123x");
    expect_refused(WA_PS, &r, EPROTO, "at most 64");
    (void)state;
}

static void test_message_checks(void **state)
{
    struct raw r = {0};

    expect_refused(WA_PS, &r, EINVAL, "container id");
    raw_str(&r, WT_CONTAINER, "a/b");
    expect_refused(WA_PS, &r, EINVAL, "container id");
    r.len = 0;
    raw_str(&r, WT_CONTAINER, "..");
    expect_refused(WA_PS, &r, EINVAL, "container id");

    r.len = 0;
    raw_str(&r, WT_CONTAINER, "c1");
    expect_refused(WA_PROCESS_START, &r, EINVAL, "exec id"); /* none, not even "" */
    raw_str(&r, WT_EXEC_ID, "");
    expect_refused(WA_PROCESS_CREATE, &r, EINVAL, "at least one argument");
    raw_str(&r, WT_ARG, "sh");
    raw_str(&r, WT_CWD, "tmp");
    expect_refused(WA_PROCESS_CREATE, &r, EINVAL, "not absolute");

    raw_process(&r);
    raw_str(&r, WT_ENV, "=x");
    expect_refused(WA_PROCESS_CREATE, &r, EINVAL, "NAME=value");

    r.len = 0;
    raw_str(&r, WT_CONTAINER, "c1");
    raw_u32(&r, WT_SIGNAL, 65);
    raw_u32(&r, WT_ALL, 1);
    expect_refused(WA_SIGNAL, &r, EINVAL, "signal 65");

    r.len = 0;
    raw_str(&r, WT_CONTAINER, "c1");
    raw_str(&r, WT_EXEC_ID, "");
    raw_u32(&r, WT_STREAM, 4);
    expect_refused(WA_ATTACH, &r, EINVAL, "stream");

    r.len = 0;
    raw_str(&r, WT_CONTAINER, "c1");
    expect_refused(WA_CONTAINER_CREATE, &r, EINVAL, "needs a root");
    raw_str(&r, WT_ROOTFS_PATH, "/r");
    raw_str(&r, WT_ROOTFS_TAG, "t");
    expect_refused(WA_CONTAINER_CREATE, &r, EINVAL, "needs a root");

    r.len = 0; /* an answer without errno */
    expect_refused(WA_PS | WA_RESPONSE, &r, EPROTO, "no errno");
    raw_u32(&r, WT_ERRNO, 0);
    expect_refused(WA_PROCESS_CREATE | WA_RESPONSE, &r, EPROTO, "no pid");
    (void)state;
}

static void test_nested_checks(void **state)
{
    struct raw r = {0}, inner = {0};

    raw_process(&r);
    raw_str(&inner, WT_RLIMIT_TYPE, "RLIMIT_NOFILE");
    raw_field(&r, WT_RLIMIT, inner.data, (uint32_t)inner.len);
    expect_refused(WA_PROCESS_CREATE, &r, EPROTO, "rlimit without");

    raw_process(&r);
    inner.len = 0;
    raw_str(&inner, WT_RLIMIT_TYPE, "RLIMIT_BOGUS");
    raw_field(&inner, WT_SOFT, "\0\0\0\0\0\0\0\0", 8);
    raw_field(&inner, WT_HARD, "\0\0\0\0\0\0\0\0", 8);
    raw_field(&r, WT_RLIMIT, inner.data, (uint32_t)inner.len);
    expect_refused(WA_PROCESS_CREATE, &r, EINVAL, "unknown rlimit");

    r.len = inner.len = 0;
    raw_str(&inner, WT_IFNAME, "eth0");
    raw_str(&inner, WT_ADDRESS, "10.0.0.300/24");
    raw_field(&r, WT_IFACE, inner.data, (uint32_t)inner.len);
    expect_refused(WA_NETWORK, &r, EINVAL, "ADDRESS/PREFIX");

    r.len = inner.len = 0;
    raw_str(&inner, WT_DESTINATION, "0.0.0.0/0");
    raw_str(&inner, WT_GATEWAY, "nope");
    raw_field(&r, WT_ROUTE, inner.data, (uint32_t)inner.len);
    expect_refused(WA_NETWORK, &r, EINVAL, "not an address");

    raw_container(&r);
    inner.len = 0;
    raw_str(&inner, WT_MOUNT_TYPE, "proc");
    raw_str(&inner, WT_DESTINATION, "proc");
    raw_field(&r, WT_MOUNT, inner.data, (uint32_t)inner.len);
    expect_refused(WA_CONTAINER_CREATE, &r, EINVAL, "not absolute");

    raw_container(&r); /* a nested field cut inside */
    inner.len = 0;
    raw_str(&inner, WT_MOUNT_TYPE, "proc");
    raw_field(&r, WT_MOUNT, inner.data, (uint32_t)inner.len - 1);
    expect_refused(WA_CONTAINER_CREATE, &r, EPROTO, "only");
    (void)state;
}

static void test_counts_and_unknown_tags(void **state)
{
    struct wa_msg d;
    struct wisp_err err = {0};
    struct raw *r = calloc(1, sizeof(*r));
    uint8_t *big;
    size_t len = 0;

    /* unknown tags are skipped */
    raw_str(r, WT_CONTAINER, "c1");
    raw_u32(r, 99, 7);
    raw_str(r, 120, "future");
    assert_int_equal(wa_decode(WA_PS, 1, r->data, r->len, &d, &err), 0);
    wa_msg_free(&d);
    free(r);

    /* 1025 arguments: one more than allowed */
    big = malloc(64 + 1025 * 8);
    memcpy(big,
           "\x05\x00\x03\x00\x00\x00"
           "c1",
           8);
    big[8] = 0;
    len = 9;
    memcpy(big + len, "\x06\x00\x01\x00\x00\x00", 6);
    big[len + 6] = 0;
    len += 7;
    for (int i = 0; i < 1025; i++) {
        memcpy(big + len,
               "\x0a\x00\x02\x00\x00\x00"
               "a",
               8);
        len += 8;
    }
    assert_int_equal(wa_decode(WA_PROCESS_CREATE, 1, big, len, &d, &err), -EPROTO);
    assert_non_null(strstr(err.msg, "more than 1024"));
    free(big);
    (void)state;
}

static void test_header_checks(void **state)
{
    uint8_t raw[WA_HDR_SIZE];
    struct wisp_err err = {0};
    struct wa_hdr h = {.len = 8, .type = WA_PS, .id = 1};

    wa_hdr_encode(raw, &h);
    assert_int_equal(wa_hdr_decode(raw, &h, &err), 0);
    h = (struct wa_hdr){.len = WA_MAX_PAYLOAD + 1, .type = WA_PS};
    wa_hdr_encode(raw, &h);
    assert_int_equal(wa_hdr_decode(raw, &h, &err), -EMSGSIZE);
    h = (struct wa_hdr){.len = 0, .type = WA_PS, .flags = 1};
    wa_hdr_encode(raw, &h);
    assert_int_equal(wa_hdr_decode(raw, &h, &err), -EPROTO);
    h = (struct wa_hdr){.len = 0, .type = 99};
    wa_hdr_encode(raw, &h);
    assert_int_equal(wa_hdr_decode(raw, &h, &err), -EPROTO);
    h = (struct wa_hdr){.len = 0, .type = 0};
    wa_hdr_encode(raw, &h);
    assert_int_equal(wa_hdr_decode(raw, &h, &err), -EPROTO);
    (void)state;
}

static void test_encode_too_big(void **state)
{
    static const char *args[1];
    char *huge = malloc(WA_MAX_PAYLOAD + 10);
    struct wa_msg m = {.type = WA_PROCESS_CREATE, .container = "c", .exec_id = ""};
    struct wa_buf b = {0};

    memset(huge, 'a', WA_MAX_PAYLOAD + 9);
    huge[WA_MAX_PAYLOAD + 9] = '\0';
    args[0] = huge;
    m.process.args = args;
    m.process.nargs = 1;
    assert_int_equal(wa_encode(&b, &m), -E2BIG);
    wa_buf_free(&b);
    free(huge);
    assert_true(wa_id_valid("abc-1.2_x+y", false));
    assert_false(wa_id_valid("", false));
    assert_true(wa_id_valid("", true));
    assert_int_equal(wa_rlimit_from_name("RLIMIT_NOFILE"), 7);
    assert_int_equal(wa_rlimit_from_name("NOFILE"), -1);
    (void)state;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_process_create_roundtrip),
        cmocka_unit_test(test_container_and_network_roundtrip),
        cmocka_unit_test(test_answers_roundtrip),
        cmocka_unit_test(test_malformed_fields),
        cmocka_unit_test(test_message_checks),
        cmocka_unit_test(test_nested_checks),
        cmocka_unit_test(test_counts_and_unknown_tags),
        cmocka_unit_test(test_header_checks),
        cmocka_unit_test(test_encode_too_big),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
