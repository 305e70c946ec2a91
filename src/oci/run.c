/* Running small host programs (ip, tc) for the VM's plumbing, with their message kept. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "host.h"

static int run_common(const char *const *argv, char **out, struct wisp_err *err)
{
    int outp[2], errp[2], status;
    char ebuf[512] = "", *obuf = NULL;
    size_t elen = 0, olen = 0, ocap = 0;
    pid_t pid;

    if (pipe2(outp, O_CLOEXEC) < 0)
        return wisp_err_sys(err, errno, "pipe");
    if (pipe2(errp, O_CLOEXEC) < 0) {
        close(outp[0]);
        close(outp[1]);
        return wisp_err_sys(err, errno, "pipe");
    }
    pid = fork();
    if (pid < 0) {
        int e = errno;
        close(outp[0]), close(outp[1]), close(errp[0]), close(errp[1]);
        return wisp_err_sys(err, e, "fork for %s", argv[0]);
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(outp[1], 1);
        dup2(errp[1], 2);
        execvp(argv[0], (char *const *)argv);
        dprintf(2, "cannot run %s: %s", argv[0], strerror(errno));
        _exit(127);
    }
    close(outp[1]);
    close(errp[1]);
    struct pollfd pf[2] = {{outp[0], POLLIN, 0}, {errp[0], POLLIN, 0}};
    int open_fds = 2;
    while (open_fds > 0) {
        if (poll(pf, 2, -1) < 0 && errno != EINTR)
            break;
        for (int k = 0; k < 2; k++) {
            char tmp[4096];
            ssize_t n;
            if (pf[k].fd < 0 || !(pf[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            n = read(pf[k].fd, tmp, sizeof(tmp));
            if (n <= 0) {
                close(pf[k].fd);
                pf[k].fd = -1;
                open_fds--;
                continue;
            }
            if (k == 1) {
                size_t c =
                    (size_t)n < sizeof(ebuf) - 1 - elen ? (size_t)n : sizeof(ebuf) - 1 - elen;
                memcpy(ebuf + elen, tmp, c);
                elen += c;
                ebuf[elen] = 0;
            } else if (out) {
                if (olen + (size_t)n + 1 > ocap) {
                    char *nb = realloc(obuf, ocap = (olen + (size_t)n + 1) * 2);
                    if (!nb)
                        continue;
                    obuf = nb;
                }
                memcpy(obuf + olen, tmp, (size_t)n);
                olen += (size_t)n;
                obuf[olen] = 0;
            }
        }
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    while (elen > 0 && (ebuf[elen - 1] == '\n' || ebuf[elen - 1] == ' '))
        ebuf[--elen] = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        free(obuf);
        char cmd[256] = "";
        for (int i = 0; argv[i] && strlen(cmd) < 200; i++)
            snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), "%s%s", i ? " " : "", argv[i]);
        return wisp_err_set(err, EIO, "'%s' failed: %s", cmd, ebuf[0] ? ebuf : "non-zero status");
    }
    if (out)
        *out = obuf ? obuf : strdup("");
    return 0;
}

int oci_run(const char *const *argv, struct wisp_err *err)
{
    return run_common(argv, NULL, err);
}

int oci_run_output(const char *const *argv, char **out, struct wisp_err *err)
{
    return run_common(argv, out, err);
}
