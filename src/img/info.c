/* wisp-img info: format, sizes, backing file, snapshots, format-specific fields (human / JSON,
 * optionally for the whole backing chain). */
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/parse.h"
#include "img/img.h"

static const char info_help[] =
    "Shows information about the image 'filename'.\n"
    "\n"
    "  -f fmt            image format (probed when omitted)\n"
    "  --output=json     JSON as qemu-img prints it (also --json)\n"
    "  --backing-chain   show every image of the backing chain\n"
    "  -U                accepted for compatibility (images are opened read-only)\n";

struct snaps {
    unsigned n;
    struct qcow2_snapshot_info *list;
};

static void load_snapshots(struct block_dev *bs, struct snaps *s)
{
    s->n = 0;
    s->list = NULL;
    struct wisp_err err = {0};
    if (bs->drv == &qcow2_driver && qcow2_snapshot_list(bs, &s->list, &s->n, &err) < 0)
        s->n = 0;
}

static void free_snapshots(struct snaps *s)
{
    free(s->list);
}

/* Like qemu-img: "1 GiB (1073741824 bytes)". */
static void print_size_line(const char *label, uint64_t v, bool with_bytes)
{
    char buf[32];
    format_size(v, buf, sizeof(buf));
    if (with_bytes)
        printf("%s: %s (%" PRIu64 " bytes)\n", label, buf, v);
    else
        printf("%s: %s\n", label, buf);
}

static void print_human(struct block_dev *bs, const struct block_info *in, struct snaps *s)
{
    printf("image: %s\n", bs->filename);
    printf("file format: %s\n", in->format);
    print_size_line("virtual size", in->virtual_size, true);
    print_size_line("disk size", in->allocated, false);
    if (in->cluster_size)
        printf("cluster_size: %u\n", in->cluster_size);
    if (in->backing_file[0]) {
        printf("backing file: %s", in->backing_file);
        if (bs->backing && strcmp(bs->backing->filename, in->backing_file))
            printf(" (actual path: %s)", bs->backing->filename);
        printf("\n");
    }
    if (in->backing_format[0])
        printf("backing file format: %s\n", in->backing_format);
    if (s->n) {
        printf("Snapshot list:\n%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE",
               "VM CLOCK", "ICOUNT");
        for (unsigned i = 0; i < s->n; i++) {
            struct qcow2_snapshot_info *si = &s->list[i];
            char date[32], vms[32];
            time_t t = si->date_sec;
            struct tm tm;
            localtime_r(&t, &tm);
            strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
            format_size(si->vm_state_size, vms, sizeof(vms));
            uint64_t ms = si->vm_clock_nsec / 1000000;
            printf("%-9s %-16s %8s %19s %02u:%02u:%02u.%03u %10s\n", si->id, si->name, vms, date,
                   (unsigned)(ms / 3600000), (unsigned)(ms / 60000 % 60),
                   (unsigned)(ms / 1000 % 60), (unsigned)(ms % 1000), "");
        }
    }
    if (in->qcow2_version) {
        printf("Format specific information:\n");
        printf("    compat: %s\n", in->qcow2_version >= 3 ? "1.1" : "0.10");
        printf("    compression type: %s\n",
               in->compression_type[0] ? in->compression_type : "zlib");
        if (in->qcow2_version >= 3) {
            printf("    lazy refcounts: %s\n", in->lazy_refcounts ? "true" : "false");
            printf("    refcount bits: %u\n", in->refcount_bits);
            printf("    corrupt: %s\n", in->corrupt ? "true" : "false");
            printf("    extended l2: %s\n", in->extended_l2 ? "true" : "false");
        }
    }
    printf("Child node '/file':\n    filename: %s\n    protocol type: file\n", bs->filename);
    print_size_line("    file length", in->file_size, true);
    print_size_line("    disk size", in->allocated, false);
}

