/* COM1's host side: stdout/stdin (a terminal in raw mode), a log file, or nothing. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "vmm/machine.h"

/* Raw input (bytes reach the guest as typed, no echo, no line editing), like QEMU's stdio
 * chardev: output post-processing (ONLCR) and ISIG stay on, so Ctrl-C still stops wisp-vmm. */
static int console_make_raw(struct console *con, struct wisp_err *err)
{
    if (tcgetattr(con->in_fd, &con->saved) < 0)
        return wisp_err_sys(err, errno, "stdin: tcgetattr");
    struct termios raw = con->saved;
    raw.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    raw.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | IEXTEN);
    raw.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
    raw.c_cflag |= CS8;
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    if (tcsetattr(con->in_fd, TCSANOW, &raw) < 0)
        return wisp_err_sys(err, errno, "stdin: tcsetattr");
    con->tty_raw = true;
    return 0;
}

int console_open(struct console *con, const struct vmm_args *args, struct wisp_err *err)
{
    memset(con, 0, sizeof(*con));
    con->out_fd = con->in_fd = -1;
    switch (args->serial) {
    case VMM_SERIAL_NONE:
        return 0;
    case VMM_SERIAL_FILE:
        con->out_fd = open(args->serial_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (con->out_fd < 0)
            return wisp_err_sys(err, errno, "--serial: %s", args->serial_path);
        con->out_owned = true;
        return 0;
    case VMM_SERIAL_STDIO:
        break;
    }
    con->out_fd = fcntl(STDOUT_FILENO, F_GETFL) >= 0 ? STDOUT_FILENO : -1;
    int fl = fcntl(STDIN_FILENO, F_GETFL);
    if (fl < 0 || (fl & O_ACCMODE) == O_WRONLY)
        return 0; /* no usable stdin: output only */
    if (!isatty(STDIN_FILENO)) {
        con->in_fd = STDIN_FILENO; /* a pipe or a file */
        return 0;
    }
    /* Our controlling terminal while we are in the background (`wisp-vmm ... &`): changing its
     * mode or reading it would stop us with SIGTTOU/SIGTTIN, so it gives no input. (A terminal
     * that is not our controlling one has no foreground group for us: tcgetpgrp fails.) */
    pid_t fg = tcgetpgrp(STDIN_FILENO);
    if (fg >= 0 && fg != getpgrp())
        return 0;
    con->in_fd = STDIN_FILENO;
    return console_make_raw(con, err);
}

void console_close(struct console *con)
{
    if (con->tty_raw)
        tcsetattr(con->in_fd, TCSANOW, &con->saved);
    con->tty_raw = false;
    if (con->out_owned && con->out_fd >= 0)
        close(con->out_fd);
    con->out_owned = false;
    con->out_fd = con->in_fd = -1;
}
