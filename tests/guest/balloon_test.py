#!/usr/bin/env python3
"""virtio-balloon through the API (docs/memory.md): guest/virtio_balloon.c writes 96 MiB, the
test inflates the balloon by 64 MiB with PATCH /balloon and the VMM's resident memory drops by
about that much; the guest's statistics come to GET /balloon/statistics; a deflate gives the
pages back reading as zero; the 16 MiB the guest then reports free leave the host too; two
malformed page numbers are counted and ignored. Then a snapshot of the ballooned VM restores.

    balloon_test.py VMM BALLOON_ELF BACKEND

BACKEND is anon or memfd (the pages leave by MADV_DONTNEED or by a punched hole). Exits 0 on
success, 1 with a message on failure.
"""
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "snapshot"))
import snaplib  # noqa: E402

MIB = 1 << 20


class Failure(Exception):
    pass


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise Failure("no VmRSS")


def wait_stats(v, cond, what, timeout=30):
    deadline = time.monotonic() + timeout  # a bound on the wait, not a timed assertion
    while True:
        s = v.expect("GET", "/balloon/statistics", status=200)
        if cond(s):
            return s
        if time.monotonic() > deadline:
            raise Failure(f"{what}: GET /balloon/statistics says {s}")
        time.sleep(0.2)


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    vmm, elf, backend = sys.argv[1:]
    with tempfile.TemporaryDirectory() as d:
        cfg = os.path.join(d, "vm.json")
        with open(cfg, "w") as f:
            json.dump({"boot-source": {"kernel_image_path": elf},
                       "machine-config": {"vcpu_count": 1, "mem_size_mib": 256,
                                          "mem_backend": backend},
                       "balloon": {"amount_mib": 0, "deflate_on_oom": True,
                                   "stats_polling_interval_s": 1}}, f)
        v = snaplib.Vmm(vmm, d, "vm", ["--config-file", cfg])
        try:
            v.wait_for(r"^balloon: touched\n")
            got = v.expect("GET", "/balloon", status=200)
            if got != {"amount_mib": 0, "deflate_on_oom": True, "stats_polling_interval_s": 1}:
                raise Failure(f"GET /balloon: {got}")
            s = wait_stats(v, lambda s: s["wisp"]["bad_pfns"] == 2 and "free_memory" in s,
                           "the malformed page numbers and the first statistics")
            before = rss_kib(v.p.pid)
            v.expect("PATCH", "/balloon", {"amount_mib": 64})
            v.wait_for(r"^balloon: actual 16384\n")
            after = rss_kib(v.p.pid)
            print(f"{backend}: VmRSS {before} kB -> {after} kB after inflating 64 MiB "
                  f"({(before - after) / 1024:.1f} MiB returned)")
            if before - after < 64 * 1024 * 9 // 10:
                raise Failure(f"inflating 64 MiB freed only {before - after} kB on the host")
            s = wait_stats(v, lambda s: s["actual_mib"] == 64 and s["wisp"]["stats_updates"] >= 3,
                           "actual 64 MiB and statistics every second")
            print("GET /balloon/statistics:", s)
            for k, want in (("target_mib", 64), ("target_pages", 16384), ("actual_pages", 16384),
                            ("free_memory", 100 * MIB), ("total_memory", 256 * MIB),
                            ("available_memory", 120 * MIB)):
                if s.get(k) != want:
                    raise Failure(f"GET /balloon/statistics: {k} is {s.get(k)}, not {want}")
            if s["wisp"]["inflated_pages"] != 16384 + 2:
                raise Failure(f"inflated_pages {s['wisp']['inflated_pages']}, not 16386")
            v.expect("PATCH", "/balloon/statistics", {"stats_polling_interval_s": 2})
            v.expect("PATCH", "/balloon/statistics", {"stats_polling_interval_s": 0}, status=400)
            v.expect("PATCH", "/balloon", {"amount_mib": -1}, status=400)
            v.expect("PATCH", "/balloon", {"amount_mib": 1 << 40}, status=400)
            v.expect("PUT", "/balloon", {"amount_mib": 1, "deflate_on_oom": False}, status=400)
            if v.expect("GET", "/vm/config", status=200)["balloon"]["amount_mib"] != 64:
                raise Failure("GET /vm/config does not show the new target")
            # the guest reports right after its deflate, and reads those pages only at the
            # next change of the target
            mid = rss_kib(v.p.pid)
            v.expect("PATCH", "/balloon", {"amount_mib": 16})
            v.wait_for(r"^balloon: deflated to 4096\n")
            v.wait_for(r"^balloon: reported 16 MiB\n")
            end = rss_kib(v.p.pid)
            print(f"{backend}: VmRSS {mid} kB -> {end} kB after the guest reported 16 MiB free")
            if mid - end < 16 * 1024 * 9 // 10:
                raise Failure(f"reporting 16 MiB freed only {mid - end} kB on the host")
            s = wait_stats(v, lambda s: s["wisp"]["reported_bytes"] == 16 * MIB, "reported bytes")
            v.expect("PATCH", "/balloon", {"amount_mib": 17})
            v.wait_for(r"^balloon: deflated pages 4096..16383 zero ok\n")
            v.wait_for(r"^balloon: reported pages zero ok\n")
            v.wait_for(r"^balloon: actual 4352\n")
            # a snapshot of the ballooned VM, restored: the target and the driver's actual stay
            v.expect("PATCH", "/vm", {"state": "Paused"})
            snap, mem = os.path.join(d, "b.snap"), os.path.join(d, "b.mem")
            v.expect("PUT", "/snapshot/create", {"snapshot_path": snap, "mem_file_path": mem})
        finally:
            v.end()
        w = snaplib.Vmm(vmm, d, "clone", [])
        try:
            w.expect("PUT", "/snapshot/load", snaplib.load_body(snap, mem))
            s = w.expect("GET", "/balloon/statistics", status=200)
            if (s["target_mib"], s["actual_mib"]) != (17, 17):
                raise Failure(f"the restored balloon: {s}")
            w.expect("PATCH", "/balloon", {"amount_mib": 0})
            w.wait_for(r"^balloon: deflated to 0\n")
            print("restored: target and actual 17 MiB kept, deflated to 0")
        finally:
            w.end()
    print("ok")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # ours and snaplib's Failure
        print(f"FAIL: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
