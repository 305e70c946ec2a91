/* libvirt domain XML into a wisp definition (libvirt_xml.h; docs/wisp.md, "import-libvirt").
 * The XML is untrusted: it is parsed by libxml2 without network access, DTD loading or entity
 * substitution (entities stay references; libxml2's own limits bound nesting and sizes), and
 * every element wisp has no meaning for is an error that names it, rather than a VM that
 * silently differs from what the XML says. fuzz/libvirt_fuzz.c feeds it any bytes. */
#include "libvirt_xml.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#define MAX_XML (1 << 20)

struct ctx {
    char *err;
    size_t err_size;
    json_t *def, *drives, *nics, *warnings;
    json_t *vcpu_pins;
    long long vcpus;
};

static int fail(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct ctx *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->err_size, fmt, ap);
    va_end(ap);
    return -1;
}

static void warn(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(struct ctx *c, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    json_array_append_new(c->warnings, json_string(buf));
}

static bool is(const xmlNode *n, const char *name)
{
    return n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, name);
}

/* The text of an element (trimmed, in a static-free buffer), "" when none. */
static void text_of(const xmlNode *n, char *out, size_t size)
{
    xmlChar *t = xmlNodeGetContent(n);
    const char *s = t ? (const char *)t : "";
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    size_t len = strlen(s);
    while (len &&
           (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '\n' || s[len - 1] == '\r'))
        len--;
    if (len >= size)
        len = size - 1;
    memcpy(out, s, len);
    out[len] = '\0';
    xmlFree(t);
}

/* An attribute's value into out ("" when absent); false when absent. */
static bool attr(const xmlNode *n, const char *name, char *out, size_t size)
{
    xmlChar *v = xmlGetProp(n, (const xmlChar *)name);
    snprintf(out, size, "%s", v ? (const char *)v : "");
    bool found = v != NULL;
    xmlFree(v);
    return found;
}

static bool valid_utf8_text(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 && *s != '\t')
            return false;
    return true;
}

/* <memory unit='...'>N</memory>: libvirt's units (default KiB) into MiB, rounded up. */
static int parse_memory(struct ctx *c, const xmlNode *n, const char *where, long long *mib)
{
    char v[64], unit[16];
    text_of(n, v, sizeof(v));
    attr(n, "unit", unit, sizeof(unit));
    static const struct {
        const char *name;
        unsigned long long mul;
    } units[] = {{"", 1024},
                 {"b", 1},
                 {"bytes", 1},
                 {"KB", 1000},
                 {"k", 1024},
                 {"KiB", 1024},
                 {"MB", 1000000},
                 {"M", 1 << 20},
                 {"MiB", 1 << 20},
                 {"GB", 1000000000},
                 {"G", 1ull << 30},
                 {"GiB", 1ull << 30},
                 {"TB", 1000000000000ull},
                 {"T", 1ull << 40},
                 {"TiB", 1ull << 40}};
    unsigned long long mul = 0;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (!strcmp(unit, units[i].name))
            mul = units[i].mul;
    if (!mul)
        return fail(c,
                    "%s: unit '%s' is not one of libvirt's (b, KB, k, KiB, MB, M, MiB, GB, G, "
                    "GiB, TB, T, TiB)",
                    where, unit);
    char *end;
    errno = 0;
    unsigned long long n_ = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-')
        return fail(c, "%s: '%s' is not a number", where, v);
    if (n_ > ULLONG_MAX / mul)
        return fail(c, "%s: %s %s is too large", where, v, unit[0] ? unit : "KiB");
    unsigned long long bytes = n_ * mul, m = bytes / (1 << 20) + (bytes % (1 << 20) != 0);
    if (m < 2 || m > 1048576)
        return fail(c, "%s: %llu MiB is out of range (2 MiB to 1 TiB)", where, m);
    *mib = (long long)m;
    return 0;
}

/* The definition's "placement" object, made when first needed. */
static json_t *placement_of(struct ctx *c)
{
    json_t *pl = json_object_get(c->def, "placement");
    if (!pl)
        json_object_set_new(c->def, "placement", pl = json_object());
    return pl;
}

/* A cpuset ("0-3,^2,5"): only its characters are checked here; wispd checks the CPUs. */
static int check_cpuset(struct ctx *c, const char *where, const char *v)
{
    if (!*v || strspn(v, "0123456789,-^") != strlen(v))
        return fail(c, "%s: cpuset '%s' is not a CPU list", where, v);
    return 0;
}

