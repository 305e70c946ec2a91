/* Small fd helpers: whole writes, non-blocking opens of named files, the standard fds. */
#include "common/io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

int wisp_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

const char *wisp_file_type_name(mode_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG:
        return "a regular file";
    case S_IFDIR:
        return "a directory";
    case S_IFIFO:
        return "a FIFO";
    case S_IFCHR:
        return "a character device";
    case S_IFBLK:
        return "a block device";
    case S_IFSOCK:
        return "a socket";
    case S_IFLNK:
        return "a symbolic link";
    }
    return "not a regular file";
}

int wisp_open_regular(const char *what, const char *path, off_t *size, struct wisp_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return wisp_err_sys(err, errno, "%s: %s", what, path);
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        close(fd);
        return wisp_err_sys(err, e, "%s: %s", what, path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return wisp_err_set(err, S_ISDIR(st.st_mode) ? EISDIR : EINVAL,
                            "%s: %s is %s, not a regular file", what, path,
                            wisp_file_type_name(st.st_mode));
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    *size = st.st_size;
    return fd;
}

int wisp_open_output(const char *what, const char *path, struct wisp_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0644);
    if (fd < 0) {
        int e = errno;
        if (e == ENXIO)
            return wisp_err_set(err, ENXIO, "%s: %s is a FIFO with no reader", what, path);
        return wisp_err_sys(err, e, "%s: %s", what, path);
    }
    struct stat st;
    if (fstat(fd, &st) < 0 ||
        !(S_ISREG(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode))) {
        int e = errno;
        close(fd);
        if (e && !st.st_mode)
            return wisp_err_sys(err, e, "%s: %s", what, path);
        return wisp_err_set(err, EINVAL, "%s: %s is %s: output needs a file, FIFO or terminal",
                            what, path, wisp_file_type_name(st.st_mode));
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(fd, F_SETFL, fl & ~O_NONBLOCK); /* our own description: the writer blocks */
    return fd;
}

int wisp_ensure_std_fds(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        int n = open("/dev/null", O_RDWR);
        if (n < 0)
            return -errno;
        if (n != fd) { /* lower fds are open, so open() returned fd itself unless... */
            int d = dup2(n, fd);
            close(n);
            if (d < 0)
                return -errno;
        }
    }
    return 0;
}
