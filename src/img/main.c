/* wisp-img: the image tool (create, info, check, convert, resize, commit, rebase, map, compare,
 * snapshot, bench, measure), with qemu-img's command line. One file per subcommand. */
#include <stdio.h>
#include <string.h>

#include "common/cleanup.h"
#include "img/img.h"
#include "wisp-config.h"

static const struct img_command commands[] = {
    {"bench", img_bench_main,
     "bench [-c count] [-d depth] [-f fmt] [-i aio] [-n] [-o offset] [--pattern=N] [-q] "
     "[-s size] [-S step] [-t cache] [-w] [--iops-limit=N] [--bps-limit=N] filename"},
    {"check", img_check_main,
     "check [--output=human|json] [--json] [-f fmt] [-r leaks|all] [-q] filename"},
    {"commit", img_commit_main, "commit [-f fmt] [-t cache] [-b base] [-d] [-p] [-q] filename"},
    {"compare", img_compare_main, "compare [-f fmt] [-F fmt] [-p] [-q] [-s] filename1 filename2"},
    {"convert", img_convert_main,
     "convert [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] "
     "[-B backing_file [-F backing_fmt]] [-o options] [-S sparse_size] [-m num_coroutines] "
     "[-W] filename output_filename"},
    {"create", img_create_main,
     "create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename "
     "[size]"},
    {"info", img_info_main,
     "info [-f fmt] [--output=human|json] [--json] [--backing-chain] [-U] filename"},
    {"map", img_map_main, "map [-f fmt] [--output=human|json] [--json] filename"},
    {"measure", img_measure_main,
     "measure [--output=human|json] [--json] [-O output_fmt] [-o options] [--size N | [-f fmt] "
     "filename]"},
    {"rebase", img_rebase_main,
     "rebase [-f fmt] [-t cache] [-p] [-q] [-u] -b backing_file [-F backing_fmt] filename"},
    {"resize", img_resize_main, "resize [-f fmt] [-q] [--shrink] [--force] filename [+ | -]size"},
    {"snapshot", img_snapshot_main,
     "snapshot [-f fmt] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename"},
};

static void usage(FILE *out)
{
    fprintf(out,
            "wisp-img version " WISP_VERSION "\n"
            "usage: wisp-img [standard options] command [command options]\n"
            "wisp disk image utility (raw and qcow2), compatible with qemu-img's command line\n"
            "\n"
            "    '-h', '--help'       display this help and exit\n"
            "    '-V', '--version'    output version information and exit\n"
            "\n"
            "Command syntax:\n");
    for (unsigned i = 0; i < ARRAY_SIZE(commands); i++)
        fprintf(out, "  %s\n", commands[i].synopsis);
    fprintf(out,
            "\n"
            "Command parameters:\n"
            "  'filename' is a disk image filename\n"
            "  'fmt' is the disk image format (raw, qcow2); it is guessed when omitted\n"
            "  'cache' is the cache mode: writeback (default), writethrough, none, directsync,\n"
            "    unsafe (default for convert); see docs/block.md for flush semantics\n"
            "  'aio' is the I/O engine: sync, threads (default), io_uring ('native' = io_uring)\n"
            "  'size' is a size in bytes; k/K, M, G, T, P and E suffixes are powers of 1024\n"
            "  'output_filename' is the destination disk image filename\n"
            "  'options' is a comma separated list of format options (-o help lists them)\n"
            "  '-p' shows a progress bar on stderr, '-q' keeps quiet\n"
            "\n"
            "Each command has its own help: wisp-img <command> --help\n"
            "Exit status: 0 success, 1 error; check: 2 corruptions, 3 leaks, 63 unsupported;\n"
            "compare: 1 images differ, 2 error.\n");
}

int img_print_command_help(const char *name, const char *details)
{
    for (unsigned i = 0; i < ARRAY_SIZE(commands); i++)
        if (!strcmp(commands[i].name, name))
            printf("usage: wisp-img %s\n\n%s", commands[i].synopsis, details);
    return IMG_EXIT_OK;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return img_usage_error(NULL, "Not enough arguments");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return IMG_EXIT_OK;
    }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        printf("wisp-img version " WISP_VERSION "\n");
        return IMG_EXIT_OK;
    }
    for (unsigned i = 0; i < ARRAY_SIZE(commands); i++)
        if (!strcmp(commands[i].name, cmd))
            return commands[i].run(argc - 1, argv + 1);
    return img_usage_error(NULL, "Command not found: %s", cmd);
}