static int parse_vcpu(struct ctx *c, const xmlNode *n)
{
    char v[32], set[256], cur[32];
    text_of(n, v, sizeof(v));
    char *end;
    long long k = strtoll(v, &end, 10);
    if (end == v || *end || k < 1 || k > 1024)
        return fail(c, "<vcpu>: '%s' is not a number of vCPUs (1 to 1024)", v);
    if (attr(n, "current", cur, sizeof(cur)) && strtoll(cur, NULL, 10) != k)
        return fail(c,
                    "<vcpu current='%s'>: vCPU hotplug is not supported (current must be the "
                    "count)",
                    cur);
    if (attr(n, "cpuset", set, sizeof(set))) {
        if (check_cpuset(c, "<vcpu cpuset>", set) < 0)
            return -1;
        json_object_set_new(placement_of(c), "cpus", json_string(set));
    }
    c->vcpus = k;
    json_object_set_new(c->def, "vcpus", json_integer(k));
    return 0;
}

static int parse_cputune(struct ctx *c, const xmlNode *n)
{
    for (const xmlNode *e = n->children; e; e = e->next) {
        if (e->type != XML_ELEMENT_NODE)
            continue;
        char vcpu[32], set[256];
        if (is(e, "vcpupin")) {
            if (!attr(e, "vcpu", vcpu, sizeof(vcpu)) || !attr(e, "cpuset", set, sizeof(set)))
                return fail(c, "<cputune><vcpupin>: needs vcpu= and cpuset=");
            char *end;
            long long k = strtoll(vcpu, &end, 10);
            if (end == vcpu || *end || k < 0 || k >= 1024)
                return fail(c, "<cputune><vcpupin vcpu='%s'>: not a vCPU number", vcpu);
            if (check_cpuset(c, "<cputune><vcpupin>", set) < 0)
                return -1;
            while ((long long)json_array_size(c->vcpu_pins) <= k)
                json_array_append_new(c->vcpu_pins, json_null());
            json_array_set_new(c->vcpu_pins, (size_t)k, json_string(set));
        } else if (is(e, "emulatorpin")) {
            if (!attr(e, "cpuset", set, sizeof(set)) || check_cpuset(c, "<emulatorpin>", set) < 0)
                return c->err[0] ? -1 : fail(c, "<cputune><emulatorpin>: needs cpuset=");
            json_object_set_new(placement_of(c), "vmm_cpus", json_string(set));
        } else {
            return fail(c, "<cputune><%s>: not supported (wisp takes vcpupin and emulatorpin)",
                        (const char *)e->name);
        }
    }
    return 0;
}

static int parse_os(struct ctx *c, const xmlNode *n)
{
    for (const xmlNode *e = n->children; e; e = e->next) {
        if (e->type != XML_ELEMENT_NODE)
            continue;
        char v[4096], a[64];
        text_of(e, v, sizeof(v));
        if (is(e, "type")) {
            if (strcmp(v, "hvm"))
                return fail(c, "<os><type>%s</type>: only hvm", v);
            if (attr(e, "arch", a, sizeof(a)) && strcmp(a, "x86_64"))
                return fail(c, "<os><type arch='%s'>: only x86_64", a);
        } else if (is(e, "kernel") || is(e, "initrd")) {
            if (v[0] != '/')
                return fail(c, "<os><%s>: '%s' is not an absolute path", (const char *)e->name, v);
            json_object_set_new(c->def, (const char *)e->name, json_string(v));
        } else if (is(e, "cmdline")) {
            if (!valid_utf8_text(v))
                return fail(c, "<os><cmdline>: control characters");
            json_object_set_new(c->def, "cmdline", json_string(v));
        } else if (is(e, "boot") || is(e, "bootmenu") || is(e, "smbios") || is(e, "bios")) {
            /* firmware boot order: wisp boots the kernel directly */
        } else {
            return fail(c,
                        "<os><%s>: not supported (wisp boots os/kernel directly: no "
                        "firmware, loader or nvram)",
                        (const char *)e->name);
        }
    }
    if (!json_object_get(c->def, "kernel"))
        return fail(c, "<os>: no <kernel>: wisp boots a kernel directly (firmware boot from a "
                       "disk is not supported)");
    return 0;
}

