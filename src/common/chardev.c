/* Console host side: output through an outbuf, input from stdin on an event loop with flow
 * control, terminal raw mode and its restoration. */
#include "common/chardev.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "common/evloop.h"
#include "common/io.h"
#include "common/outbuf.h"

#define CHARDEV_OUTPUT_BYTES (64 * 1024)
#define CHARDEV_INPUT_CHUNK  64

struct chardev {
    enum chardev_kind kind;
    int out_fd, in_fd;
    bool out_owned;
    struct outbuf *out;
    struct chardev_frontend fe;
    /* fe_lock: the output thread's output_space call against chardev_set_frontend (the input
     * callbacks run in the loop's thread, which is also the one that sets the frontend) */
    pthread_mutex_t fe_lock;
    struct evloop *loop;
    struct evloop_source *in_src;
    struct evloop_call rearm;
    bool in_unpollable; /* stdin that epoll refuses (a regular file, /dev/null): pumped */
    bool in_eof;
    int tty_slot; /* index in terminals[], -1 if none */
};

/* Terminals in raw mode, for chardev_restore_terminals() from signal handlers: the one piece
 * of process-wide state here, because the terminal itself is process-wide. */
#define MAX_TERMINALS 4
static struct {
    atomic_int fd; /* -1: free */
    struct termios saved;
} terminals[MAX_TERMINALS] = {{.fd = -1}, {.fd = -1}, {.fd = -1}, {.fd = -1}};

void chardev_restore_terminals(void)
{
    for (int i = 0; i < MAX_TERMINALS; i++) {
        int fd = atomic_load(&terminals[i].fd);
        if (fd >= 0)
            tcsetattr(fd, TCSANOW, &terminals[i].saved);
    }
}

/* Raw input (bytes reach the guest as typed, no echo, no line editing), like QEMU's stdio
 * chardev: output post-processing (ONLCR) and ISIG stay on, so Ctrl-C still stops wisp-vmm. */
static int make_raw(struct chardev *cd, struct wisp_err *err)
{
    int slot = -1;
    for (int i = 0; i < MAX_TERMINALS && slot < 0; i++)
        if (atomic_load(&terminals[i].fd) < 0)
            slot = i;
    if (slot < 0)
        return 0; /* no room to remember it: leave the terminal as it is */
    struct termios saved;
    if (tcgetattr(cd->in_fd, &saved) < 0)
        return wisp_err_sys(err, errno, "stdin: tcgetattr");
    struct termios raw = saved;
    raw.c_iflag &= ~(tcflag_t)(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    raw.c_lflag &= ~(tcflag_t)(ECHO | ECHONL | ICANON | IEXTEN);
    raw.c_cflag &= ~(tcflag_t)(CSIZE | PARENB);
    raw.c_cflag |= CS8;
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    terminals[slot].saved = saved;
    atomic_store(&terminals[slot].fd, cd->in_fd); /* before the change: a signal restores it */
    if (tcsetattr(cd->in_fd, TCSANOW, &raw) < 0) {
        atomic_store(&terminals[slot].fd, -1);
        return wisp_err_sys(err, errno, "stdin: tcsetattr");
    }
    cd->tty_slot = slot;
    return 0;
}

static void restore_terminal(struct chardev *cd)
{
    if (cd->tty_slot < 0)
        return;
    tcsetattr(cd->in_fd, TCSANOW, &terminals[cd->tty_slot].saved);
    atomic_store(&terminals[cd->tty_slot].fd, -1);
    cd->tty_slot = -1;
}

static int open_stdio(struct chardev *cd, struct wisp_err *err)
{
    cd->out_fd = fcntl(STDOUT_FILENO, F_GETFL) >= 0 ? STDOUT_FILENO : -1;
    int fl = fcntl(STDIN_FILENO, F_GETFL);
    if (fl < 0 || (fl & O_ACCMODE) == O_WRONLY)
        return 0; /* no usable stdin: output only */
    if (!isatty(STDIN_FILENO)) {
        cd->in_fd = STDIN_FILENO; /* a pipe or a file */
        return 0;
    }
    /* Our controlling terminal while we are in the background (`wisp-vmm ... &`): changing its
     * mode or reading it would stop us with SIGTTOU/SIGTTIN, so it gives no input. (A terminal
     * that is not our controlling one has no foreground group for us: tcgetpgrp fails.) */
    pid_t fg = tcgetpgrp(STDIN_FILENO);
    if (fg >= 0 && fg != getpgrp())
        return 0;
    cd->in_fd = STDIN_FILENO;
    return make_raw(cd, err);
}

/* An output file named by a person: never blocks in open (wisp_open_output). */
static int open_output_file(struct chardev *cd, const char *path, const char *what,
                            struct wisp_err *err)
{
    int fd = wisp_open_output(what, path, err);
    if (fd < 0)
        return fd;
    cd->out_fd = fd;
    cd->out_owned = true;
    return 0;
}

static void output_space(void *opaque)
{
    struct chardev *cd = opaque;
    pthread_mutex_lock(&cd->fe_lock);
    if (cd->fe.output_space)
        cd->fe.output_space(cd->fe.opaque);
    pthread_mutex_unlock(&cd->fe_lock);
}

int chardev_open(struct chardev **out, enum chardev_kind kind, const char *path, const char *what,
                 struct wisp_err *err)
{
    struct chardev *cd = calloc(1, sizeof(*cd));
    if (!cd)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", what);
    cd->kind = kind;
    pthread_mutex_init(&cd->fe_lock, NULL);
    cd->out_fd = cd->in_fd = -1;
    cd->tty_slot = -1;
    int r = 0;
    if (kind == CHARDEV_STDIO)
        r = open_stdio(cd, err);
    else if (kind == CHARDEV_FILE)
        r = open_output_file(cd, path, what, err);
    if (r == 0 && cd->out_fd >= 0)
        r = outbuf_create(&cd->out, cd->out_fd, CHARDEV_OUTPUT_BYTES, what, err);
    if (r < 0) {
        chardev_close(cd);
        return r;
    }
    if (cd->out)
        outbuf_set_space_fn(cd->out, output_space, cd, CHARDEV_OUTPUT_BYTES / 4);
    *out = cd;
    return 0;
}

void chardev_set_frontend(struct chardev *cd, const struct chardev_frontend *fe)
{
    pthread_mutex_lock(&cd->fe_lock); /* after this, no output_space call reaches the old one */
    cd->fe = *fe;
    pthread_mutex_unlock(&cd->fe_lock);
}

/* Reads what the device can take now; false when it is full (or input ended). */
static bool input_read_some(struct chardev *cd)
{
    size_t room = cd->fe.can_receive ? cd->fe.can_receive(cd->fe.opaque) : 0;
    if (room == 0 || cd->in_eof)
        return false;
    uint8_t buf[CHARDEV_INPUT_CHUNK];
    ssize_t n = read(cd->in_fd, buf, room < sizeof(buf) ? room : sizeof(buf));
    if (n > 0) {
        cd->fe.receive(cd->fe.opaque, buf, (size_t)n);
        return true;
    }
    if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        cd->in_eof = true; /* end of input */
        evloop_source_remove(cd->in_src);
        cd->in_src = NULL;
    }
    return false;
}

