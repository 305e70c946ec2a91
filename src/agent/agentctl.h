/* wisp-agentctl's option parsing (agentctl_opts.c) and its commands (agentctl.c). */
#ifndef WISP_AGENT_AGENTCTL_H
#define WISP_AGENT_AGENTCTL_H

#include <stdbool.h>

#include "agent/client.h"

#define CTL_LIST_MAX 64

/* What the process, container and network options of the command line build. */
struct ctl_spec {
    const char *exec_id;
    struct wisp_agent_process proc;
    const char *env[WISP_AGENT_ARGS_MAX];
    uint32_t gids[WISP_AGENT_GROUPS_MAX];
    struct wisp_agent_rlimit rlimits[WISP_AGENT_RLIMITS_MAX];
    char rlimit_names[WISP_AGENT_RLIMITS_MAX][32];
    bool forward_stdin;

    struct wisp_agent_container ctr;
    struct wisp_agent_mount mounts[CTL_LIST_MAX];
    char *mount_strs[CTL_LIST_MAX];
    const char *mount_opts[CTL_LIST_MAX][WISP_AGENT_OPTIONS_MAX];
    struct wisp_agent_file files[WISP_AGENT_FILES_MAX];

    struct wisp_agent_network net;
    struct wisp_agent_iface ifaces[WISP_AGENT_IFACES_MAX];
    const char *addrs[WISP_AGENT_IFACES_MAX][WISP_AGENT_ADDRS_MAX];
    struct wisp_agent_route routes[WISP_AGENT_ROUTES_MAX];
    char *route_strs[WISP_AGENT_ROUTES_MAX];

    bool all;
    unsigned grace_ms;
};

/* Parses the options of command `cmd` from argv (getopt-style, from index 1); the words
 * after them stay in argv[*next...]. Returns 0, or -1 after printing a usage error. */
int ctl_parse(const char *cmd, int argc, char **argv, struct ctl_spec *s, int *next);
void ctl_spec_free(struct ctl_spec *s);

#endif
