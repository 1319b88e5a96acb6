"""wgkube VM-test stand-in helper: NOT part of Kubernetes.

Shared by the stand-ins for kubeadm, kubelet, kubectl and containerd that the
wgkube VM-test image carries instead of the real packages (which cannot be
downloaded where the image is built). Every call is appended as one JSON line
to /var/lib/wgkube-standin/calls.jsonl; the guest reporter prints that file on
the second serial port so the host-side test can check who ran what, when.
"""

import fcntl
import hashlib
import json
import os
import shutil
import time

RECORD_DIR = os.environ.get("WGKUBE_STANDIN_ROOT", "") + "/var/lib/wgkube-standin"

# What the stand-in kubeadm says it is, and the sandbox image it expects of the runtime
# (`kubeadm config images list`); the stand-in runtime refuses any other pause image.
STANDIN_VERSION = "v1.37.0-wgkube-standin"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.1"
CALLS = os.path.join(RECORD_DIR, "calls.jsonl")
# Issue 17: what the stand-in apt installed ({package: version}); before any install, every
# package is at the minor of `wgkube.standin_minor=1.36` on the kernel command line (the VM test
# boots its cluster one minor back, to upgrade it), else at STANDIN_VERSION.
PACKAGES = os.path.join(RECORD_DIR, "packages.json")


def cmdline_minor():
    try:
        with open("/proc/cmdline") as f:
            words = f.read().split()
    except OSError:
        return None
    for w in words:
        if w.startswith("wgkube.standin_minor="):
            return w.split("=", 1)[1]
    return None


def installed_packages():
    try:
        with open(PACKAGES) as f:
            return dict(json.load(f))
    except (OSError, ValueError):
        return {}


def installed(package):
    """The version of a Kubernetes package this guest has, as `<tool> version` prints it."""
    v = installed_packages().get(package)
    if v:
        return v
    minor = cmdline_minor()
    return "v%s.0-wgkube-standin" % minor if minor else STANDIN_VERSION


def boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "?"


def option(argv, name):
    """Value of --name VALUE or --name=VALUE in argv, else None."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return None


def subcommand(argv):
    """First argument that is neither a flag nor the value of a known flag."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--config", "-f", "--filename", "--kubeconfig", "-n", "--namespace", "--v", "-v"):
            skip = True
            continue
        if arg.startswith("-"):
            continue
        return arg
    return ""


def record(tool, argv, files=(), **extra):
    """Append one call record; copy each existing file in `files` beside it."""
    os.makedirs(RECORD_DIR, exist_ok=True)
    with open(CALLS, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        n = sum(1 for line in f if line.strip()) + 1
        entry = {
            "n": n,
            "tool": tool,
            "time": round(time.time(), 3),
            "boot_id": boot_id(),
            "argv": list(argv),
            "sub": subcommand(argv),
        }
        copies = {}
        for path in files:
            if path and os.path.isfile(path):
                dest = os.path.join(RECORD_DIR, "%s.%d.%s" % (tool, n, os.path.basename(path)))
                shutil.copyfile(path, dest)
                with open(path, "rb") as src:
                    copies[path] = {"copy": dest, "sha256": hashlib.sha256(src.read()).hexdigest()}
        if copies:
            entry["files"] = copies
        entry.update(extra)
        f.seek(0, os.SEEK_END)
        f.write(json.dumps(entry, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return entry


def note(tool, event, **extra):
    """Append an event line (not a call) such as the stand-in API becoming ready."""
    os.makedirs(RECORD_DIR, exist_ok=True)
    entry = {"tool": tool, "event": event, "time": round(time.time(), 3), "boot_id": boot_id()}
    entry.update(extra)
    with open(CALLS, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(entry, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
