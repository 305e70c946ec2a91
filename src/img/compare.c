/* wisp-img compare: are two images' guest-visible contents identical? Exit 0 identical,
 * 1 different, 2 error (qemu-img compare). Strict mode (-s) also requires equal sizes and equal
 * allocation status. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "img/img.h"

#define CMP_CHUNK          (1u << 20)
#define CMP_EXIT_DIFFERENT 1
#define CMP_EXIT_ERROR     2

static const char compare_help[] =
    "Compares the contents of two images (through their backing chains).\n"
    "\n"
    "  -f fmt          format of filename1 (probed when omitted)\n"
    "  -F fmt          format of filename2\n"
    "  -s              strict: sizes and allocation must match too\n"
    "  -p              progress bar on stderr\n"
    "  -q              quiet\n"
    "\n"
    "Exit status: 0 identical, 1 different, 2 error.\n";

static int first_diff(const uint8_t *a, const uint8_t *b, uint64_t len, uint64_t *at)
{
    for (uint64_t i = 0; i < len; i += 512) {
        uint64_t n = len - i < 512 ? len - i : 512;
        if (memcmp(a + i, b + i, n)) {
            for (uint64_t j = i; j < i + n; j++)
                if (a[j] != b[j]) {
                    *at = j;
                    return 1;
                }
        }
    }
    return 0;
}

/* Compares [0, common) of both and the tail of the longer one against zeroes. */
static int compare_images(struct block_dev *x, struct block_dev *y, bool strict, bool quiet,
                          struct img_progress *pg)
{
    cleanup_free uint8_t *a = malloc(CMP_CHUNK);
    cleanup_free uint8_t *b = calloc(1, CMP_CHUNK);
    if (!a || !b)
        return CMP_EXIT_ERROR;
    uint64_t total = x->size > y->size ? x->size : y->size;
    struct wisp_err err = {0};
    for (uint64_t p = 0; p < total;) {
        uint64_t len = total - p < CMP_CHUNK ? total - p : CMP_CHUNK, at;
        struct block_dev *only = p >= y->size ? x : p >= x->size ? y : NULL;
        if (!only && x->size - p < len)
            len = x->size - p;
        if (!only && y->size - p < len)
            len = y->size - p;
        if (strict && !only) {
            uint64_t n1, n2, h;
            int d;
            struct block_dev *l;
            int s1 = img_status_above(x, NULL, p, len, &n1, &h, &d, &l, &err);
            int s2 = s1 < 0 ? s1 : img_status_above(y, NULL, p, len, &n2, &h, &d, &l, &err);
            if (s2 < 0)
                goto fail;
            if ((s1 & (BLOCK_STATUS_ALLOCATED | BLOCK_STATUS_ZERO)) !=
                (s2 & (BLOCK_STATUS_ALLOCATED | BLOCK_STATUS_ZERO))) {
                if (!quiet)
                    printf("Strict mode: Offset %" PRIu64 " block status mismatch!\n", p);
                return CMP_EXIT_DIFFERENT;
            }
            len = n1 < n2 ? n1 : n2;
        }
        if (only) {
            if (block_pread(only, p, a, len, &err) < 0)
                goto fail;
            memset(b, 0, len);
        } else if (block_pread(x, p, a, len, &err) < 0 || block_pread(y, p, b, len, &err) < 0) {
            goto fail;
        }
        if (first_diff(a, b, len, &at)) {
            if (!quiet)
                printf("Content mismatch at offset %" PRIu64 "!\n", p + at);
            return CMP_EXIT_DIFFERENT;
        }
        p += len;
        img_progress_update(pg, p, total);
    }
    img_progress_end(pg);
    if (!quiet)
        printf("Images are identical.\n");
    return IMG_EXIT_OK;
fail:
    img_error("%s", err.msg);
    return CMP_EXIT_ERROR;
}

int img_compare_main(int argc, char **argv)
{
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'}, {0}};
    const char *f1 = NULL, *f2 = NULL;
    bool strict = false, quiet = false;
    struct img_progress pg = {.last = -1};
    int c;
    while ((c = getopt_long(argc, argv, "hf:F:spqT:U", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            img_print_command_help("compare", compare_help);
            return IMG_EXIT_OK;
        case 'f':
            f1 = optarg;
            break;
        case 'F':
            f2 = optarg;
            break;
        case 's':
            strict = true;
            break;
        case 'p':
            pg.enabled = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'T':
        case 'U':
            break;
        default:
            img_usage_error("compare", "invalid option");
            return CMP_EXIT_ERROR;
        }
    }
    if (argc - optind != 2) {
        img_usage_error("compare", "Expecting two image file names");
        return CMP_EXIT_ERROR;
    }
    pg.enabled &= !quiet;
    struct block_dev *x, *y;
    struct img_open_args a1 = {.format = f1, .read_only = true};
    struct img_open_args a2 = {.format = f2, .read_only = true};
    if (img_open(&x, argv[optind], &a1) < 0)
        return CMP_EXIT_ERROR;
    if (img_open(&y, argv[optind + 1], &a2) < 0) {
        block_close(x);
        return CMP_EXIT_ERROR;
    }
    int rc;
    if (x->size != y->size && strict) {
        if (!quiet)
            printf("Strict mode: Image size mismatch!\n");
        rc = CMP_EXIT_DIFFERENT;
    } else {
        if (x->size != y->size && !quiet)
            printf("Warning: Image size mismatch!\n");
        rc = compare_images(x, y, strict, quiet, &pg);
    }
    block_close(y);
    block_close(x);
    return rc;
}
