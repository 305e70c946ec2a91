#!/usr/bin/env bash
# vmm-errors: wisp-vmm's answers to bad input and its ends, as a user or a launcher sees them.
#   usage: test_vmm_errors.sh WISP_VMM
# Exit statuses (docs/wisp-vmm.md): 2 for usage errors, including a --kernel/--initrd path that
# does not exist (checked before any KVM work); 1 for runtime errors, including a kernel file
# that exists but is not a kernel; 0 after SIGTERM/SIGINT; V from the test-exit port.
set -uo pipefail
VMM=${1:?usage: $0 WISP_VMM}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
failures=0

# expect STATUS NEEDLE -- ARGS...: runs wisp-vmm, checks the exit status and that stderr (or
# stdout for --help/--version) contains NEEDLE.
expect() {
  local want=$1 needle=$2
  shift 3
  timeout -k 1 20 "$VMM" "$@" >"$T/out" 2>"$T/err" </dev/null
  local got=$?
  if [ "$got" != "$want" ] || { [ -n "$needle" ] && ! grep -qF -- "$needle" "$T/out" "$T/err"; }; then
    echo "FAIL: wisp-vmm $*: status $got (want $want), output:" >&2
    cat "$T/out" "$T/err" >&2
    echo "  (wanted to see: $needle)" >&2
    failures=$((failures + 1))
  else
    echo "ok: wisp-vmm $* -> $got"
  fi
}

# A tiny PVH guest (like /work/shared/probes/tiny-pvh-guest.S): prints "!", then either
# writes 42 to the test-exit port or idles with interrupts off.
make_guest() { # NAME BODY
  cat >"$T/$1.S" <<ASM
.section .note.pvh, "a", @note
.align 4
.long 4, 4, 18
.asciz "Xen"
.long _start
.text
.code32
.globl _start
_start:
 mov \$0x3f8, %dx
 mov \$'!', %al
 out %al, %dx
$2
1: hlt
 jmp 1b
ASM
  gcc -c "$T/$1.S" -o "$T/$1.o" && ld -Ttext=0x100000 -e _start -o "$T/$1.elf" "$T/$1.o"
}

echo garbage >"$T/garbage.img"
: >"$T/empty.img"

expect 2 "--kernel: $T/missing.elf: No such file or directory" -- --kernel "$T/missing.elf"
expect 2 "--kernel: $T is a directory, not a regular file" -- --kernel "$T"
expect 2 "--initrd: $T/missing.img" -- --kernel "$T/garbage.img" --initrd "$T/missing.img"
expect 1 "garbage.img" -- --kernel "$T/garbage.img"
expect 1 "empty.img" -- --kernel "$T/empty.img"
expect 2 "--kernel: missing" --
expect 2 "--cpus: '0' is out of range" -- --kernel "$T/garbage.img" --cpus 0
expect 2 "--cpus: '100000' is out of range" -- --kernel "$T/garbage.img" --cpus 100000
expect 2 "--cpus: 'x' is not a number" -- --kernel "$T/garbage.img" --cpus x
expect 2 "--mem: 'junk' is not a size" -- --kernel "$T/garbage.img" --mem junk
expect 2 "--mem: '0' is below" -- --kernel "$T/garbage.img" --mem 0
expect 2 "--serial: 'pty' is not" -- --kernel "$T/garbage.img" --serial pty
expect 2 "--no-such-flag: unknown option" -- --kernel "$T/garbage.img" --no-such-flag
WISP_KVM_DEVICE=$T/no-kvm expect 1 "$T/no-kvm: No such file or directory: KVM is not available on this host" -- --kernel "$T/garbage.img"
WISP_KVM_DEVICE=/dev/null expect 1 "/dev/null: KVM_GET_API_VERSION: Inappropriate ioctl for device: not a KVM device" -- --kernel "$T/garbage.img"
expect 0 "EXIT STATUS" -- --help
expect 0 "wisp-vmm " -- --version

if [ ! -r /dev/kvm ] || ! command -v gcc >/dev/null || ! command -v ld >/dev/null; then
  echo "no KVM or no gcc/ld: the guest part is skipped"
  exit $((failures ? 1 : 0))
