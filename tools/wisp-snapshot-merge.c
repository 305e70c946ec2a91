/*
 * Applies a diff snapshot's memory file on top of its base (docs/snapshot.md, "Diff
 * snapshots"): every page the diff's state file lists as written is copied from the diff's
 * memory file into the base memory file, at the same offset. Afterwards the base file is the
 * memory of the diff snapshot: load the diff's state file with it.
 *
 *   wisp-snapshot-merge DIFF_STATE DIFF_MEM BASE_MEM
 *
 * The pages come from the state file's list, not from the holes of the sparse file, so the
 * result does not depend on how the file system reports holes. Exits 0, or 1 with a message.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vmm/snapshot_int.h"

#define PAGE 4096u

static int copy_page(int from, int to, uint64_t off, struct wisp_err *err)
{
    uint8_t buf[PAGE];
    ssize_t n = pread(from, buf, PAGE, (off_t)off);
    if (n != PAGE)
        return wisp_err_sys(err, n < 0 ? errno : EIO, "reading the diff at offset 0x%llx",
                            (unsigned long long)off);
    if (pwrite(to, buf, PAGE, (off_t)off) != PAGE)
        return wisp_err_sys(err, errno, "writing the base at offset 0x%llx",
                            (unsigned long long)off);
    return 0;
}

static int merge(const char *state, const char *diff, const char *base, uint64_t *pages,
                 struct wisp_err *err)
{
    struct snapshot_image img;
    int r = snapshot_image_read(&img, state, err);
    if (r < 0)
        return r;
    const struct snapshot_section *s = snapshot_image_find(&img, SNAP_TAG_MEMORY, 0);
    struct snapshot_memory_info m;
    r = s ? snapshot_memory_read(s, &m, err)
          : wisp_err_set(err, EINVAL, "%s: no memory section", state);
    if (r == 0 && m.type != SNAPSHOT_DIFF)
        r = wisp_err_set(err, EINVAL, "%s: a full snapshot, not a diff", state);
    int from = r < 0 ? -1 : open(diff, O_RDONLY | O_CLOEXEC);
    int to = from < 0 ? -1 : open(base, O_WRONLY | O_CLOEXEC);
    struct stat st;
    if (r == 0 && (from < 0 || to < 0))
        r = wisp_err_sys(err, errno, "%s", from < 0 ? diff : base);
    if (r == 0 && (fstat(to, &st) < 0 || (uint64_t)st.st_size < m.total))
        r = wisp_err_set(err, EINVAL, "%s: smaller than the guest's %llu bytes of RAM", base,
                         (unsigned long long)m.total);
    for (unsigned i = 0; r == 0 && i < m.layout.nr_regions; i++) {
        uint64_t off = guest_mem_file_offset(&m.layout, i);
        for (uint64_t p = 0; r == 0 && p < m.layout.regions[i].size / PAGE; p++)
            if (snapshot_memory_page_dirty(&m, i, p)) {
                r = copy_page(from, to, off + p * PAGE, err);
                (*pages)++;
            }
    }
    if (r == 0 && fsync(to) < 0)
        r = wisp_err_sys(err, errno, "%s: fsync", base);
    if (from >= 0)
        close(from);
    if (to >= 0)
        close(to);
    snapshot_image_free(&img);
    return r;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: wisp-snapshot-merge DIFF_STATE DIFF_MEM BASE_MEM\n");
        return 2;
    }
    struct wisp_err err = {0};
    uint64_t pages = 0;
    if (merge(argv[1], argv[2], argv[3], &pages, &err) < 0) {
        fprintf(stderr, "wisp-snapshot-merge: %s\n", err.msg);
        return 1;
    }
    printf("%llu pages merged into %s\n", (unsigned long long)pages, argv[3]);
    return 0;
}