static json_t *info_json(struct block_dev *bs, const struct block_info *in, struct snaps *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "virtual-size", json_integer((json_int_t)in->virtual_size));
    json_object_set_new(o, "filename", json_string(bs->filename));
    if (in->cluster_size)
        json_object_set_new(o, "cluster-size", json_integer(in->cluster_size));
    json_object_set_new(o, "format", json_string(in->format));
    json_object_set_new(o, "actual-size", json_integer((json_int_t)in->allocated));
    if (in->qcow2_version) {
        json_t *d = json_object();
        json_object_set_new(d, "compat", json_string(in->qcow2_version >= 3 ? "1.1" : "0.10"));
        json_object_set_new(d, "compression-type",
                            json_string(in->compression_type[0] ? in->compression_type : "zlib"));
        if (in->qcow2_version >= 3) {
            json_object_set_new(d, "lazy-refcounts", json_boolean(in->lazy_refcounts));
            json_object_set_new(d, "refcount-bits", json_integer(in->refcount_bits));
            json_object_set_new(d, "corrupt", json_boolean(in->corrupt));
            json_object_set_new(d, "extended-l2", json_boolean(in->extended_l2));
        }
        json_object_set_new(o, "format-specific",
                            json_pack("{s:s,s:o}", "type", "qcow2", "data", d));
    }
    if (in->backing_file[0]) {
        json_object_set_new(o, "backing-filename", json_string(in->backing_file));
        if (bs->backing)
            json_object_set_new(o, "full-backing-filename", json_string(bs->backing->filename));
    }
    if (in->backing_format[0])
        json_object_set_new(o, "backing-filename-format", json_string(in->backing_format));
    json_object_set_new(o, "dirty-flag", json_boolean(in->dirty));
    if (s->n) {
        json_t *a = json_array();
        for (unsigned i = 0; i < s->n; i++) {
            struct qcow2_snapshot_info *si = &s->list[i];
            json_array_append_new(a, json_pack("{s:I,s:s,s:I,s:I,s:s,s:I}", "vm-state-size",
                                               (json_int_t)si->vm_state_size, "name", si->name,
                                               "date-sec", (json_int_t)si->date_sec, "date-nsec",
                                               (json_int_t)si->date_nsec, "id", si->id,
                                               "vm-clock-nsec", (json_int_t)si->vm_clock_nsec));
        }
        json_object_set_new(o, "snapshots", a);
    }
    return o;
}

int img_info_main(int argc, char **argv)
{
    enum { OPT_OUTPUT = 256, OPT_CHAIN, OPT_JSON };
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},        {"output", required_argument, NULL, OPT_OUTPUT},
        {"json", no_argument, NULL, OPT_JSON},   {"backing-chain", no_argument, NULL, OPT_CHAIN},
        {"force-share", no_argument, NULL, 'U'}, {0}};
    const char *fmt = NULL;
    bool json = false, chain = false;
    int c, r;
    while ((c = getopt_long(argc, argv, "hf:U", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            return img_print_command_help("info", info_help);
        case 'f':
            fmt = optarg;
            break;
        case 'U':
            break;
        case OPT_OUTPUT:
            if ((r = img_parse_output("info", optarg, &json)) != 0)
                return r;
            break;
        case OPT_JSON:
            json = true;
            break;
        case OPT_CHAIN:
            chain = true;
            break;
        default:
            return img_usage_error("info", "invalid option");
        }
    }
    if (optind != argc - 1)
        return img_usage_error("info", "Expecting one image file name");
    struct block_dev *top;
    struct img_open_args a = {.format = fmt, .read_only = true, .no_backing = !chain};
    if (img_open(&top, argv[optind], &a) < 0) {
        /* a missing backing file should not hide the image's own information */
        a.no_backing = true;
        if (chain || img_open(&top, argv[optind], &a) < 0)
            return IMG_EXIT_ERROR;
    }
    json_t *arr = json_array();
    int rc = IMG_EXIT_OK;
    for (struct block_dev *bs = top; bs; bs = chain ? bs->backing : NULL) {
        struct block_info in;
        struct wisp_err err = {0};
        if (block_get_info(bs, &in, &err) < 0) {
            img_error("%s", err.msg);
            rc = IMG_EXIT_ERROR;
            break;
        }
        /* host file figures come from the file itself, whatever the format */
        block_file_size(bs->file, &in.file_size, NULL);
        block_file_allocated(bs->file, &in.allocated, NULL);
        struct snaps s;
        load_snapshots(bs, &s);
        if (json)
            json_array_append_new(arr, info_json(bs, &in, &s));
        else {
            if (bs != top)
                printf("\n");
            print_human(bs, &in, &s);
        }
        free_snapshots(&s);
    }
    if (json && rc == IMG_EXIT_OK) {
        json_t *out = chain ? json_incref(arr) : json_incref(json_array_get(arr, 0));
        json_dumpf(out, stdout, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
        printf("\n");
        json_decref(out);
    }
    json_decref(arr);
    block_close(top);
    return rc;
}
