#!/usr/bin/env python3
"""Builds a busybox OCI image archive (an OCI image layout in a tar: oci-layout, index.json,
blobs/sha256/...) from Debian's busybox-static, without a registry, for `ctr image import` and
`podman load`.

  mkimage.py OUT.tar [--name NAME] [--busybox /bin/busybox]
"""
import argparse
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time

APPLETS_FALLBACK = ["sh", "echo", "cat", "sleep", "ls", "ps", "true", "false", "env", "id",
                    "hostname", "ip", "ifconfig", "route", "ping", "wget", "kill", "mount",
                    "uname", "test", "printf", "wc", "grep", "head", "tr", "stty", "tty"]


def applets(busybox):
    try:
        out = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
        return [a for a in out.stdout.split() if a and "/" not in a]
    except (OSError, subprocess.CalledProcessError):
        return APPLETS_FALLBACK


def add_dir(tar, name, mode=0o755):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    info.mtime = 0
    tar.addfile(info)


def layer_tar(busybox):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ["bin", "etc", "dev", "proc", "sys", "tmp", "root", "var", "run"]:
            add_dir(tar, d, 0o1777 if d == "tmp" else 0o755)
        with open(busybox, "rb") as f:
            data = f.read()
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(data)
        info.mode = 0o755
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))
        for a in sorted(set(applets(busybox)) - {"busybox"}):
            info = tarfile.TarInfo("bin/" + a)
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            info.mtime = 0
            tar.addfile(info)
        for name, text in [("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"
                                          "nobody:x:65534:65534:nobody:/:/bin/false\n"),
                           ("etc/group", "root:x:0:\nnobody:x:65534:\n")]:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def blob(tar, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))
    return "sha256:" + digest


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--name", default="localhost/wisp-busybox:latest")
    ap.add_argument("--busybox", default="/bin/busybox")
    args = ap.parse_args()

    layer = layer_tar(args.busybox)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "created": "1970-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                   "Cmd": ["sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/oci/mkimage.py"}],
    }, sort_keys=True).encode()
    tmp = args.out + ".tmp"
    with tarfile.open(tmp, "w") as tar:
        layer_ref = blob(tar, layer)
        config_ref = blob(tar, config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_ref, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_ref, "size": len(layer)}],
        }, sort_keys=True).encode()
        manifest_ref = blob(tar, manifest)
        index = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": manifest_ref, "size": len(manifest),
                           "annotations": {"io.containerd.image.name": args.name,
                                           "org.opencontainers.image.ref.name": args.name}}],
        }, sort_keys=True).encode()
        for name, data in [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
                           ("index.json", index)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
