/* Snapshot internals shared by src/vmm/snapshot*.c (docs/snapshot.md): the state file's
 * sections, the machine's configuration as bytes, the memory file, and the snapshot state a
 * struct vmm keeps. */
#ifndef WISP_VMM_SNAPSHOT_INT_H
#define WISP_VMM_SNAPSHOT_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/evloop.h"
#include "common/statebuf.h"
#include "kvm/guest_mem.h"
#include "vmm/config.h"
#include "vmm/snapshot.h"

struct machine;
struct vmm;

/* ---- the state file (snapshot_file.c) ---------------------------------------------------- */

#define SNAPSHOT_MAGIC        "WISPSNAP"
#define SNAPSHOT_VERSION      1           /* the format version this wisp writes and reads */
#define SNAPSHOT_MAX_FILE     (64u << 20) /* a state file is a few KiB per vCPU and device */
#define SNAPSHOT_HEADER_LEN   16          /* magic, version, number of sections */
#define SNAPSHOT_SECTION_HDR  16          /* tag, flags, length */
#define SNAPSHOT_MAX_SECTIONS 8192

#define SNAPSHOT_TAG(a, b, c, d)                                                                   \
    ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)
enum snapshot_tag {
    SNAP_TAG_CONFIG = SNAPSHOT_TAG('C', 'O', 'N', 'F'), /* the machine (snapshot_config.c) */
    SNAP_TAG_MEMORY = SNAPSHOT_TAG('M', 'E', 'M', 'Y'), /* RAM layout, type, dirty pages */
    SNAP_TAG_VM = SNAPSHOT_TAG('K', 'V', 'M', 'V'),     /* PIC, IOAPIC, PIT, clock */
    SNAP_TAG_VCPU = SNAPSHOT_TAG('V', 'C', 'P', 'U'),   /* one per vCPU */
    SNAP_TAG_DEVICE = SNAPSHOT_TAG('D', 'E', 'V', 'C'), /* one per device with state */
    SNAP_TAG_DEVOPT = SNAPSHOT_TAG('D', 'E', 'V', 'X'), /* the same, optional (docs/snapshot.md) */
    SNAP_TAG_INFO = SNAPSHOT_TAG('I', 'N', 'F', 'O'),   /* who wrote it, when (optional) */
};
/* A section a reader that does not know its tag may skip (a later version's extra). */
#define SNAP_SECTION_OPTIONAL 1u

struct snapshot_section {
    uint32_t tag, flags;
    const uint8_t *data;
    size_t len;
    size_t offset; /* where its data starts in the file, for messages */
};

/* A state file read into memory and checked: magic, version, checksum, section bounds. */
struct snapshot_image {
    uint8_t *buf; /* the whole file (owned) */
    size_t len;
    uint32_t version;
    struct snapshot_section *sections;
    unsigned nr_sections;
};

/* Takes buf (malloc'd, freed by snapshot_image_free, also on failure). The messages name
 * `path`: "PATH: not a wisp snapshot (bad magic)", "...: checksum mismatch", ... */
int snapshot_image_parse(struct snapshot_image *img, uint8_t *buf, size_t len, const char *path,
                         struct wisp_err *err);
/* Reads the file at path (a regular file of at most SNAPSHOT_MAX_FILE bytes) and parses it. */
int snapshot_image_read(struct snapshot_image *img, const char *path, struct wisp_err *err);
void snapshot_image_free(struct snapshot_image *img);
/* The nth section with `tag` (from 0), or NULL. */
const struct snapshot_section *snapshot_image_find(const struct snapshot_image *img, uint32_t tag,
                                                   unsigned nth);
unsigned snapshot_image_count(const struct snapshot_image *img, uint32_t tag);
/* "CONF", ... for messages (buf of 5 bytes; unprintable bytes as '?'). */
const char *snapshot_tag_name(uint32_t tag, char buf[5]);

/* Writing: snapshot_file_begin(), then per section begin ... puts ... end, then finish, which
 * fills in the count and appends the CRC-32 of everything before it. */
