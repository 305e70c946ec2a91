/* wisp-oci create: checks the bundle, makes the state directory, starts the monitor (which
 * boots the VM and creates the container's process in it, not started), writes the pid file. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent/types.h"
#include "common/cleanup.h"
#include "common/io.h"
#include "host.h"
#include "monitor.h"
#include "oci.h"
#include "spec.h"
#include "state.h"

/* runc writes the pid file atomically: a temporary file beside it, renamed. */
int oci_write_pid_file(const char *path, pid_t pid, struct wisp_err *err)
{
    char tmp[PATH_MAX], text[32];
    cleanup_close int fd = -1;
    int n = snprintf(text, sizeof(text), "%d", (int)pid);

    if (snprintf(tmp, sizeof(tmp), "%s.wisp-tmp", path) >= (int)sizeof(tmp))
        return wisp_err_set(err, ENAMETOOLONG, "--pid-file %s: too long", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || wisp_write_all(fd, text, (size_t)n) < 0)
        return wisp_err_sys(err, errno, "--pid-file %s", tmp);
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return wisp_err_sys(err, e, "--pid-file %s", path);
    }
    return 0;
}

/* Sends the pty's master over the console socket as runc does (SCM_RIGHTS, the name as data). */
int oci_send_console(const char *socket_path, int master, struct wisp_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    cleanup_close int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    char name[] = "/dev/ptmx";
    char ctl[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec iov = {name, sizeof(name) - 1};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

    if (strlen(socket_path) >= sizeof(sa.sun_path))
        return wisp_err_set(err, ENAMETOOLONG, "--console-socket %s: too long", socket_path);
    strcpy(sa.sun_path, socket_path);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return wisp_err_sys(err, errno, "--console-socket %s", socket_path);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &master, sizeof(int));
    if (sendmsg(s, &mh, MSG_NOSIGNAL) < 0)
        return wisp_err_sys(err, errno, "--console-socket %s: sendmsg", socket_path);
    return 0;
}

/* A pty pair: the master for the engine, the slave for the monitor (raw: the guest's pty does
 * the line discipline). */
int oci_open_pty(int *master, int *slave, struct wisp_err *err)
{
    cleanup_close int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    char *name;
    struct termios t;
    int s;

    if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0 || !(name = ptsname(m)))
        return wisp_err_sys(err, errno, "cannot allocate a pty");
    s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0)
        return wisp_err_sys(err, errno, "open %s", name);
    if (tcgetattr(s, &t) == 0) {
        cfmakeraw(&t);
        tcsetattr(s, TCSANOW, &t);
    }
    *master = steal_fd(&m);
    *slave = s;
    return 0;
}

