/* wisp-oci --help and each command's help (docs/oci.md is the long form). */
#include <stdio.h>
#include <string.h>

#include "oci.h"

static const char main_help[] =
    "Usage: wisp-oci [GLOBAL OPTIONS] COMMAND [OPTIONS] [ARGS]\n"
    "\n"
    "A runc-compatible OCI runtime that runs each container in its own wisp microVM: an\n"
    "engine that can call runc (containerd's runc shim, podman's conmon) can call wisp-oci.\n"
    "The container's rootfs is shared with the VM over virtio-9p, its process is created\n"
    "by a guest agent over vsock, and the pid the engine gets is a host process (the\n"
    "container's monitor) that lives as long as the container and exits with its status.\n"
    "\n"
    "Commands:\n"
    "  create [--bundle B] [--pid-file F] [--console-socket S] [--no-pivot]\n"
    "         [--no-new-keyring] [--preserve-fds N] ID\n"
    "                     boot the VM and create the container's process (not started)\n"
    "  start ID           run the created container's process\n"
    "  state ID           print the OCI state (JSON) of a container\n"
    "  list [--format table|json] [-q]\n"
    "                     the containers under --root\n"
    "  kill [--all] ID [SIGNAL]\n"
    "                     signal the container's process (default SIGTERM), or every process\n"
    "  delete [--force] ID\n"
    "                     remove a stopped (or created) container; --force kills a running one\n"
    "  exec [--process F | COMMAND...] [--console-socket S] [--detach] [--pid-file F]\n"
    "       [--tty] [--cwd DIR] ID\n"
    "                     run another process in the container\n"
    "  ps [--format table|json] ID\n"
    "                     the container's processes (json: the host pids of its monitors)\n"
    "  pause ID, resume ID\n"
    "                     pause or resume the container's whole VM\n"
    "  update --resources F ID\n"
    "                     new limits for the VM's cgroups (F: a LinuxResources JSON, - = stdin)\n"
    "  features           what this runtime supports (JSON)\n"
    "\n"
    "Global options:\n"
    "  --root DIR         state directories (default " OCI_DEFAULT_ROOT ")\n"
    "  --log FILE         append messages to FILE (default stderr)\n"
    "  --log-format text|json\n"
    "                     logrus text lines or JSON objects, as runc's\n"
    "  --debug            log debug messages too\n"
    "  --systemd-cgroup   refused by create: wisp-oci manages cgroupfs cgroups only\n"
    "  --rootless false|auto\n"
    "                     accepted for go-runc; wisp-oci runs as root\n"
    "  -v, --version      print the version\n"
    "  -h, --help         this text; COMMAND --help for a command's\n"
    "\n"
    "The guest: /etc/wisp/oci.json ($WISP_OCI_CONFIG) names the kernel, the agent's\n"
    "initramfs, default memory and vCPUs; without it wisp-oci takes the kit's kernel and\n"
    "agent initramfs from its build tree or install prefix. Each VMM runs jailed, as\n"
    "wisp-jailer jails it (a chroot, namespaces, uid 10200, seccomp, only the 9p server's\n"
    "file capabilities), unless oci.json says \"jail\": false. See docs/oci.md and\n"
    "docs/security.md.\n"
    "\n"
    "Exit status: 0 on success; 1 when a command fails (runc's status: an unknown container,\n"
    "a call in the wrong state, a bad config.json); 2 for a usage error; exec without\n"
    "--detach exits with the process's status (255 when it could not run).\n";

static const struct {
    const char *cmd, *text;
} cmd_help[] = {
    {"create", "Usage: wisp-oci create [--bundle B] [--pid-file F] [--console-socket S] ID\n\n"
               "Reads B/config.json (B defaults to the current directory), boots the container's\n"
               "VM and creates its process in it, stopped before its program runs ('start' runs\n"
               "it). F gets the pid of the container's monitor. With process.terminal the pty's\n"
               "master is sent over the unix socket S (SCM_RIGHTS, as runc). --no-pivot and\n"
               "--no-new-keyring are accepted (nothing to do in a VM); --preserve-fds N is\n"
               "accepted and the fds are not passed (a host fd cannot enter the VM).\n"},
    {"start", "Usage: wisp-oci start ID\n\nRuns the created container's program.\n"},
    {"state",
     "Usage: wisp-oci state ID\n\nPrints the OCI state: ociVersion, id, pid, status\n"
     "(created, running, paused, stopped), bundle, rootfs, created, owner, annotations.\n"},
    {"list", "Usage: wisp-oci list [--format table|json] [--quiet]\n"},
    {"kill", "Usage: wisp-oci kill [--all] ID [SIGNAL]\n\nSIGNAL is a name (TERM, SIGTERM) or a "
             "number; default SIGTERM.\n--all signals every process of the container.\n"},
    {"delete", "Usage: wisp-oci delete [--force] ID\n\nRemoves a stopped or created container "
               "(its VM, tap, cgroups, sockets and\nstate). --force kills a running one first "
               "and succeeds for an unknown ID.\n"},
    {"exec", "Usage: wisp-oci exec [OPTIONS] ID [COMMAND [ARG]...]\n\n"
             "  -p, --process F        the process (an OCI process JSON) instead of COMMAND\n"
             "  --console-socket S     send the pty's master to S (with a terminal)\n"
             "  -d, --detach           return once the process runs; --pid-file gets the pid\n"
             "                         of its monitor, which exits with its status\n"
             "  --pid-file F           where the pid goes\n"
             "  -t, --tty              a terminal (COMMAND form)\n"
             "  --cwd DIR              the working directory (COMMAND form)\n"},
    {"ps", "Usage: wisp-oci ps [--format table|json] ID\n\njson: the host pids of the "
           "container's monitors (what engines match);\ntable: the processes in the guest.\n"},
    {"pause", "Usage: wisp-oci pause ID\n\nPauses the container's VM (every vCPU).\n"},
    {"resume", "Usage: wisp-oci resume ID\n"},
    {"update", "Usage: wisp-oci update --resources F ID\n\nApplies memory.limit, cpu.quota, "
               "cpu.period, cpu.cpus to the VM's cgroups\n(the guest's memory and vCPUs are "
               "fixed at its boot).\n"},
    {"features", "Usage: wisp-oci features\n"},
};

void oci_print_help(const char *cmd)
{
    if (cmd)
        for (size_t i = 0; i < sizeof(cmd_help) / sizeof(cmd_help[0]); i++)
            if (strcmp(cmd_help[i].cmd, cmd) == 0) {
                fputs(cmd_help[i].text, stdout);
                return;
            }
    fputs(main_help, stdout);
}
