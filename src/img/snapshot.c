/* wisp-img snapshot: lists, creates, applies and deletes qcow2 internal snapshots. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/parse.h"
#include "img/img.h"

static const char snapshot_help[] = "Manages the internal snapshots of a qcow2 image.\n"
                                    "\n"
                                    "  -l              list the snapshots (default)\n"
                                    "  -c snapshot     create a snapshot of the current state\n"
                                    "  -a snapshot     revert the disk to the snapshot\n"
                                    "  -d snapshot     delete the snapshot\n"
                                    "  -f fmt          image format\n"
                                    "  -q              quiet\n";

enum snap_action { SNAP_LIST, SNAP_CREATE, SNAP_APPLY, SNAP_DELETE };

static void print_list(const struct qcow2_snapshot_info *l, unsigned n)
{
    printf("Snapshot list:\n%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE",
           "VM CLOCK", "ICOUNT");
    for (unsigned i = 0; i < n; i++) {
        char date[32], vms[32];
        time_t t = l[i].date_sec;
        struct tm tm;
        localtime_r(&t, &tm);
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
        format_size(l[i].vm_state_size, vms, sizeof(vms));
        uint64_t ms = l[i].vm_clock_nsec / 1000000;
        printf("%-9s %-16s %8s %19s %02u:%02u:%02u.%03u %10s\n", l[i].id, l[i].name, vms, date,
               (unsigned)(ms / 3600000), (unsigned)(ms / 60000 % 60), (unsigned)(ms / 1000 % 60),
               (unsigned)(ms % 1000), "");
    }
}

static int snapshot_do(struct block_dev *bs, enum snap_action act, const char *name)
{
    struct wisp_err err = {0};
    int r = 0;
    switch (act) {
    case SNAP_LIST: {
        struct qcow2_snapshot_info *l = NULL;
        unsigned n = 0;
        r = qcow2_snapshot_list(bs, &l, &n, &err);
        if (r == 0 && n)
            print_list(l, n);
        free(l);
        break;
    }
    case SNAP_CREATE:
        r = qcow2_snapshot_create(bs, name, &err);
        break;
    case SNAP_APPLY:
        r = qcow2_snapshot_apply(bs, name, &err);
        break;
    case SNAP_DELETE:
        r = qcow2_snapshot_delete(bs, name, &err);
        break;
    }
    if (r == 0 && act != SNAP_LIST) /* what is still cached (frees of old tables) */
        r = block_flush(bs, &err);
    if (r < 0) {
        static const char *const what[] = {"list snapshots", "create snapshot", "apply snapshot",
                                           "delete snapshot"};
        img_error("Could not %s '%s': %s", what[act], name ? name : "", err.msg);
        return IMG_EXIT_ERROR;
    }
    return IMG_EXIT_OK;
}

int img_snapshot_main(int argc, char **argv)
{
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'}, {0}};
    const char *fmt = NULL, *name = NULL;
    enum snap_action act = SNAP_LIST;
    int nact = 0, c;
    while ((c = getopt_long(argc, argv, "hf:lc:a:d:qU", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            return img_print_command_help("snapshot", snapshot_help);
        case 'f':
            fmt = optarg;
            break;
        case 'l':
            act = SNAP_LIST, nact++;
            break;
        case 'c':
            act = SNAP_CREATE, name = optarg, nact++;
            break;
        case 'a':
            act = SNAP_APPLY, name = optarg, nact++;
            break;
        case 'd':
            act = SNAP_DELETE, name = optarg, nact++;
            break;
        case 'q':
        case 'U':
            break;
        default:
            return img_usage_error("snapshot", "invalid option");
        }
    }
    if (nact > 1)
        return img_usage_error("snapshot", "Cannot mix '-l', '-a', '-c', '-d'");
    if (optind != argc - 1)
        return img_usage_error("snapshot", "Expecting one image file name");
    struct block_dev *bs;
    struct img_open_args a = {.format = fmt,
                              .read_only = act == SNAP_LIST,
                              .no_backing = true,
                              .preflight = act != SNAP_LIST};
    if (img_open(&bs, argv[optind], &a) < 0)
        return IMG_EXIT_ERROR;
    int rc = IMG_EXIT_ERROR;
    if (bs->drv == &qcow2_driver)
        rc = snapshot_do(bs, act, name);
    else
        img_error("%s: format '%s' does not support internal snapshots", bs->filename,
                  bs->drv->name);
    block_close(bs);
    return rc;
}
