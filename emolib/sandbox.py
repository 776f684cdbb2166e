"""Run untrusted (model-written) Python where the operating system, not Python, keeps it in.

Chapter 7's reward-hacking trials execute code a language model wrote. With E4B or 31B that code is
competent, so "sandboxed" has to mean the kernel enforces it. Each run gets, outermost first:

1. **bubblewrap** (`bwrap`): new user, PID, network, IPC, UTS and cgroup namespaces; uid 65534 inside;
   every capability dropped; a root filesystem that holds only read-only binds of the system libraries
   (`/usr`, `/lib*`), the Python installation and `/etc/ld.so.cache`, the task folder read-write at
   `/task`, an empty `/tmp`, minimal `/dev` and `/proc`; an empty environment. The network namespace
   has only its own loopback, so nothing on the host (127.0.0.1 included) can be reached. The
   sandbox dies with its parent, and at the timeout the whole process group is killed: the PID
   namespace takes every descendant with it.
2. **seccomp**, installed by the runner before the solution is imported: `fork`, `vfork`, `clone`,
   `clone3`, `execve`, `execveat`, `socket`, `socketpair`, `ptrace`, `io_uring_*`, namespace, mount,
   key-ring, BPF and cross-process memory calls fail with EPERM (x86-64 and aarch64).
3. **rlimits**: address space, CPU seconds, file size, open files, core dumps and processes
   (`RLIMIT_NPROC`; the kernel does not apply it to a caller whose real user is root, which is why
   layer 2 refuses new processes outright).
4. **an audit hook** (Python's own, a second opinion): sockets, subprocesses, `ctypes`, and writes,
   renames or deletes outside the task folder raise `PermissionError`.
5. **a wall-clock timeout.**

Not enforced: CPU time shares against other processes on the machine (the run is short and
CPU-limited), and the reading of the system libraries and Python's standard library, which the code
needs to run. Where `bwrap` is missing or cannot create namespaces, nothing runs: `SandboxUnavailable`
says how to install it. `EMOLIB_UNSAFE_NO_SANDBOX=1` is the loud opt-out (layers 2-5 only).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import EmolibError

OPT_OUT = "EMOLIB_UNSAFE_NO_SANDBOX"
INSTALL = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
INSIDE = "/task"  # where the task folder appears inside the sandbox
SANDBOX_UID = 65534  # nobody


class SandboxUnavailable(EmolibError):
    """No operating-system isolation here: model-written code is not run."""


@dataclass(frozen=True)
class Limits:
    timeout: float = 5.0  # wall clock, seconds
    memory_mb: int = 512  # address space
    cpu_seconds: int = 5
    file_mb: int = 1  # largest file it may write
    open_files: int = 64
    processes: int = 16  # RLIMIT_NPROC (see the module docstring)


# --- the runner: executed inside, by the sandbox's own interpreter -------------------------------------

_SECCOMP_DENY = {
    # x86-64 (audit arch 0xC000003E)
    "x86_64": (0xC000003E, (57, 58, 56, 435, 59, 322, 41, 53, 101, 425, 426, 427, 272, 308, 165, 166, 155, 161,
                            321, 298, 323, 310, 311, 250, 248, 249, 304, 303)),
    # aarch64 (audit arch 0xC00000B7): the generic table, which has no fork or vfork
    "aarch64": (0xC00000B7, (220, 435, 221, 281, 198, 199, 117, 425, 426, 427, 97, 268, 40, 39, 41, 51, 280, 241,
                             282, 270, 271, 219, 217, 218, 265, 264)),
}

RUNNER = r'''
import json, os, resource, sys
limits, seccomp_on, here = json.loads(sys.argv[1]), sys.argv[2] == "1", os.path.realpath(os.getcwd())
for name, value in (("RLIMIT_AS", limits["memory_mb"] << 20), ("RLIMIT_CPU", limits["cpu_seconds"]),
                    ("RLIMIT_FSIZE", limits["file_mb"] << 20), ("RLIMIT_NOFILE", limits["open_files"]),
                    ("RLIMIT_CORE", 0), ("RLIMIT_NPROC", limits["processes"])):
    if hasattr(resource, name):
        resource.setrlimit(getattr(resource, name), (value, value))


def install_seccomp(table):
    import ctypes
    arch = os.uname().machine
    if arch not in table:
        return "none (no syscall table for " + arch + ")"
    audit_arch, deny = table[arch]
    LOAD, JEQ, JGE, RET = 0x20, 0x15, 0x35, 0x06
    ALLOW, EPERM, KILL = 0x7FFF0000, 0x00050000 | 1, 0x80000000
    program = [(LOAD, 0, 0, 4), (JEQ, 1, 0, audit_arch), (RET, 0, 0, KILL), (LOAD, 0, 0, 0)]
    if arch == "x86_64":
        program += [(JGE, 0, 1, 0x40000000), (RET, 0, 0, EPERM)]  # the x32 ABI's numbers
    for number in deny:
        program += [(JEQ, 0, 1, number), (RET, 0, 0, EPERM)]
    program.append((RET, 0, 0, ALLOW))

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    filters = (Filter * len(program))(*[Filter(*f) for f in program])
    prog = Program(len(program), filters)
    libc = ctypes.CDLL(None, use_errno=True)
    ulong = ctypes.c_ulong
    if libc.prctl(38, ulong(1), ulong(0), ulong(0), ulong(0)) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(22, ulong(2), ctypes.byref(prog), ulong(0), ulong(0)) != 0:  # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")
    return "seccomp"


layers = [install_seccomp(json.loads(sys.argv[3])) if seccomp_on else "no seccomp"]
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def inside(path):
    try:
        return os.path.realpath(os.fsdecode(path)).startswith(here + os.sep)
    except Exception:
        return False


def guard(event, args):
    if event.startswith(("socket.", "subprocess.", "ctypes.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
                         "os.system", "os.kill", "pty.", "webbrowser.", "urllib.", "http.", "ftplib.", "smtplib.")):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1] if len(args) > 1 else "r", args[2] if len(args) > 2 else 0
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & WRITE)
        if writes and not inside(args[0]):
            raise PermissionError(f"sandbox: writing {args[0]!r} outside the task folder is not allowed")
    if event in ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.truncate", "os.chmod", "os.chown", "os.link",
                 "os.symlink", "shutil.rmtree", "shutil.move", "os.utime", "sqlite3.connect") and args:
        if not all(inside(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))):
            raise PermissionError(f"sandbox: {event} outside the task folder is not allowed")
    if event == "import" and args and str(args[0]).split(".")[0] in ("ctypes", "_ctypes", "socket", "_socket",
                                                                    "subprocess", "multiprocessing", "pty"):
        raise PermissionError(f"sandbox: importing {args[0]} is not allowed")


sys.addaudithook(guard)
sys.path.insert(0, here)
result = {"error": None, "passed": 0, "total": 0, "layers": layers}
try:
    import test_task
    result["passed"], result["total"] = test_task.run()
except SystemExit as stop:
    result["error"] = f"SystemExit({stop.code})"
except BaseException as error:
    result["error"] = f"{type(error).__name__}: {str(error)[:200]}"
os.write(1, ("\nRESULT " + json.dumps(result) + "\n").encode())
os._exit(0)
'''


# --- the bubblewrap command ----------------------------------------------------------------------------

def _python() -> tuple[str, list[str]]:
    """The interpreter to run inside, and the folders it needs read-only (its installation)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidate = Path(sys.base_exec_prefix, "bin", version)
    executable = str(candidate if candidate.exists() else Path(os.path.realpath(sys.executable)))
    folders = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix),
               os.path.dirname(os.path.realpath(executable))}
    return executable, sorted(f for f in folders if not f.startswith("/usr/") and f != "/usr")


