"""Run untrusted (model-written) Python where the operating system, not Python, keeps it in.

Chapter 7's reward-hacking trials execute code a language model wrote. With E4B or 31B that code is
competent, so "sandboxed" has to mean the kernel enforces it. Each run gets, outermost first:

1. **bubblewrap** (`bwrap`): new user, PID, network, IPC, UTS and cgroup namespaces; uid 65534 inside;
   every capability dropped; the code runs as the namespace's pid 1 (no helper process beside it); a
   root filesystem that holds only read-only binds of the system libraries (`/usr`, `/lib*`), the Python
   installation and `/etc/ld.so.cache`, the task folder read-write at `/task`, a 16 MiB `/tmp` and
   `/dev/shm`, a read-only minimal `/dev`, and a **read-only** `/proc`; an empty environment, for bubblewrap too. The
   network namespace has only its own loopback, so nothing on the host (127.0.0.1 included) can be
   reached. The sandbox dies with its parent, and at the timeout the whole process group is killed: the
   PID namespace takes every descendant with it.
2. **seccomp**, installed by the runner before the solution is imported: `fork`, `vfork`, `clone`,
   `clone3`, `execve`, `execveat`, `socket`, `socketpair`, `ptrace`, `io_uring_*`, namespace, mount (old
   and new API), key-ring, BPF, `prctl` (it could clear the parent-death signal), `pidfd_getfd` and
   cross-process memory calls fail with EPERM (x86-64, aarch64).
3. **rlimits**: address space, CPU seconds, file size (stdout and stderr go to files, so it caps them
   too), open files, core dumps and processes (`RLIMIT_NPROC`, which the kernel does not apply to a
   caller whose real user is root: layer 2 refuses new processes outright).
4. **an audit hook** (Python's own, with everything it reads bound at creation): sockets, subprocesses,
   `ctypes`, `gc`, frame access, and writes, renames or deletes outside the task folder raise
   `PermissionError`. It is a tripwire, not a wall: Python code that reaches raw memory can switch it off,
   so every guarantee above holds without it (the tests run each escape with it off too).
5. **a wall-clock timeout** that kills the sandbox's pid 1 by its host pid (bubblewrap's `--info-fd`), and
   with it the whole PID namespace, and returns only once it is gone; a result line read defensively
   (`_result`): output the code forged or broke is reported as tampering, never trusted as a count.

Where the caller is root, the sandbox's uid 65534 is host root's uid seen through the user namespace
(bubblewrap maps the caller's uid); it has no capabilities, and everything it could write as that owner
outside the task folder is mounted read-only or not mounted (/proc included: writable sysctls such as
`core_pattern` would otherwise reach the host). Not enforced: the code can read the system libraries
and Python's standard library, which it needs; the task folder has no quota beyond the file-size limit
and the timeout; no CPU share against other processes. Where `bwrap` is missing or cannot create
namespaces, nothing runs: `SandboxUnavailable` says how to install it. `EMOLIB_UNSAFE_NO_SANDBOX=1` is
the loud opt-out (layers 2-5 only).
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
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from ..errors import EmolibError

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

# numbers from 424 on are the same on every architecture: the new mount API (open_tree, move_mount, fsopen,
# fsconfig, fsmount, fspick, mount_setattr), pidfd_getfd and process_madvise
_COMMON = (428, 429, 430, 431, 432, 433, 438, 440, 442)
_SECCOMP_DENY = {
    # x86-64 (audit arch 0xC000003E)
    "x86_64": (0xC000003E, (57, 58, 56, 435, 59, 322, 41, 53, 101, 425, 426, 427, 272, 308, 165, 166, 155, 161,
                            321, 298, 323, 310, 311, 250, 248, 249, 304, 303, 157, *_COMMON)),
    # aarch64 (audit arch 0xC00000B7): the generic table, which has no fork or vfork
    "aarch64": (0xC00000B7, (220, 435, 221, 281, 198, 199, 117, 425, 426, 427, 97, 268, 40, 39, 41, 51, 280, 241,
                             282, 270, 271, 219, 217, 218, 265, 264, 167, *_COMMON)),
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


def make_guard(here, realpath=os.path.realpath, fsdecode=os.fsdecode, sep=os.sep, PathLike=os.PathLike,
               isinstance=isinstance, getattr=getattr, any=any, all=all, str=str, bytes=bytes, int=int,
               Error=PermissionError, WRITE=os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC):
    """The audit hook, with everything it reads bound here: the solution cannot rebind a global to open it."""
    def inside(path):
        try:
            return realpath(fsdecode(path)).startswith(here + sep)
        except Exception:
            return False

    def guard(event, args):
        if event.startswith(("socket.", "subprocess.", "ctypes.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
                             "os.system", "os.kill", "pty.", "webbrowser.", "urllib.", "http.", "ftplib.", "smtplib.",
                             "gc.get_", "sys._getframe", "sys.settrace", "sys.setprofile", "sys._current_frames")):
            raise Error(f"sandbox: {event} is not allowed")
        if event == "object.__setattr__" and args and getattr(args[0], "__code__", None) is not None:
            raise Error(f"sandbox: changing a function ({args[1]}) is not allowed")
        if event == "open" and args and isinstance(args[0], (str, bytes, PathLike)):
            mode, flags = args[1] if len(args) > 1 else "r", args[2] if len(args) > 2 else 0
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & WRITE)
            if writes and not inside(args[0]):
                raise Error(f"sandbox: writing {args[0]!r} outside the task folder is not allowed")
        if event in ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.truncate", "os.chmod", "os.chown", "os.link",
                     "os.symlink", "shutil.rmtree", "shutil.move", "os.utime", "sqlite3.connect") and args:
            if not all(inside(a) for a in args[:2] if isinstance(a, (str, bytes, PathLike))):
                raise Error(f"sandbox: {event} outside the task folder is not allowed")
        if event == "import" and args and str(args[0]).split(".")[0] in ("ctypes", "_ctypes", "socket", "_socket",
                                                                        "subprocess", "multiprocessing", "pty", "gc"):
            raise Error(f"sandbox: importing {args[0]} is not allowed")
    return guard


if sys.argv[4] == "1":
    sys.addaudithook(make_guard(here))
    layers.append("audit hook")
del make_guard, install_seccomp
for name in [n for n in sys.modules if n == "ctypes" or n.startswith(("ctypes.", "_ctypes"))]:
    del sys.modules[name]  # the seccomp step imported it: importing it again must pass the hook
sys.path.insert(0, here)
result = {"error": None, "passed": 0, "total": 0, "layers": layers}
try:
    import test_task
    result["passed"], result["total"] = test_task.run()
except SystemExit as stop:
    result["error"] = f"SystemExit({stop.code})"
except BaseException as error:
    result["error"] = f"{type(error).__name__}: {str(error)[:200]}"
os.write(1, ("\nRESULT " + json.dumps(result, default=repr) + "\n").encode())
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


TMPFS_BYTES = 16 << 20  # the sandbox's /tmp and /dev/shm (memory the address-space limit does not count)
OUTPUT_BYTES = 64 << 10  # how much of the run's stdout and stderr the host reads back


def bwrap_command(folder: str | Path, argv: list[str], bwrap: str = "bwrap", info_fd: int | None = None) -> list[str]:
    """`argv` under bubblewrap with `folder` read-write at /task and nothing else of the host writable.

    The command runs as pid 1 of its PID namespace (`--as-pid-1`: no unfiltered helper process beside it),
    and /proc is read-only: where the caller is root, the sandbox's uid maps to host root, and a writable
    /proc would let it write global sysctls (`core_pattern`) or another process's memory."""
    command = [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--as-pid-1",
               "--cap-drop", "ALL", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox",
               "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8", "--setenv", "HOME", INSIDE,
               "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    command += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for path in _python()[1]:
        command += ["--ro-bind", path, path]
    command += ["--bind", str(Path(folder).resolve()), INSIDE, "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp",
                "--dev", "/dev", "--size", str(TMPFS_BYTES), "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
                "--proc", "/proc", "--remount-ro", "/proc", "--remount-ro", "/", "--chdir", INSIDE,
                *(["--info-fd", str(info_fd)] if info_fd is not None else []), *argv]
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


@contextmanager
def task_folder(prefix: str = "emolib-task-") -> Iterator[Path]:
    """A fresh host folder for one run, inside a private (0700) parent, so that whatever modes the code sets
    on it or its files, no other user of the host can reach them; removed afterwards whatever the code left
    (a tree too deep for `shutil.rmtree`'s recursion, folders without permissions). `run_python` returns
    only when nothing of the sandbox is alive, so nothing races the removal."""
    parent = Path(tempfile.mkdtemp(prefix=prefix))
    folder = parent / "task"
    folder.mkdir()
    try:
        yield folder
    finally:
        # directories only, never following links: `find` lists without following, `chmod` gets real dirs
        subprocess.run(["find", str(parent), "-type", "d", "-exec", "chmod", "u+rwx", "{}", "+"], capture_output=True)
        done = subprocess.run(["rm", "-rf", "--", str(parent)], capture_output=True, text=True)
        if done.returncode != 0 or parent.exists():
            warnings.warn(f"could not remove the sandbox's task folder {parent}: {done.stderr.strip()[-200:]}",
                          RuntimeWarning, stacklevel=3)


def _result(stdout: str, stderr: str, returncode: int | None) -> dict[str, Any]:
    """The runner's RESULT line, read defensively: the code under test shares the runner's stdout and may
    have written anything there."""
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        return {"passed": 0, "total": 0, "layers": [], "error": f"no result (exit {returncode}): {stderr[-300:]}"}
    try:
        result = json.loads(lines[-1][7:])
        passed, total, error, layers = result["passed"], result["total"], result["error"], result["layers"]
        if not (isinstance(passed, int) and isinstance(total, int) and 0 <= passed <= total
                and (error is None or isinstance(error, str)) and isinstance(layers, list)):
            raise ValueError("fields of the wrong type")
    except (ValueError, KeyError, TypeError) as problem:
        return {"passed": 0, "total": 0, "layers": [], "error": f"malformed result line ({problem}): tampered output"}
    return {"passed": passed, "total": total, "error": error, "layers": [str(x) for x in layers]}


def run_python(folder: str | Path, files: dict[str, str], limits: Limits = Limits(), *, seccomp: bool = True,
               audit_hook: bool = True, bwrap: str = "bwrap") -> dict[str, Any]:
    """Write `files` (must include test_task.py, a module with `run() -> (passed, total)`) into `folder`
    and run it under every layer above. Returns passed, total, error, timed_out, seconds, output
    (truncated), layers and isolation. `seccomp=False` / `audit_hook=False` switch one layer off, for
    the tests that prove each of the others holds alone."""
    mode = isolation(bwrap)
    folder = Path(folder)
    for name, text in {**files, "runner.py": RUNNER}.items():
        (folder / name).write_text(text)
    argv = ["runner.py", json.dumps(limits.__dict__), "1" if seccomp else "0", json.dumps(_SECCOMP_DENY),
            "1" if audit_hook else "0"]
    python = _python()[0]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # bubblewrap itself gets no secrets either
    info_read, info_write = os.pipe()  # bubblewrap names the sandbox's pid 1 here (its host pid)
    if mode == "bwrap":
        command, cwd = bwrap_command(folder, [python, "-I", "-S", "-B", *argv], bwrap, info_fd=info_write), None
    else:
        command, cwd = [python, "-I", "-S", "-B", *argv], folder
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emolib-output-") as outputs:
        # output goes to files, not pipes: RLIMIT_FSIZE caps them, so a flood cannot fill the host's memory
        with open(Path(outputs, "stdout"), "wb") as out, open(Path(outputs, "stderr"), "wb") as err:
            try:
                process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                           start_new_session=True, pass_fds=(info_write,))
            finally:
                os.close(info_write)
            child = _child_pid(info_read, started + min(limits.timeout, 5.0)) if mode == "bwrap" else process.pid
            os.close(info_read)
            try:
                process.wait(timeout=max(0.0, limits.timeout - (time.perf_counter() - started)))
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                if process.poll() is None:
                    # the sandbox's pid 1 directly, not only through bubblewrap: it may have left bwrap's session
                    # and process group; while bwrap lives it has not reaped it, so the pid is still that process
                    _kill(child)
                    _kill_group(process.pid)
                    process.wait()
                _wait_gone(child)
        text_out, text_err = (_tail(Path(outputs, name)) for name in ("stdout", "stderr"))
    base = {"timed_out": timed_out, "seconds": time.perf_counter() - started, "isolation": mode,
            "output": (text_out + text_err)[-500:]}
    if timed_out:
        return {"passed": 0, "total": 0, "error": "timeout", "layers": [], **base}
    return {**_result(text_out, text_err, process.returncode), **base}


def _tail(path: Path) -> str:
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - OUTPUT_BYTES))
        return handle.read().decode(errors="replace")


def _child_pid(fd: int, deadline: float) -> int | None:
    """The host pid of the sandbox's pid 1, from bubblewrap's `--info-fd` JSON ({"child-pid": N, ...})."""
    import select

    data = b""
    while time.perf_counter() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.perf_counter()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
        try:
            return int(json.loads(data)["child-pid"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def _kill(pid: int | None) -> None:
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_gone(pid: int | None, within: float = 5.0) -> None:
    """Until the sandbox's pid 1 (and with it its PID namespace) is gone, so no code outlives the run."""
    stop = time.perf_counter() + within
    while pid and os.path.exists(f"/proc/{pid}") and time.perf_counter() < stop:
        try:
            if open(f"/proc/{pid}/stat").read().split(") ")[-1][:1] == "Z":  # a zombie: ended, awaiting its reaper
                return
        except OSError:
            return
        _kill(pid)
        time.sleep(0.01)


def _kill_group(pid: int) -> None:
    """SIGKILL the run's process group (bubblewrap; its PID namespace dies with it)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
