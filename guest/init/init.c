/* wisp-init: the guest kit's tiny PID 1. Mounts /proc, /sys and /dev, marks the boot
 * time, runs one command (or a shell), reports its exit status to the host and ends the VM.
 *
 * Contract with the host (documented in docs/guest-kernel.md):
 *   - the kernel command line's words after "--" are the command; without them, /bin/sh
 *     runs. They are read from /proc/cmdline, not argv: Linux also passes every unknown
 *     option without "=" (noxsave, ...) to init as an argument, before the words after
 *     "--", so argv alone cannot tell where the command starts. Double quotes group
 *     words as in the kernel's own parser: -- /bin/sh -c "echo hi; exit 3";
 *   - at start it writes WISP_MARK_INIT to the boot-time marker port 0x440, and
 *     WISP_MARK_DONE when the command has ended;
 *   - it prints "wisp-init: boot-time init=S done=S" (kernel uptime in seconds at both
 *     markers; bench/boot uses it to place the kernel's start on the host's clock) and
 *     "wisp-init: exit status N" on the console, writes N to the test-exit port
 *     0xf4 (wisp-vmm exits with N), then reboots (reboot=k: i8042 reset; reboot=acpi:
 *     the FADT reset register), which ends the VM on any VMM;
 *   - "wisp_exit=reboot" on the command line (passed to init as an environment variable)
 *     skips the test-exit port, so the VM ends through the kernel's reboot path only;
 *   - "wisp.agent=1" on the command line (before any "--") and no command: it runs the guest
 *     agent /sbin/wisp-agent (docs/agent-protocol.md) as the command, so the agent's end
 *     (after the host's SHUTDOWN) is the VM's end with its status.
 * Static, no allocation: it must work in an empty initramfs and cost few system calls. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PORT_TEST_EXIT   0xf4
#define PORT_BOOT_MARKER 0x440
#define WISP_MARK_INIT   0x1 /* init's first instruction (roughly) */
#define WISP_MARK_DONE   0x2 /* the command has ended */

static int ports_ok;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("wisp-init: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Port access from user mode needs ioperm() (CONFIG_X86_IOPL_IOPERM). Without it the
 * markers and the exit port are skipped; the console line and the reboot still work. */
static void ports_open(void)
{
    if (ioperm(PORT_TEST_EXIT, 4, 1) == 0 && ioperm(PORT_BOOT_MARKER, 4, 1) == 0)
        ports_ok = 1;
    else
        say("ioperm: %s (no boot markers, no test-exit port)", strerror(errno));
}

/* Seconds since the kernel started (CLOCK_BOOTTIME starts with the kernel's clock). */
static double uptime(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_BOOTTIME, &ts) < 0)
        return -1;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double boot_mark(unsigned char code)
{
    if (ports_ok)
        outb(code, PORT_BOOT_MARKER);
    return uptime();
}

static void mount_one(const char *source, const char *target, const char *type)
{
    mkdir(target, 0755);
    if (mount(source, target, type, MS_NOSUID, NULL) < 0 && errno != EBUSY)
        say("mount %s on %s: %s", type, target, strerror(errno));
}

static void mount_basics(void)
{
    mount_one("proc", "/proc", "proc");
    mount_one("sysfs", "/sys", "sysfs");
    mount_one("devtmpfs", "/dev", "devtmpfs");
}

#define CMDLINE_MAX       4096 /* x86 COMMAND_LINE_SIZE is 2048 */
#define COMMAND_MAX_WORDS 64

/* Splits the words after the first "--" of the kernel command line into words[] (NULL
 * terminated, pointing into buf). Returns the number of words, 0 when there is no "--". */
static int agent_wanted;

static int command_from_cmdline(char *buf, size_t size, char **words)
{
    int n = 0, after_dashes = 0;
    char *p = buf;
    FILE *f = fopen("/proc/cmdline", "re");
    size_t len;

    words[0] = NULL;
    if (!f) {
        say("/proc/cmdline: %s", strerror(errno));
        return 0;
    }
    len = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[len] = '\0';
    while (*p && n < COMMAND_MAX_WORDS) {
        char *word, *out;
        int quoted = 0;

        while (*p == ' ' || *p == '\n' || *p == '\t')
            p++;
        if (!*p)
            break;
        word = out = p;
        for (; *p && (quoted || (*p != ' ' && *p != '\n' && *p != '\t')); p++) {
            if (*p == '"')
                quoted = !quoted;
            else
                *out++ = *p;
        }
        if (*p)
            p++;
        *out = '\0';
        if (after_dashes)
            words[n++] = word;
        else if (strcmp(word, "--") == 0)
            after_dashes = 1;
        else if (strcmp(word, "wisp.agent=1") == 0)
            agent_wanted = 1;
    }
    words[n] = NULL;
    return n;
}

/* Runs argv (or /bin/sh) in a child with the console as stdio; returns a shell-style
 * exit status: the code, or 128 + signal number. */
static int run_command(char **argv)
{
    static char *shell[] = {"/bin/sh", NULL};
    char **cmd = argv[0] ? argv : shell;
    int status;
    pid_t pid, got;

    pid = fork();
    if (pid < 0) {
        say("fork: %s", strerror(errno));
        return 127;
    }
    if (pid == 0) {
        setsid();
        execvp(cmd[0], cmd);
        say("cannot run %s: %s", cmd[0], strerror(errno));
        _exit(127);
    }
    /* PID 1 also reaps orphans; the command's own status is the one reported. */
    for (;;) {
        got = wait(&status);
        if (got == pid)
            break;
        if (got < 0 && errno != EINTR) {
            say("wait: %s", strerror(errno));
            return 127;
        }
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

static void end_vm(int status)
{
    const char *mode = getenv("wisp_exit");

    say("exit status %d", status);
    /* The console's UART sends from an interrupt handler after write() returns: wait until
     * the line has left it, or the exit port ends the VM with the line half sent. */
    tcdrain(STDERR_FILENO);
    tcdrain(STDOUT_FILENO);
    sync();
    if (ports_ok && !(mode && strcmp(mode, "reboot") == 0))
        outb((unsigned char)status, PORT_TEST_EXIT);
    reboot(RB_AUTOBOOT);
    say("reboot: %s", strerror(errno));
    for (;;)
        pause();
}

int main(void)
{
    static char cmdline[CMDLINE_MAX];
    char *command[COMMAND_MAX_WORDS + 1];
    double init_time, done_time;
    int status;

    ports_open();
    init_time = boot_mark(WISP_MARK_INIT);
    mount_basics();
    if (!getenv("PATH"))
        setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
    if (command_from_cmdline(cmdline, sizeof(cmdline), command) == 0 && agent_wanted) {
        command[0] = "/sbin/wisp-agent";
        command[1] = NULL;
    }
    status = run_command(command);
    done_time = boot_mark(WISP_MARK_DONE);
    say("boot-time init=%.6f done=%.6f", init_time, done_time);
    end_vm(status);
    return 0;
}