static void input_readable(void *opaque, uint32_t events)
{
    struct chardev *cd = opaque;
    if (!input_read_some(cd) && cd->in_src) /* the device is full: wait for input_ready */
        evloop_fd_modify(cd->in_src, 0);
}

/* In the loop's thread after the device made room: re-arm the fd, or for an fd epoll cannot
 * watch (always readable), read until the device is full or input ends. */
static void input_rearm(void *opaque)
{
    struct chardev *cd = opaque;
    if (cd->in_unpollable) {
        while (input_read_some(cd))
            ;
    } else if (cd->in_src) {
        evloop_fd_modify(cd->in_src, EPOLLIN);
    }
}

int chardev_attach_input(struct chardev *cd, struct evloop *loop, struct wisp_err *err)
{
    if (cd->in_fd < 0 || !cd->fe.receive)
        return 0;
    cd->loop = loop;
    cd->rearm = (struct evloop_call){.fn = input_rearm, .opaque = cd};
    int r = evloop_add_fd(loop, cd->in_fd, EPOLLIN, input_readable, cd, &cd->in_src, NULL);
    if (r == -EPERM) { /* a regular file or /dev/null: always readable, epoll refuses it */
        cd->in_unpollable = true;
        evloop_call_async(loop, &cd->rearm);
        return 0;
    }
    return r < 0 ? wisp_err_sys(err, -r, "stdin: cannot watch it for input") : 0;
}

void chardev_input_ready(struct chardev *cd)
{
    if (cd->loop)
        evloop_call_async(cd->loop, &cd->rearm);
}

size_t chardev_write(struct chardev *cd, const void *buf, size_t len)
{
    return cd->out ? outbuf_write(cd->out, buf, len) : len;
}

int chardev_set_file_cap(struct chardev *cd, uint64_t max, struct wisp_err *err)
{
    return cd->out ? outbuf_set_file_cap(cd->out, max, err) : 0;
}

size_t chardev_write_room(struct chardev *cd)
{
    return cd->out ? outbuf_room(cd->out) : SIZE_MAX;
}

void chardev_flush(struct chardev *cd, int timeout_ms)
{
    if (cd && cd->out)
        (void)outbuf_drain(cd->out, timeout_ms);
}

void chardev_close(struct chardev *cd)
{
    if (!cd)
        return;
    if (cd->loop) /* a re-arm posted by the device must not run on freed memory */
        evloop_call_cancel(cd->loop, &cd->rearm);
    evloop_source_remove(cd->in_src);
    restore_terminal(cd);
    outbuf_destroy(cd->out);
    if (cd->out_owned && cd->out_fd >= 0)
        close(cd->out_fd);
    pthread_mutex_destroy(&cd->fe_lock);
    free(cd);
}
