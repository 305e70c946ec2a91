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
  "$VMM" "$@" >"$T/out" 2>"$T/err" </dev/null
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

echo "$failures failure(s)"
exit $((failures ? 1 : 0))