static int parse_disk(struct ctx *c, const xmlNode *n)
{
    char type[32], device[32], file[4096] = "", fmt[32] = "", dev[32] = "", bus[32] = "";
    attr(n, "type", type, sizeof(type));
    attr(n, "device", device, sizeof(device));
    if (strcmp(type, "file"))
        return fail(c, "<disk type='%s'>: not supported (only type='file')", type);
    if (device[0] && strcmp(device, "disk"))
        return fail(c, "<disk device='%s'>: not supported (only device='disk')", device);
    bool ro = false;
    for (const xmlNode *e = n->children; e; e = e->next) {
        if (e->type != XML_ELEMENT_NODE)
            continue;
        if (is(e, "source")) {
            attr(e, "file", file, sizeof(file));
        } else if (is(e, "driver")) {
            attr(e, "type", fmt, sizeof(fmt));
            if (fmt[0] && strcmp(fmt, "raw") && strcmp(fmt, "qcow2"))
                return fail(c, "<disk><driver type='%s'>: only raw and qcow2", fmt);
        } else if (is(e, "target")) {
            attr(e, "dev", dev, sizeof(dev));
            attr(e, "bus", bus, sizeof(bus));
            if (bus[0] && strcmp(bus, "virtio"))
                return fail(c,
                            "<disk><target bus='%s'>: only virtio (wisp's disks are "
                            "virtio-blk)",
                            bus);
        } else if (is(e, "readonly")) {
            ro = true;
        } else if (is(e, "serial") || is(e, "alias") || is(e, "address") || is(e, "boot")) {
            /* ignored: PCI addresses and aliases mean nothing on wisp's MMIO transport */
        } else {
            return fail(c, "<disk><%s>: not supported", (const char *)e->name);
        }
    }
    if (file[0] != '/')
        return fail(c, "<disk>: <source file='%s'> is not an absolute path", file);
    size_t idx = json_array_size(c->drives);
    char id[40];
    snprintf(id, sizeof(id), "%s", dev[0] ? dev : "");
    if (!id[0] || strspn(id, "abcdefghijklmnopqrstuvwxyz0123456789") != strlen(id))
        snprintf(id, sizeof(id), "drive%zu", idx);
    json_t *d = json_pack("{s:s, s:s, s:b}", "id", id, "path", file, "root", idx == 0);
    if (fmt[0])
        json_object_set_new(d, "format", json_string(fmt));
    if (ro)
        json_object_set_new(d, "read_only", json_true());
    json_array_append_new(c->drives, d);
    return 0;
}

static bool mac_ok(const char *m)
{
    if (strlen(m) != 17)
        return false;
    for (int i = 0; i < 17; i++)
        if (i % 3 == 2 ? m[i] != ':' : !strchr("0123456789abcdefABCDEF", m[i]))
            return false;
    return true;
}

