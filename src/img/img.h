/* wisp-img: shared pieces of the subcommands (one file per subcommand in src/img/). */
#ifndef WISP_IMG_IMG_H
#define WISP_IMG_IMG_H

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "block/block.h"
#include "block/qcow2.h"

/* Exit codes (qemu-img's): 0 success, 1 error (usage errors included). */
#define IMG_EXIT_OK    0
#define IMG_EXIT_ERROR 1

struct img_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *synopsis; /* one line for `wisp-img --help` */
};

int img_create_main(int argc, char **argv);
int img_info_main(int argc, char **argv);
int img_check_main(int argc, char **argv);
int img_convert_main(int argc, char **argv);
int img_resize_main(int argc, char **argv);
int img_commit_main(int argc, char **argv);
int img_rebase_main(int argc, char **argv);
int img_map_main(int argc, char **argv);
int img_compare_main(int argc, char **argv);
int img_snapshot_main(int argc, char **argv);
int img_bench_main(int argc, char **argv);
int img_measure_main(int argc, char **argv);

/* `wisp-img <cmd> --help`: the synopsis and `details` on stdout; returns IMG_EXIT_OK. */
int img_print_command_help(const char *name, const char *details);

/* "wisp-img: <message>" on stderr. */
void img_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints the usage error, a hint to --help, and returns IMG_EXIT_ERROR. */
int img_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Opens an image for a subcommand; on failure prints the error and returns < 0. */
struct img_open_args {
    const char *format; /* NULL = probe */
    bool read_only;
    bool no_backing;
    bool repair; /* block_open_opts.repair (wisp-img check) */
    /* Before a command writes: every qcow2 image of the chain is checked (qcow2_check) and a
     * damaged one refused, so that a command never starts writing into a corrupt image. */
    bool preflight;
    const char *cache; /* NULL = writeback */
    const char *aio;   /* NULL = threads when needed, else sync */
    const char *backing_override, *backing_format_override;
    const struct block_throttle_limits *throttle;
    unsigned aio_threads, aio_queue_depth;
    int64_t poll_max_ns; /* block_open_opts.poll_max_ns */
};
int img_open(struct block_dev **bs, const char *path, const struct img_open_args *a);
/* Checks every qcow2 image from bs down its backing chain; prints why and returns < 0 when one
 * has errors (leaks are fine). */
int img_preflight(struct block_dev *bs);

/* Parses a cache / aio name or prints an error. */
int img_parse_cache(const char *s, enum block_cache_mode *m);
/* Sizes with K/M/G/T suffixes; prints an error naming `what` on failure. */
/* Handles --output=human|json for command `cmd`: sets *json and returns 0, or returns the
 * usage-error exit status after printing the message. */
int img_parse_output(const char *cmd, const char *arg, bool *json);

int img_parse_size(const char *s, const char *what, uint64_t *out);

/* Status of [off, off+len) through the chain from `bs` down (to but excluding `base`, NULL =
 * the whole chain). *depth = index of the layer that answered (0 = bs); *layer = that node.
 * Unallocated everywhere: flags without ALLOCATED, *layer = the deepest node searched. */
int img_status_above(struct block_dev *bs, struct block_dev *base, uint64_t off, uint64_t len,
                     uint64_t *pnum, uint64_t *host_offset, int *depth, struct block_dev **layer,
                     struct wisp_err *err);

/* The progress bar of -p, drawn on stderr as "    (12.34/100%)". */
struct img_progress {
    bool enabled;
    int last; /* hundredths of a percent last drawn */
};
void img_progress_update(struct img_progress *p, uint64_t done, uint64_t total);
void img_progress_end(struct img_progress *p);

/* Creation options of -o key=value,... (create, convert, measure). */
struct img_create_opts {
    const char *format;
    uint64_t size; /* 0 = not given */
    bool size_given;
    uint32_t cluster_size;
    int version;
    unsigned refcount_bits;
    bool lazy_refcounts, extended_l2;
    const char *backing_file, *backing_format;
    int prealloc; /* 0 off, 1 metadata, 2 falloc, 3 full */
    const char *compression_type;
};
int img_parse_create_opts(const char *s, struct img_create_opts *o);
/* Creates an image file of o->format ("raw" or "qcow2"). */
int img_create_image(const char *path, const struct img_create_opts *o, struct wisp_err *err);

bool img_buffer_is_zero(const void *buf, size_t len);
double img_now(void);

#endif
