/* The guest agent's data types, shared by the host's client library (agent/client.h), the
 * protocol codec (agent/proto.h) and the guest agent (guest/agent/): docs/agent-protocol.md. */
#ifndef WISP_AGENT_TYPES_H
#define WISP_AGENT_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The vsock port the guest agent listens on (a host program writes "CONNECT 1024\n"). */
#define WISP_AGENT_PORT 1024
/* The protocol version this tree speaks (HELLO). New optional fields keep the version; a
 * change an older peer would misread raises it. */
#define WISP_AGENT_VERSION 1

/* Bounds every message is checked against, on both sides (docs/agent-protocol.md, "Limits"). */
#define WISP_AGENT_ID_MAX      64     /* container and exec ids, without the NUL */
#define WISP_AGENT_PATH_MAX    4096   /* paths, without the NUL */
#define WISP_AGENT_ARG_MAX     131072 /* one argument or environment entry (MAX_ARG_STRLEN) */
#define WISP_AGENT_ARGS_MAX    1024   /* arguments, and environment entries, per process */
#define WISP_AGENT_GROUPS_MAX  64     /* additional gids */
#define WISP_AGENT_RLIMITS_MAX 16
#define WISP_AGENT_MOUNTS_MAX  64
#define WISP_AGENT_OPTIONS_MAX 32 /* options per mount */
#define WISP_AGENT_FILES_MAX   16
#define WISP_AGENT_FILE_MAX    65536 /* bytes of one file's contents */
#define WISP_AGENT_IFACES_MAX  8
#define WISP_AGENT_ADDRS_MAX   8 /* addresses per interface */
#define WISP_AGENT_ROUTES_MAX  32
#define WISP_AGENT_PROCS_MAX   2048 /* entries of a PS answer */
#define WISP_AGENT_SHORT_MAX   255  /* names, mount types and options, states, messages */
#define WISP_AGENT_CMD_MAX     1024 /* a PS entry's command line */

/* What a process's stdin, stdout or stderr is when it has no terminal. */
enum wisp_agent_stdio {
    WISP_AGENT_STDIO_NULL = 0, /* /dev/null */
    WISP_AGENT_STDIO_PIPE = 1, /* a pipe the host reaches by attaching the stream */
};

/* The streams a host program can attach to (one vsock connection each). */
enum wisp_agent_stream {
    WISP_AGENT_STREAM_STDIN = 0,
    WISP_AGENT_STREAM_STDOUT = 1,
    WISP_AGENT_STREAM_STDERR = 2,
    WISP_AGENT_STREAM_PTY = 3, /* both ways: the terminal's master */
};

struct wisp_agent_rlimit {
    const char *type; /* "RLIMIT_NOFILE", as in the OCI spec */
    uint64_t soft, hard;
};

/* A process as the OCI runtime spec's `process` object describes it. Strings are
 * NUL-terminated; arrays are (pointer, count). */
struct wisp_agent_process {
    const char **args; /* args[0] is looked up in PATH (from env) unless it holds a '/' */
    size_t nargs;
    const char **env; /* "NAME=value" */
    size_t nenv;
    const char *cwd; /* absolute, inside the container's root; created when missing */
    uint32_t uid, gid;
    const uint32_t *additional_gids;
    size_t ngids;
    bool has_umask;
    uint32_t umask;
    const struct wisp_agent_rlimit *rlimits;
    size_t nrlimits;
    bool no_new_privileges;
    bool terminal;       /* a pty: stdin, stdout and stderr are its slave */
    uint16_t rows, cols; /* the terminal's first size (0: leave the kernel's) */
    uint32_t stdio[3];   /* enum wisp_agent_stdio, when there is no terminal */
};

/* One entry of the OCI spec's `mounts`, with the destination inside the container's root. */
struct wisp_agent_mount {
    const char *type;        /* "proc", "tmpfs", "bind", "9p" (source = the tag), ... */
    const char *source;      /* a bind mount's source is a path in the guest */
    const char *destination; /* absolute, resolved inside the container's root */
    const char **options;    /* "nosuid", "ro", "rbind", "mode=755", ... */
    size_t noptions;
};

/* A file the agent writes (on a tmpfs of its own) and binds over `path` in the container:
 * /etc/hosts, /etc/resolv.conf, /etc/hostname as engines supply them. */
struct wisp_agent_file {
    const char *path; /* absolute, inside the container's root */
    const void *data;
    size_t len;
    uint32_t mode;
};

struct wisp_agent_container {
    const char *id;
    const char *rootfs_tag;  /* a virtio-9p tag to mount as the root, or NULL */
    const char *rootfs_path; /* else a directory already in the guest */
    bool rootfs_readonly;
    const char *hostname; /* NULL: unchanged */
    const struct wisp_agent_mount *mounts;
    size_t nmounts;
    const struct wisp_agent_file *files;
    size_t nfiles;
    bool default_devices; /* runc's default /dev nodes and links in the container's /dev */
    /* WISP_AGENT_SEED_MIN..MAX bytes from the host's RNG that the agent credits to the guest's
     * kernel RNG and reseeds it with (RNDADDENTROPY, RNDRESEEDCRNG) before anything else: the
     * VMs restored from one template start with the same RNG state. NULL/0: none. */
    const void *seed;
    size_t seed_len;
};

#define WISP_AGENT_SEED_MIN 16
#define WISP_AGENT_SEED_MAX 512

struct wisp_agent_iface {
    const char *name;
    uint32_t mtu;           /* 0: unchanged */
    const char **addresses; /* "198.51.100.2/24" */
    size_t naddresses;
    bool up;
};

struct wisp_agent_route {
    const char *destination; /* "0.0.0.0/0", "10.1.0.0/16" */
    const char *gateway;     /* NULL: on-link */
    const char *device;      /* NULL: the kernel picks */
};

struct wisp_agent_network {
    const struct wisp_agent_iface *ifaces;
    size_t nifaces;
    const struct wisp_agent_route *routes;
    size_t nroutes;
    const char *resolv_conf; /* the guest's /etc/resolv.conf, or NULL */
};

/* One process of a container, as PS lists it. */
struct wisp_agent_ps_entry {
    uint32_t pid, ppid, uid;
    const char *state;   /* "R", "S", ... as /proc/PID/stat has it */
    const char *cmd;     /* the command line, arguments joined by spaces */
    const char *exec_id; /* the process the host created ("" = the container's own), or NULL */
};

#endif