static int parse_interface(struct ctx *c, const xmlNode *n)
{
    char type[32], tap[64] = "", mac[32] = "", model[32] = "", src[64] = "";
    attr(n, "type", type, sizeof(type));
    if (strcmp(type, "ethernet") && strcmp(type, "bridge") && strcmp(type, "network"))
        return fail(c, "<interface type='%s'>: not supported (ethernet, bridge or network: a tap)",
                    type);
    for (const xmlNode *e = n->children; e; e = e->next) {
        if (e->type != XML_ELEMENT_NODE)
            continue;
        if (is(e, "target"))
            attr(e, "dev", tap, sizeof(tap));
        else if (is(e, "mac"))
            attr(e, "address", mac, sizeof(mac));
        else if (is(e, "model"))
            attr(e, "type", model, sizeof(model));
        else if (is(e, "source")) {
            if (!attr(e, "bridge", src, sizeof(src)))
                attr(e, "network", src, sizeof(src));
        } else if (is(e, "alias") || is(e, "address"))
            ;
        else
            return fail(c, "<interface><%s>: not supported", (const char *)e->name);
    }
    if (model[0] && strcmp(model, "virtio"))
        return fail(c, "<interface><model type='%s'>: only virtio", model);
    if (mac[0] && !mac_ok(mac))
        return fail(c, "<interface><mac address='%s'>: not a MAC address", mac);
    size_t idx = json_array_size(c->nics);
    const char *name = json_string_value(json_object_get(c->def, "name"));
    if (!tap[0])
        snprintf(tap, sizeof(tap), "%.10s-n%zu", name ? name : "vm", idx);
    if (strlen(tap) > 15 || strspn(tap, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789._-") != strlen(tap))
        return fail(c,
                    "<interface><target dev='%s'>: not a tap name (at most 15 of A-Z a-z 0-9 . "
                    "_ -)",
                    tap);
    if (src[0])
        warn(c,
             "interface %zu: the tap %s is not attached to %s '%s' by the import (wispd's networks "
             "do that)",
             idx, tap, strcmp(type, "bridge") ? "network" : "bridge", src);
    char id[16];
    snprintf(id, sizeof(id), "net%zu", idx);
    json_t *ni = json_pack("{s:s, s:s}", "id", id, "tap", tap);
    if (mac[0])
        json_object_set_new(ni, "mac", json_string(mac));
    json_array_append_new(c->nics, ni);
    return 0;
}

/* <serial>/<console>: which guest console the log and the attach serve. */
static int parse_console(struct ctx *c, const xmlNode *n)
{
    char type[32] = "", ttype[32] = "";
    attr(n, "type", type, sizeof(type));
    for (const xmlNode *e = n->children; e; e = e->next)
        if (is(e, "target"))
            attr(e, "type", ttype, sizeof(ttype));
    if (type[0] && strcmp(type, "pty") && strcmp(type, "file") && strcmp(type, "stdio"))
        return fail(c,
                    "<%s type='%s'>: not supported (wispd keeps the console itself: pty, file "
                    "or stdio)",
                    (const char *)n->name, type);
    const char *con = !strcmp(ttype, "virtio") ? "virtio" : "serial";
    if (ttype[0] && strcmp(ttype, "virtio") && strcmp(ttype, "serial") &&
        strcmp(ttype, "isa-serial"))
        return fail(c, "<%s><target type='%s'>: only serial or virtio", (const char *)n->name,
                    ttype);
    /* <console type='pty'><target type='serial'/> is libvirt's alias of the first serial */
    if (!json_object_get(c->def, "console") || !strcmp(con, "virtio"))
        json_object_set_new(c->def, "console", json_string(con));
    return 0;
}

static int parse_devices(struct ctx *c, const xmlNode *n)
{
    for (const xmlNode *e = n->children; e; e = e->next) {
        if (e->type != XML_ELEMENT_NODE)
            continue;
        char model[32];
        int r = 0;
        if (is(e, "disk"))
            r = parse_disk(c, e);
        else if (is(e, "interface"))
            r = parse_interface(c, e);
        else if (is(e, "serial") || is(e, "console"))
            r = parse_console(c, e);
        else if (is(e, "emulator"))
            ; /* wisp-vmm is the emulator */
        else if ((is(e, "memballoon") || is(e, "controller")) &&
                 (!attr(e, "model", model, sizeof(model)) || !strcmp(model, "none") ||
                  is(e, "controller")))
            ; /* a balloon turned off; bus controllers have no meaning on MMIO */
        else
            r = fail(c,
                     "<devices><%s>: not supported by wisp (disks, interfaces, serial and "
                     "console)",
                     (const char *)e->name);
        if (r < 0)
            return r;
    }
    return 0;
}

static int parse_domain(struct ctx *c, const xmlNode *root)
{
    if (!root || !is(root, "domain"))
        return fail(c, "the root element is <%s>, not <domain>",
                    root ? (const char *)root->name : "none");
    char type[32];
    if (attr(root, "type", type, sizeof(type)) && strcmp(type, "kvm"))
        return fail(c, "<domain type='%s'>: only kvm", type);
    bool seen_memory = false;
    long long mib = 0, cur = 0;
    for (const xmlNode *e = root->children; e; e = e->next) {
        if (e->type != XML_ELEMENT_NODE)
            continue;
        char v[256];
        int r = 0;
        if (is(e, "name")) {
            text_of(e, v, sizeof(v));
            json_object_set_new(c->def, "name", json_string(v));
        } else if (is(e, "memory")) {
            r = parse_memory(c, e, "<memory>", &mib);
            seen_memory = true;
        } else if (is(e, "currentMemory")) {
            r = parse_memory(c, e, "<currentMemory>", &cur);
        } else if (is(e, "vcpu")) {
            r = parse_vcpu(c, e);
        } else if (is(e, "cputune")) {
            r = parse_cputune(c, e);
        } else if (is(e, "os")) {
            r = parse_os(c, e);
        } else if (is(e, "devices")) {
            r = parse_devices(c, e);
        } else if (is(e, "on_crash")) {
            text_of(e, v, sizeof(v));
            if (!strcmp(v, "restart"))
                json_object_set_new(c->def, "restart_policy", json_string("on-failure"));
            else if (strcmp(v, "destroy"))
                r = fail(c, "<on_crash>%s</on_crash>: only destroy or restart", v);
        } else if (is(e, "on_poweroff") || is(e, "on_reboot")) {
            text_of(e, v, sizeof(v));
            if (strcmp(v, "destroy") && strcmp(v, "restart"))
                r = fail(c, "<%s>%s</%s>: only destroy or restart", (const char *)e->name, v,
                         (const char *)e->name);
        } else if (is(e, "uuid") || is(e, "title") || is(e, "description") || is(e, "metadata") ||
                   is(e, "features") || is(e, "clock") || is(e, "pm") || is(e, "resource") ||
                   is(e, "cpu")) {
            /* descriptive, or what wisp's machine model fixes (ACPI, APIC, the guest clock,
             * KVM's CPU model) */
        } else {
            r = fail(c, "<%s>: not supported by wisp", (const char *)e->name);
        }
        if (r < 0)
            return r;
    }
    const char *name = json_string_value(json_object_get(c->def, "name"));
    if (!name || !*name)
        return fail(c, "<name>: missing");
    if (!seen_memory)
        return fail(c, "<memory>: missing");
    if (!json_object_get(c->def, "kernel"))
        return fail(c, "<os><kernel>: missing (wisp boots a kernel directly)");
    if (cur && cur != mib)
        warn(c, "<currentMemory> %lld MiB: ignored, the VM gets <memory> %lld MiB", cur, mib);
    json_object_set_new(c->def, "memory_mib", json_integer(mib));
    if (json_array_size(c->vcpu_pins)) {
        if ((long long)json_array_size(c->vcpu_pins) > (c->vcpus ? c->vcpus : 1))
            return fail(c, "<cputune><vcpupin>: vCPU %zu is beyond <vcpu> %lld",
                        json_array_size(c->vcpu_pins) - 1, c->vcpus ? c->vcpus : 1);
        size_t i;
        json_t *p;
        json_array_foreach(c->vcpu_pins, i, p) if (json_is_null(p)) return fail(
            c, "<cputune><vcpupin>: vCPU %zu has no pin (pin every vCPU, or none)", i);
        json_object_set(placement_of(c), "vcpu_cpus", c->vcpu_pins);
    }
    if (json_array_size(c->drives))
        json_object_set(c->def, "drives", c->drives);
    if (json_array_size(c->nics))
        json_object_set(c->def, "nics", c->nics);
    return 0;
}

static void quiet_errors(void *ctx, const char *msg, ...)
{
}

int libvirt_to_def(const char *xml, size_t len, json_t **def, json_t **warnings, char *err,
                   size_t err_size)
{
    struct ctx c = {.err = err, .err_size = err_size};
    err[0] = '\0';
    if (len > MAX_XML) {
        snprintf(err, err_size, "the XML is larger than %d bytes", MAX_XML);
        return -1;
    }
    xmlSetGenericErrorFunc(NULL, quiet_errors);
    /* no network, no DTD, no entity substitution, no XInclude: the file alone */
    xmlDocPtr doc = xmlReadMemory(xml, (int)len, "domain.xml", NULL,
                                  XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                                      XML_PARSE_NOCDATA);
    if (!doc) {
        const xmlError *e = xmlGetLastError();
        snprintf(err, err_size, "not well-formed XML%s%s", e && e->message ? ": " : "",
                 e && e->message ? e->message : "");
        size_t n = strlen(err);
        while (n && err[n - 1] == '\n')
            err[--n] = '\0';
        if (e && e->line)
            snprintf(err + n, err_size - n, " (line %d)", e->line);
        return -1;
    }
    c.def = json_object();
    c.drives = json_array();
    c.nics = json_array();
    c.warnings = json_array();
    c.vcpu_pins = json_array();
    int r = parse_domain(&c, xmlDocGetRootElement(doc));
    xmlFreeDoc(doc);
    json_decref(c.drives);
    json_decref(c.nics);
    json_decref(c.vcpu_pins);
    if (r < 0) {
        json_decref(c.def);
        json_decref(c.warnings);
        return -1;
    }
    *def = c.def;
    if (warnings)
        *warnings = c.warnings;
    else
        json_decref(c.warnings);
    return 0;
}