void snapshot_file_begin(struct state_writer *w);
size_t snapshot_section_begin(struct state_writer *w, uint32_t tag, uint32_t flags);
void snapshot_section_end(struct state_writer *w, size_t at);
void snapshot_file_finish(struct state_writer *w);

/* ---- the configuration (snapshot_config.c) ----------------------------------------------- */

/* The guest-visible machine: memory, vCPUs, the console device, rng, drives and NICs (each
 * NIC with the MAC its device shows). Host-side settings (console destination, --debug, ...)
 * are not part of it: a restored VM takes them from its own process. */
int snapshot_config_write(const struct vm_config *cfg, const struct machine *m,
                          struct state_writer *w, struct wisp_err *err);
/* Into cfg (initialised by the caller; strings become cfg's own). Checks every value as the
 * command line would (sizes, counts, enums); -EINVAL with err. */
int snapshot_config_read(struct vm_config *cfg, struct state_reader *r, struct wisp_err *err);

/* ---- memory (snapshot_mem.c) -------------------------------------------------------------- */

/* How a VM's RAM is backed: what a full snapshot must read (anonymous RAM skips pages never
 * touched; a file's or handler's pages must all be read). */
enum snapshot_ram_kind {
    SNAPSHOT_RAM_ANON,
    SNAPSHOT_RAM_FILE,
    SNAPSHOT_RAM_UFFD,
};

/* The memory section: the layout (checked on load against the configuration's size), the
 * type, and for a diff the pages it holds (one bitmap per region). */
void snapshot_memory_write(const struct guest_mem *mem, enum snapshot_type type,
                           uint64_t *const *dirty, struct state_writer *w);
struct snapshot_memory_info {
    uint64_t total; /* bytes of RAM */
    enum snapshot_type type;
    struct guest_mem layout;                      /* the regions (nothing mapped) */
    const uint8_t *bitmap[GUEST_MEM_MAX_REGIONS]; /* a diff's pages: into the section */
};
/* Reads and checks the section: the layout must be wisp's for its size. */
int snapshot_memory_read(const struct snapshot_section *s, struct snapshot_memory_info *m,
                         struct wisp_err *err);
/* Whether a diff holds page p (4 KiB, from the region's start) of region `region`. */
bool snapshot_memory_page_dirty(const struct snapshot_memory_info *m, unsigned region, uint64_t p);

/* A memory file being written by a worker thread (never the main loop): cancel stops it
 * between chunks of at most 1 MiB. */
struct snapshot_mem_job {
    const struct guest_mem *mem;
    enum snapshot_ram_kind kind;
    uint64_t *dirty[GUEST_MEM_MAX_REGIONS]; /* diff: the pages to write; NULL: full */
    int fd;                                 /* the (temporary) memory file */
    atomic_bool cancel;
    uint64_t bytes_written;
};
int snapshot_mem_write(struct snapshot_mem_job *job, struct wisp_err *err);

/* ---- the Uffd backend (snapshot_uffd.c) ---------------------------------------------------- */

/* Connects to the handler's socket (without blocking: a handler that does not accept is an
 * error) and returns the connected fd. */
int snapshot_uffd_connect(const char *path, struct wisp_err *err);
/* Anonymous RAM registered with a new userfaultfd, whose fd goes with the layout (Firecracker's
 * JSON array of regions) to the handler over `sock`. The VMM keeps its copy of the fd. */
int snapshot_uffd_map(struct guest_mem *mem, uint64_t bytes, int sock, int *uffd_out,
                      struct wisp_err *err);

/* ---- what a struct vmm keeps (snapshot.c) ------------------------------------------------- */

struct snapshot_create_job;

struct vmm_snapshot {
    /* a restored VM: its configuration (v->cfg points here) and what its RAM is */
    struct vm_config cfg;
    bool have_cfg;
    enum snapshot_ram_kind ram;
    int uffd, uffd_sock; /* Uffd backend: the fault fd and the handler's socket */
    struct evloop_source *uffd_src;
    struct snapshot_create_job *job; /* a create under way */
};

/* The vmm's snapshot state, created on first use. */
struct vmm_snapshot *vmm_snapshot_get(struct vmm *v, struct wisp_err *err);

#endif