fi

make_guest exit42 ' mov $0xf4, %dx
 mov $42, %al
 out %al, %dx'
make_guest idle ' mov $0x440, %dx
 mov $7, %al
 out %al, %dx
 cli'

# echo: polls LSR.DR, echoes each byte; on 'q' exits with status 'q' (113)
make_guest echo ' mov $0x3fd, %dx
2: in %dx, %al
 test $1, %al
 jz 2b
 mov $0x3f8, %dx
 in %dx, %al
 out %al, %dx
 cmp $0x71, %al
 jne 3f
 mov $0xf4, %dx
 out %al, %dx
3: mov $0x3fd, %dx
 jmp 2b'

expect 42 "!" -- --kernel "$T/exit42.elf"
expect 42 "" -- --kernel "$T/exit42.elf" --serial "file:$T/com1.log"
grep -qx '!' "$T/com1.log" || { echo "FAIL: --serial file: got '$(cat "$T/com1.log")'" >&2; failures=$((failures + 1)); }

# Serial input from a pipe reaches the guest.
out=$(printf 'abq' | timeout 60 "$VMM" --kernel "$T/echo.elf" 2>"$T/err")
got=$?
if [ "$got" != 113 ] || [ "$out" != '!abq' ]; then
  echo "FAIL: serial input from a pipe: status $got (want 113), output '$out' (want '!abq')" >&2
  cat "$T/err" >&2
  failures=$((failures + 1))
else
  echo "ok: serial input from a pipe"
fi

# From a terminal: raw mode (bytes arrive without a newline, the terminal does not echo them),
# and the terminal's mode is the same after wisp-vmm exits.
if python3 - "$VMM" "$T/echo.elf" <<'PY'
import os, pty, select, subprocess, sys, termios, time
master, slave = pty.openpty()
before = termios.tcgetattr(slave)
p = subprocess.Popen([sys.argv[1], "--kernel", sys.argv[2]], stdin=slave, stdout=slave,
                     stderr=subprocess.PIPE)
time.sleep(0.3)
os.write(master, b"xyq")
out, deadline = b"", time.time() + 20
while p.poll() is None and time.time() < deadline:
    if select.select([master], [], [], 0.1)[0]:
        out += os.read(master, 100)
if p.poll() is None:  # no exit: the input never reached the guest
    p.kill()
p.wait()
while select.select([master], [], [], 0.1)[0]:
    out += os.read(master, 100)
after = termios.tcgetattr(slave)
ok = p.returncode == 113 and out == b"!xyq" and before == after
print(f"status {p.returncode} output {out!r} mode restored {before == after}")
sys.exit(0 if ok else 1)
PY
then
  echo "ok: serial input from a terminal"
else
  echo "FAIL: serial input from a terminal (raw mode / restore)" >&2
  failures=$((failures + 1))
fi

# SIGTERM / SIGINT end an idle VM with status 0, after the boot marker was printed.
for sig in TERM INT; do
  # with the launcher's clock (here: 0, so "since launch" is the monotonic time itself)
  WISP_LAUNCH_NS=0 "$VMM" --kernel "$T/idle.elf" --boot-marker --serial none \
    >"$T/out" 2>"$T/err" </dev/null &
  pid=$!
  for _ in $(seq 100); do grep -q boot-marker "$T/err" && break; sleep 0.05; done
  kill -s "$sig" "$pid"
  wait "$pid"
  got=$?
  if [ "$got" != 0 ] || ! grep -Eq '^wisp-vmm: boot-marker 7 at [0-9]+\.[0-9]{3} ms \([0-9]+\.[0-9]{3} ms since launch\)$' "$T/err"; then
    echo "FAIL: SIG$sig on an idle VM: status $got (want 0), stderr:" >&2
    cat "$T/err" >&2
    failures=$((failures + 1))
  else
    echo "ok: SIG$sig -> 0, $(cat "$T/err")"
  fi
done