def bwrap_command(folder: str | Path, argv: list[str], bwrap: str = "bwrap") -> list[str]:
    """`argv` under bubblewrap with `folder` read-write at /task and nothing else of the host writable."""
    command = [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
               "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox", "--clearenv",
               "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8", "--setenv", "HOME", INSIDE,
               "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    command += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for path in _python()[1]:
        command += ["--ro-bind", path, path]
    command += ["--bind", str(Path(folder).resolve()), INSIDE, "--tmpfs", "/tmp", "--dev", "/dev", "--proc", "/proc",
                "--remount-ro", "/", "--chdir", INSIDE, *argv]
    return command


@lru_cache(maxsize=None)
def _probe(bwrap: str) -> str | None:
    """None when bubblewrap can start the sandbox here, else why not (its own words)."""
    if shutil.which(bwrap) is None:
        return f"{bwrap} not found"
    with tempfile.TemporaryDirectory(prefix="emolib-probe-") as folder:
        command = bwrap_command(folder, [_python()[0], "-I", "-S", "-c", "print('sandbox ok')"], bwrap)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as error:
            return str(error)
    if done.returncode != 0 or "sandbox ok" not in done.stdout:
        return (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
    return None


def isolation(bwrap: str = "bwrap") -> str:
    """'bwrap' where bubblewrap works here; 'none' under the explicit opt-out; otherwise one line on how
    to get it (`SandboxUnavailable`). Call it before generating anything that will be executed."""
    if os.environ.get(OPT_OUT) == "1":
        warnings.warn(f"{OPT_OUT}=1: model-written code runs WITHOUT operating-system isolation (seccomp, rlimits "
                      "and an audit hook only): it can read and write your files", RuntimeWarning, stacklevel=2)
        return "none"
    problem = _probe(bwrap)
    if problem is not None:
        raise SandboxUnavailable(f"cannot isolate model-written code ({problem}): {INSTALL}, or set {OPT_OUT}=1 to run it "
                                 "unisolated at your own risk")
    return "bwrap"


def run_python(folder: str | Path, files: dict[str, str], limits: Limits = Limits(), *, seccomp: bool = True,
               bwrap: str = "bwrap") -> dict[str, Any]:
    """Write `files` (must include test_task.py, a module with `run() -> (passed, total)`) into `folder`
    and run it under every layer above. Returns passed, total, error, timed_out, seconds, output
    (truncated), layers and isolation."""
    mode = isolation(bwrap)
    folder = Path(folder)
    for name, text in {**files, "runner.py": RUNNER}.items():
        (folder / name).write_text(text)
    argv = ["runner.py", json.dumps(limits.__dict__), "1" if seccomp else "0", json.dumps(_SECCOMP_DENY)]
    python = _python()[0]
    if mode == "bwrap":
        command = bwrap_command(folder, [python, "-I", "-S", "-B", *argv], bwrap)
        cwd, env = None, None
    else:
        command, cwd, env = [python, "-I", "-S", "-B", *argv], folder, {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = process.communicate(timeout=limits.timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        out, err = process.communicate()
        timed_out = True
    finally:
        if process.poll() is None:
            _kill_group(process.pid)
            process.wait()
    text_out, text_err = out.decode(errors="replace"), err.decode(errors="replace")
    base = {"timed_out": timed_out, "seconds": time.perf_counter() - started, "isolation": mode,
            "output": (text_out + text_err)[-500:]}
    if timed_out:
        return {"passed": 0, "total": 0, "error": "timeout", "layers": [], **base}
    lines = [line for line in text_out.splitlines() if line.startswith("RESULT ")]
    result = json.loads(lines[-1][7:]) if lines else {
        "passed": 0, "total": 0, "layers": [], "error": f"no result (exit {process.returncode}): {text_err[-300:]}"}
    return {**result, **base}


def _kill_group(pid: int) -> None:
    """SIGKILL the run's process group (bubblewrap; its PID namespace dies with it)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
