"""Shell text shared by the busybox scripts the Linux tests run in the kit's Linux (PVM's busybox
TLS crash, docs/guest-kernel.md: a command may die by a signal; it is retried, a wrong answer
never is).

    import guest_shell
    SCRIPT = guest_shell.retry("wisp-dev") + "...retry mount -t ext4 /dev/vda /mnt/a..."
"""

_RETRY = r"""retry() {
    for try in 1 2 3; do
        "$@"; rc=$?
        [ $rc -lt 128 ] && return $rc
        echo "TAG: '$1' died with status $rc (PVM TLS crash?), try $try" >&2
    done
    return $rc
}
"""


def retry(tag):
    """The sh function retry CMD...: runs CMD up to three times while it dies by a signal (exit
    status 128 or more), telling each such death on stderr as "TAG: ...", and returns CMD's
    last status."""
    return _RETRY.replace("TAG", tag)


def stamp(tag):
    """The sh function stamp WHAT: prints "TAG-t: UPTIME WHAT" from /proc/uptime with builtins
    only (no process), so a console log shows where a slow guest spends its time."""
    return 'stamp() { read -r up _ </proc/uptime; echo "%s-t: $up $*"; }\n' % tag