# A guest that prints without end: one that ignores LSR (writes THR as fast as it can) and one
# that waits for THRE like a driver. With stdout a pipe nobody reads, neither may block a vCPU
# or the stop path: SIGTERM ends the VM (status 0) within a second.
make_guest flood ' mov $0x3f8, %dx
 mov $0x41, %al
2: out %al, %dx
 jmp 2b'
make_guest flood_thre ' mov $0x3fd, %dx
2: in %dx, %al
 test $0x20, %al
 jz 2b
 mov $0x3f8, %dx
 mov $0x42, %al
 out %al, %dx
 mov $0x3fd, %dx
 jmp 2b'
for g in flood flood_thre; do
  if python3 - "$VMM" "$T/$g.elf" <<'PY'
import os, signal, subprocess, sys, time
r, w = os.pipe()  # nobody reads r: the pipe fills (64 KiB) and stays full
p = subprocess.Popen([sys.argv[1], "--kernel", sys.argv[2]], stdin=subprocess.DEVNULL,
                     stdout=w, stderr=subprocess.PIPE)
os.close(w)
time.sleep(1.0)  # long enough to fill the pipe and the VMM's own buffer many times over
t0 = time.monotonic()
p.send_signal(signal.SIGTERM)
try:
    p.wait(timeout=5)
except subprocess.TimeoutExpired:
    p.kill()
    p.wait()
    print("SIGTERM did not end the VM within 5 s (killed)")
    sys.exit(1)
dt = time.monotonic() - t0
print(f"exit status {p.returncode} {dt * 1000:.0f} ms after SIGTERM")
sys.exit(0 if p.returncode == 0 and dt < 1.0 else 1)
PY
  then echo "ok: $g to an unread pipe: SIGTERM ends it"
  else echo "FAIL: $g to an unread pipe: SIGTERM did not end it in time" >&2; failures=$((failures + 1)); fi
done

# Files that would block an open() (FIFOs) or are not files are refused at once, status 2,
# naming the flag and what the path is; nothing waits for a FIFO's other end.
mkfifo "$T/fifo"
expect 2 "--kernel: $T/fifo is a FIFO, not a regular file" -- --kernel "$T/fifo"
expect 2 "--initrd: $T/fifo is a FIFO, not a regular file" -- --kernel "$T/exit42.elf" --initrd "$T/fifo"
expect 2 "--serial: $T/fifo is a FIFO with no reader" -- --kernel "$T/exit42.elf" --serial "file:$T/fifo"
expect 2 "--serial: $T/nonexistent/x: No such file or directory" -- --kernel "$T/exit42.elf" --serial "file:$T/nonexistent/x"
expect 2 "--serial: $T: Is a directory" -- --kernel "$T/exit42.elf" --serial "file:$T"
expect 2 "--initrd: $T is a directory, not a regular file" -- --kernel "$T/exit42.elf" --initrd "$T"
expect 2 "--kernel: /dev/null is a character device, not a regular file" -- --kernel /dev/null
expect 2 "--vsock: cid: '2' is not a number in 3..4294967294" -- --kernel "$T/exit42.elf" --vsock "cid=2,uds=$T/v.sock"
expect 2 "--vsock: give cid=N and uds=PATH" -- --kernel "$T/exit42.elf" --vsock "cid=3"
expect 2 "--vsock: unknown key 'port' (cid, uds)" -- --kernel "$T/exit42.elf" --vsock "cid=3,uds=$T/v.sock,port=1"
touch "$T/taken.sock"
expect 1 "vsock0: cannot bind $T/taken.sock (it exists" -- --kernel "$T/exit42.elf" --vsock "cid=3,uds=$T/taken.sock"
expect 42 "" -- --kernel "$T/exit42.elf" --vsock "cid=3,uds=$T/v.sock"
if [ -e "$T/v.sock" ]; then echo "FAIL: $T/v.sock is left after the VM ended" >&2; failures=$((failures + 1)); fi
# A FIFO with a reader is a fine serial output.
(cat "$T/fifo" >"$T/fifo.out") &
reader=$!
sleep 0.2
expect 42 "" -- --kernel "$T/exit42.elf" --serial "file:$T/fifo"
wait $reader
[ "$(cat "$T/fifo.out")" = '!' ] && echo "ok: --serial to a FIFO with a reader" ||
  { echo "FAIL: --serial to a FIFO: got '$(cat "$T/fifo.out")'" >&2; failures=$((failures + 1)); }