static int wait_ready(int fd, pid_t child, char *msg, size_t len)
{
    size_t got = 0;

    while (got < len - 1) {
        ssize_t n = read(fd, msg + got, len - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    msg[got] = 0;
    if (strncmp(msg, "ok", 2) == 0)
        return 0;
    if (got == 0) {
        int status;
        waitpid(child, &status, 0);
        snprintf(msg, len, "the monitor ended during the create (status %d)", status);
    }
    return -1;
}

static json_t *new_state(const char *id, const char *bundle, struct oci_spec *spec, pid_t pid,
                         json_t *info)
{
    char created[48];
    bool alive;
    struct passwd *pw = getpwuid(geteuid());
    json_t *ann = json_object_get(spec->config, "annotations");
    json_t *s;

    oci_time_now(created, sizeof(created));
    s = json_pack("{s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:s}", "ociVersion", OCI_SPEC_VERSION, "id",
                  id, "pid", (json_int_t)pid, "status", "created", "bundle", bundle, "rootfs",
                  spec->rootfs, "created", created, "owner", pw ? pw->pw_name : "");
    json_object_set_new(s, "annotations", json_is_object(ann) ? json_copy(ann) : json_object());
    json_object_set_new(info, "monitor_start_time",
                        json_integer((json_int_t)oci_proc_start_time(pid, &alive)));
    json_object_set_new(info, "terminal", json_boolean(spec->terminal));
    if (spec->cgroups_path)
        json_object_set_new(info, "cgroups_path", json_string(spec->cgroups_path));
    if (spec->netns_path)
        json_object_set_new(info, "netns", json_string(spec->netns_path));
    json_object_set(s, "wisp", info);
    return s;
}

int cmd_create(int argc, char **argv)
{
    const char *bundle = ".", *pid_file = NULL, *console = NULL, *preserve = NULL;
    bool no_pivot = false, no_keyring = false, detach = false;
    const struct oci_opt opts[] = {
        {"bundle", 'b', true, &bundle, NULL},
        {"pid-file", 0, true, &pid_file, NULL},
        {"console-socket", 0, true, &console, NULL},
        {"no-pivot", 0, false, NULL, &no_pivot},
        {"no-new-keyring", 0, false, NULL, &no_keyring},
        {"preserve-fds", 0, true, &preserve, NULL},
        {"detach", 'd', false, NULL, &detach},
        {NULL, 0, false, NULL, NULL},
    };
    int i = oci_parse_opts("create", argc, argv, 1, opts), master = -1, slave = -1, rp[2];
    char real_bundle[PATH_MAX], msg[8192];
    struct wisp_err err = {0};
    struct oci_container c;
    struct oci_spec spec;
    struct oci_guest guest;
    const char *id;
    json_t *info;
    pid_t child;
    int r;

    if (i < 0)
        return OCI_EXIT_USAGE;
    if (argc - i != 1)
        return oci_usage("create", "\"create\" requires exactly 1 argument(s)");
    id = argv[i];
    if (oci_g.systemd_cgroup)
        return oci_fail(OCI_EXIT_FAIL,
                        "wisp-oci create failed: --systemd-cgroup is not "
                        "supported: wisp-oci manages cgroupfs cgroups only (containerd: "
                        "SystemdCgroup = false; podman: --cgroup-manager cgroupfs)");
    if (!oci_valid_id(id))
        return oci_fail(OCI_EXIT_FAIL, "wisp-oci create failed: invalid container ID format");
    if (strlen(id) > WISP_AGENT_ID_MAX)
        return oci_fail(OCI_EXIT_FAIL,
                        "wisp-oci create failed: container ID longer than %d "
                        "characters (the guest agent's limit)",
                        WISP_AGENT_ID_MAX);
    if (!realpath(bundle, real_bundle))
        return oci_fail(OCI_EXIT_FAIL, "wisp-oci create failed: chdir %s: %s", bundle,
                        strerror(errno));
    if (oci_spec_load(real_bundle, &spec, &err) < 0) {
        oci_spec_free(&spec);
        return oci_fail(OCI_EXIT_FAIL, "wisp-oci create failed: %s", err.msg);
    }
    if (spec.terminal && !console) {
        oci_spec_free(&spec);
        return oci_fail(OCI_EXIT_FAIL, "wisp-oci create failed: cannot allocate tty if "
                                       "wisp-oci will detach without setting console socket");
    }
    if (!spec.terminal && console) {
        oci_spec_free(&spec);
        return oci_fail(OCI_EXIT_FAIL, "wisp-oci create failed: cannot use console socket if "
                                       "wisp-oci will not detach or allocate tty");
    }
    r = oci_container_new(id, &c, &err);
    if (r < 0) {
        oci_spec_free(&spec);
        if (r == -EEXIST)
            return oci_fail(OCI_EXIT_FAIL,
                            "wisp-oci create failed: container with given ID already exists");
        return oci_fail(OCI_EXIT_FAIL, "wisp-oci create failed: %s", err.msg);
    }
    if (oci_guest_find(&guest, &err) < 0) {
        struct wisp_err rerr;
        oci_container_remove(&c, &rerr);
        oci_spec_free(&spec);
        return oci_fail(OCI_EXIT_FAIL, "wisp-oci create failed: %s", err.msg);
    }
    if (console &&
        (oci_open_pty(&master, &slave, &err) < 0 || oci_send_console(console, master, &err) < 0)) {
        oci_container_remove(&c, &err);
        oci_spec_free(&spec);
        return oci_fail(OCI_EXIT_FAIL, "wisp-oci create failed: %s", err.msg);
    }
    if (master >= 0)
        close(master);
    if (pipe2(rp, O_CLOEXEC) < 0)
        return oci_fail(OCI_EXIT_FAIL, "wisp-oci create failed: pipe: %s", strerror(errno));
    info = json_object();
    child = fork();
    if (child < 0)
        return oci_fail(OCI_EXIT_FAIL, "wisp-oci create failed: fork: %s", strerror(errno));
    if (child == 0) {
        struct oci_monitor_args a = {&c, &spec, &guest, real_bundle, rp[1], slave, info};
        close(rp[0]);
        close(c.lockfd); /* the lock stays with create until the state is written */
        c.lockfd = -1;
        oci_monitor_main(&a);
    }
    close(rp[1]);
    if (slave >= 0)
        close(slave);
    if (wait_ready(rp[0], child, msg, sizeof(msg)) < 0) {
        close(rp[0]);
        kill(child, SIGKILL);
        oci_container_remove(&c, &err);
        oci_spec_free(&spec);
        json_decref(info);
        msg[strcspn(msg, "\n")] = 0;
        return oci_fail(OCI_EXIT_FAIL, "wisp-oci create failed: %s",
                        strncmp(msg, "error ", 6) == 0 ? msg + 6 : msg);
    }
    close(rp[0]);
    json_decref(info);
    info = json_loads(msg + 3, 0, NULL);
    if (!json_is_object(info)) {
        json_decref(info);
        info = json_object();
    }
    c.state = new_state(id, real_bundle, &spec, child, info);
    json_decref(info);
    r = oci_container_save(&c, &err);
    if (r == 0 && pid_file)
        r = oci_write_pid_file(pid_file, child, &err);
    oci_spec_free(&spec);
    if (r < 0) {
        kill(child, SIGKILL);
        oci_container_remove(&c, &err);
        return oci_fail(OCI_EXIT_FAIL, "wisp-oci create failed: %s", err.msg);
    }
    oci_container_close(&c);
    return 0;
}