# With stdin (or stdout) closed, /dev/kvm must not become fd 0 and be read as serial input:
# fds 0-2 are made valid (/dev/null) before anything is opened.
"$VMM" --kernel "$T/idle.elf" --boot-marker <&- >"$T/out" 2>"$T/err" &
pid=$!
for _ in $(seq 100); do grep -q boot-marker "$T/err" && break; sleep 0.05; done
fd0=$(readlink "/proc/$pid/fd/0")
kill -TERM "$pid"
wait "$pid"
got=$?
if [ "$got" = 0 ] && [ "$fd0" = /dev/null ]; then echo "ok: stdin closed: fd 0 is $fd0"
else echo "FAIL: stdin closed: status $got, fd 0 is '$fd0'" >&2; failures=$((failures + 1)); fi
timeout -k 1 20 "$VMM" --kernel "$T/exit42.elf" >&- 2>"$T/err" </dev/null
got=$?
if [ "$got" = 42 ] && [ ! -s "$T/err" ]; then echo "ok: stdout closed"
else echo "FAIL: stdout closed: status $got, stderr: $(cat "$T/err")" >&2; failures=$((failures + 1)); fi

# Under a child subreaper that does not reap strangers: nothing of wisp-vmm is left behind
# (no helper, live or zombie). With --async-teardown under a subreaper that reaps, the helper
# it leaves is gone soon after.
if python3 - "$VMM" "$T/exit42.elf" <<'PY'
import ctypes, os, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
ok = True
p = subprocess.run([sys.argv[1], "--kernel", sys.argv[2]], stdout=subprocess.DEVNULL,
                   stdin=subprocess.DEVNULL)
time.sleep(0.3)
try:
    pid, status = os.waitpid(-1, os.WNOHANG)
    print(f"default teardown: a process was left behind (pid {pid})")
    ok = False
except ChildProcessError:
    print("default teardown: nothing left")
ok = ok and p.returncode == 42
t0 = time.monotonic()
p = subprocess.run([sys.argv[1], "--kernel", sys.argv[2], "--async-teardown"],
                   stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
reaped = 0
while time.monotonic() - t0 < 5:
    try:
        pid, status = os.waitpid(-1, 0)
        reaped += 1
    except ChildProcessError:
        break
print(f"--async-teardown: status {p.returncode}, {reaped} helper(s) reaped, "
      f"{(time.monotonic() - t0) * 1000:.0f} ms until none was left")
sys.exit(0 if ok and p.returncode == 42 and reaped == 1 else 1)
PY
then echo "ok: under a subreaper nothing is left"
else echo "FAIL: under a subreaper" >&2; failures=$((failures + 1)); fi

# The terminal's mode comes back after every signal that ends wisp-vmm, not only SIGTERM/SIGINT.
for sig in HUP QUIT TERM INT; do
  if python3 - "$VMM" "$T/idle.elf" "$sig" <<'PY'
import os, pty, signal, subprocess, sys, termios, time
master, slave = pty.openpty()
before = termios.tcgetattr(slave)
p = subprocess.Popen([sys.argv[1], "--kernel", sys.argv[2]], stdin=slave, stdout=slave,
                     stderr=subprocess.DEVNULL, start_new_session=True)
time.sleep(0.3)
raw = termios.tcgetattr(slave) != before
p.send_signal(getattr(signal, "SIG" + sys.argv[3]))
p.wait(timeout=5)
after = termios.tcgetattr(slave)
print(f"SIG{sys.argv[3]}: status {p.returncode}, raw while running {raw}, restored {before == after}")
sys.exit(0 if raw and before == after and p.returncode == 0 else 1)
PY
  then echo "ok: terminal restored after SIG$sig"
  else echo "FAIL: terminal after SIG$sig" >&2; failures=$((failures + 1)); fi
done

echo "$failures failure(s)"
exit $((failures ? 1 : 0))
