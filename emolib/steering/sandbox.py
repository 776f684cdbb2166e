"""Run untrusted (model-written) Python where the operating system, not Python, keeps it in.

Chapter 7's reward-hacking trials execute code a language model wrote. With E4B or 31B that code is
competent, so "sandboxed" has to mean the kernel enforces it. Each run gets, outermost first:

1. **bubblewrap** (`bwrap`): new user, PID, network, IPC, UTS and cgroup namespaces; uid 65534 inside;
   every capability dropped; the code runs as the namespace's pid 1 (no helper process beside it); a
   root filesystem that holds only read-only binds of the system libraries (`/usr`, `/lib*`), the Python
   installation (its site-packages and the local configuration folders masked empty: `masked_paths`) and
   `/etc/ld.so.cache`; `/task`, an 8 MiB tmpfs (`Limits.task_mb`) holding the run's input files bound
   read-only; 16 MiB `/tmp` and `/dev/shm`; a read-only minimal `/dev` and a **read-only** `/proc`; an
   empty environment, for bubblewrap too. The network namespace has only its own loopback, so nothing on
   the host (127.0.0.1 included) can be reached. The sandbox dies with its parent, and at the timeout the
   whole process group is killed: the PID namespace takes every descendant with it.
2. **seccomp**, a BPF program built on the host (`seccomp_program`) and installed by bubblewrap itself
   (`--seccomp FD`), so the runner never loads ctypes: `fork`, `vfork`, `clone`, `clone3`, `execveat`,
   `socket`, `socketpair`, `ptrace`, `io_uring_*`, namespaces, mounts (old and new API), key-rings, BPF,
   `prctl` (it could clear the parent-death signal), `pidfd_getfd`, cross-process memory, `fallocate`
   (it reserves disk that RLIMIT_FSIZE never sees), SysV shared memory, semaphores and message queues,
   POSIX message queues, `memfd_create`/`memfd_secret` (memory outside RLIMIT_AS), `syslog`, and the
   administrative calls (modules, swap, reboot, clocks, quotas) fail with EPERM (x86-64, aarch64; another
   architecture's calls kill the process). `execve` is allowed, because bubblewrap starts the runner with it
   after installing the filter: a program the code execs replaces the sandbox's only process and keeps every
   kernel layer (namespaces, this filter, rlimits, no_new_privs); the audit hook refuses exec from Python.
3. **rlimits**: address space, CPU seconds, file size (stdout and stderr go to files, so it caps them
   too), open files, core dumps and processes (`RLIMIT_NPROC`, which the kernel does not apply to a
   caller whose real user is root: layer 2 refuses new processes outright).
4. **an audit hook** (Python's own, with everything it reads bound at creation): sockets, subprocesses,
   exec, `ctypes`, `gc`, frame access (`sys._getframe`, and the audited reads of a traceback's or
   generator's frame), reading its own memory (`/proc/self/mem`), and writes, renames or deletes outside
   the task folder raise `PermissionError`.
   With ctypes never loaded no Python code in the sandbox reaches raw memory to switch it off, but it is
   still a tripwire: every guarantee about the host holds without it (the tests run each escape with it off).
5. **a wall-clock timeout** that kills the sandbox's pid 1 by its host pid (bubblewrap's `--info-fd`), and
   with it the whole PID namespace, and returns only once it is gone; and a result the code cannot forge
   without the hook falling first: the runner binds everything it calls after the solution runs, and its one
   RESULT line carries a nonce sent through a pipe closed before the solution is imported. More than one
   RESULT line, a line over `RESULT_MAX_CHARS`, a malformed line or a wrong nonce is graded as tampering
   (`_result`, which never raises on what the code wrote).

What the sandbox can write, in all: 8 MiB in /task, 16 MiB each in /tmp and /dev/shm (tmpfs: host memory),
and its stdout and stderr files (1 MiB each, RLIMIT_FSIZE); what it can allocate: RLIMIT_AS (512 MiB) plus
those tmpfs pages and small kernel buffers (pipes, 64 open files); no cgroup is created (the sandbox shares
the caller's memory cgroup), so the memory bound rests on the limits and the refused calls above.

Where the caller is root, the sandbox's uid 65534 is host root's uid seen through the user namespace
(bubblewrap maps the caller's uid); it has no capabilities, and everything it could write as that owner
outside its tmpfs folders is mounted read-only or not mounted (/proc included: writable sysctls such as
`core_pattern` would otherwise reach the host). Not enforced: the code can read the system libraries and
Python's standard library, which it needs; read-only /proc still shows the host's boot id, uptime, load,
memory and CPU information (`/proc/sys/kernel/random/boot_id`, `/proc/loadavg`, `/proc/meminfo`,
`/proc/cpuinfo`); no CPU share against other processes; without the audit hook (a Python-level layer),
code that walks up to the runner's frame could read the nonce and forge a count. Where `bwrap` is missing
or cannot create namespaces, nothing runs: `SandboxUnavailable` says how to install it.
`EMOLIB_UNSAFE_NO_SANDBOX=1` is the loud opt-out (layers 2-5 only, the filter then installed by the runner
through ctypes, execve refused too).
"""

from __future__ import annotations

import json
import os
import re
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
    task_mb: int = 8  # the sandbox's /task, a tmpfs: everything it may write there together


# --- the runner: executed inside, by the sandbox's own interpreter -------------------------------------

# The syscalls the filter refuses with EPERM. Numbers from 424 on are the same on every architecture: pidfd_open
# (434 is not here: harmless), the new mount API (open_tree, move_mount, fsopen, fsconfig, fsmount, fspick,
# mount_setattr), pidfd_getfd, process_madvise and memfd_secret.
_COMMON = (428, 429, 430, 431, 432, 433, 438, 440, 442, 447)
# What each number is, per architecture (the review reads them by name; `deny_list` checks both tables agree).
_NAMES = ("fork", "vfork", "clone", "clone3", "execve", "execveat", "socket", "socketpair", "ptrace", "io_uring_setup",
          "io_uring_enter", "io_uring_register", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "bpf",
          "perf_event_open", "userfaultfd", "process_vm_readv", "process_vm_writev", "keyctl", "add_key", "request_key",
          "open_by_handle_at", "name_to_handle_at", "prctl",
          # issue 39: disk and memory the rlimits do not count, and the kernel's log
          "fallocate", "syslog", "shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semctl", "semtimedop",
          "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
          "mq_notify", "mq_getsetattr", "memfd_create", "personality", "kcmp", "lookup_dcookie", "quotactl", "acct",
          "swapon", "swapoff", "reboot", "init_module", "finit_module", "delete_module", "kexec_load", "settimeofday",
          "clock_settime", "adjtimex", "sethostname", "setdomainname", "vhangup", "iopl", "ioperm")
_TABLES = {
    # x86-64 (audit arch 0xC000003E); -1: the architecture has no such call
    "x86_64": (0xC000003E, (57, 58, 56, 435, 59, 322, 41, 53, 101, 425, 426, 427, 272, 308, 165, 166, 155, 161, 321,
                            298, 323, 310, 311, 250, 248, 249, 304, 303, 157,
                            285, 103, 29, 30, 31, 67, 64, 65, 66, 220, 68, 69, 70, 71, 240, 241, 242, 243, 244, 245, 319,
                            135, 312, 212, 179, 163, 167, 168, 169, 175, 313, 176, 246, 164, 227, 159, 170, 171, 153,
                            172, 173)),
    # aarch64 (audit arch 0xC00000B7): the generic table, which has no fork, vfork, iopl or ioperm
    "aarch64": (0xC00000B7, (-1, -1, 220, 435, 221, 281, 198, 199, 117, 425, 426, 427, 97, 268, 40, 39, 41, 51, 280,
                             241, 282, 270, 271, 219, 217, 218, 265, 264, 167,
                             47, 116, 194, 196, 195, 197, 190, 193, 191, 192, 186, 189, 188, 187, 180, 181, 182, 183,
                             184, 185, 279, 92, 272, 18, 60, 89, 224, 225, 142, 105, 273, 106, 104, 170, 112, 171, 161,
                             162, 58, -1, -1)),
}
# bubblewrap starts the runner with execve after it installs the filter, so the filter it installs cannot refuse
# execve: a program the code execs replaces the sandbox's only process and keeps every kernel layer (namespaces,
# this filter, rlimits, no_new_privs); the audit hook refuses exec from Python. The in-process filter of the
# unisolated opt-out refuses it too.
_STARTS_THE_RUNNER = {"execve"}


def deny_list(arch: str | None = None, *, runner_starts: bool = True) -> tuple[int, list[int]]:
    """The audit architecture and the syscall numbers the filter refuses on `arch` (this machine's by default)."""
    arch = arch or os.uname().machine
    if arch not in _TABLES:
        raise SandboxUnavailable(f"no seccomp syscall table for {arch}; emolib knows x86_64 and aarch64")
    audit_arch, numbers = _TABLES[arch]
    assert len(numbers) == len(_NAMES), "the syscall tables and their names disagree"
    skip = _STARTS_THE_RUNNER if runner_starts else set()
    return audit_arch, [n for name, n in zip(_NAMES, numbers) if n >= 0 and name not in skip] + list(_COMMON)


def seccomp_program(arch: str | None = None, *, runner_starts: bool = True) -> bytes:
    """The classic-BPF seccomp filter, built on the host, as the `struct sock_filter` array bubblewrap's
    `--seccomp FD` reads: another architecture's calls are killed, the x32 ABI's and the denied calls get EPERM."""
    import struct

    arch = arch or os.uname().machine
    audit_arch, deny = deny_list(arch, runner_starts=runner_starts)
    LOAD, JEQ, JGE, RET = 0x20, 0x15, 0x35, 0x06
    ALLOW, EPERM, KILL = 0x7FFF0000, 0x00050000 | 1, 0x80000000
    program = [(LOAD, 0, 0, 4), (JEQ, 1, 0, audit_arch), (RET, 0, 0, KILL), (LOAD, 0, 0, 0)]
    if arch == "x86_64":
        program += [(JGE, 0, 1, 0x40000000), (RET, 0, 0, EPERM)]  # the x32 ABI's numbers
    for number in deny:
        program += [(JEQ, 0, 1, number), (RET, 0, 0, EPERM)]
    program.append((RET, 0, 0, ALLOW))
    return b"".join(struct.pack("=HBBI", *instruction) for instruction in program)


RUNNER = r"""
import os, sys


def main(argv=sys.argv, write=os.write, exit=os._exit, int=int, str=str, type=type, tuple=tuple, len=len,
         BaseException=BaseException, SystemExit=SystemExit):
    # Everything run after the solution's code is bound here first: its locals cannot be rebound from Python
    # (a function's fast locals), so a solution that patches os.write, json or builtins cannot forge the line;
    # the line carries a nonce the host sent through a pipe that is closed before the solution runs.
    import resource
    limits = {k: int(v) for k, v in (item.split("=") for item in argv[1].split(","))}
    in_process_filter, hook_on, here = argv[2], argv[3] == "1", os.path.realpath(os.getcwd())
    nonce = os.read(int(argv[4]), 64).decode()
    os.close(int(argv[4]))
    for name, value in (("RLIMIT_AS", limits["memory_mb"] << 20), ("RLIMIT_CPU", limits["cpu_seconds"]),
                        ("RLIMIT_FSIZE", limits["file_mb"] << 20), ("RLIMIT_NOFILE", limits["open_files"]),
                        ("RLIMIT_CORE", 0), ("RLIMIT_NPROC", limits["processes"])):
        if hasattr(resource, name):
            resource.setrlimit(getattr(resource, name), (value, value))
    if in_process_filter != "-":  # the unisolated opt-out only: bubblewrap installs the filter otherwise
        install_filter(bytes.fromhex(in_process_filter))
    layers = ["seccomp"] if seccomp_mode() == "2" else ["no seccomp"]
    if hook_on:
        sys.addaudithook(make_guard(here))
        layers.append("audit hook")
    sys.path.insert(0, here)
    passed = total = 0
    error = ""
    try:
        import test_task
        counts = test_task.run()
        if type(counts) is not tuple or len(counts) != 2 or type(counts[0]) is not int or type(counts[1]) is not int:
            error = "tampered result: the tests' count is not two numbers"
        else:
            passed, total = counts
    except SystemExit as stop:
        error = "SystemExit"
    except BaseException as caught:
        try:
            error = (type(caught).__name__ + ": " + str(caught))[:200]
        except BaseException:
            error = "an exception that cannot be printed"
    write(1, ("\nRESULT %s %d %d %s %s\n" % (nonce, passed, total, ",".join(layers).replace(" ", "-"),
                                              error.encode("utf-8", "replace").hex() or "-")).encode())
    exit(0)


def seccomp_mode():
    # the kernel's own word: 2 when a seccomp filter is in force on this process
    for line in open("/proc/self/status"):
        if line.startswith("Seccomp:"):
            return line.split()[1]
    return "0"


def install_filter(program):
    import ctypes

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    prog = Program(len(program) // 8, program)
    libc = ctypes.CDLL(None, use_errno=True)
    ulong = ctypes.c_ulong
    if libc.prctl(38, ulong(1), ulong(0), ulong(0), ulong(0)) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(22, ulong(2), ctypes.byref(prog), ulong(0), ulong(0)) != 0:  # PR_SET_SECCOMP, FILTER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def make_guard(here, realpath=os.path.realpath, fsdecode=os.fsdecode, sep=os.sep, PathLike=os.PathLike,
               isinstance=isinstance, getattr=getattr, any=any, all=all, str=str, bytes=bytes, int=int,
               Error=PermissionError, WRITE=os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC):
    # The audit hook, with everything it reads bound here: the solution cannot rebind a global to open it.
    def inside(path):
        try:
            return realpath(fsdecode(path)).startswith(here + sep)
        except Exception:
            return False

    def own_memory(path):  # /proc/self/mem (or pagemap) would show the runner's nonce
        try:
            real = realpath(fsdecode(path))
        except Exception:
            return True
        return real.startswith("/proc/") and real.rsplit(sep, 1)[-1] in ("mem", "pagemap")

    def guard(event, args):
        if event.startswith(("socket.", "subprocess.", "ctypes.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
                             "os.system", "os.kill", "pty.", "webbrowser.", "urllib.", "http.", "ftplib.", "smtplib.",
                             "gc.get_", "sys._getframe", "sys.settrace", "sys.setprofile", "sys._current_frames",
                             "sys.addaudithook", "object.__getattr__")):
            # object.__getattr__: the reads CPython audits (a traceback's or generator's frame, a function's
            # code), the way from the solution's code up to the runner's frame
            raise Error(f"sandbox: {event} is not allowed")
        if event == "object.__setattr__" and args and getattr(args[0], "__code__", None) is not None:
            raise Error(f"sandbox: changing a function ({args[1]}) is not allowed")
        if event == "open" and args and isinstance(args[0], (str, bytes, PathLike)):
            if own_memory(args[0]):
                raise Error("sandbox: reading the process's memory is not allowed")
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


main()
"""


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
RESULT_MAX_CHARS = 1000  # a longer RESULT line is tampering (the runner's own is far shorter)
_RESULT_LINE = re.compile(r"RESULT ([0-9a-f]{32}) (\d{1,6}) (\d{1,6}) ([a-z,-]{1,60}) (-|[0-9a-f]{2,800})")


def masked_paths() -> list[str]:
    """Folders under the bound system and Python installation that the sandbox sees empty: the base
    interpreter's site-packages (installed packages, never the standard library) and the local configuration
    folders (`/usr/local/etc`, `<prefix>/etc`)."""
    import sysconfig

    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = {"/usr/local/etc", os.path.join(sys.base_prefix, "etc"), "/usr/lib/python3/dist-packages",
                  f"/usr/local/lib/{version}/dist-packages", f"/usr/local/lib/{version}/site-packages",
                  f"/usr/lib/{version}/site-packages"}
    for key in ("purelib", "platlib"):
        candidates.add(sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})[key])
    stdlib = os.path.realpath(os.path.dirname(os.__file__))
    found = {os.path.realpath(path) for path in candidates if os.path.isdir(path)}
    return sorted(path for path in found if path != stdlib and not stdlib.startswith(path + os.sep))


def bwrap_command(folder: str | Path, argv: list[str], bwrap: str = "bwrap", info_fd: int | None = None,
                  seccomp_fd: int | None = None, task_bytes: int = 8 << 20) -> list[str]:
    """`argv` under bubblewrap: /task is a `task_bytes` tmpfs (every write path of the sandbox has a size: /task,
    /tmp, /dev/shm, and the host's stdout/stderr files under RLIMIT_FSIZE), the files of `folder` bound into it
    read-only, and nothing of the host writable. `seccomp_fd`: bubblewrap installs that BPF program itself, so
    the runner never loads ctypes.

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
    for path in masked_paths():
        command += ["--size", "4096", "--tmpfs", path, "--remount-ro", path]
    command += ["--size", str(task_bytes), "--tmpfs", INSIDE]
    for file in sorted(Path(folder).resolve().iterdir()):
        if file.is_file():
            command += ["--ro-bind", str(file), f"{INSIDE}/{file.name}"]
    command += ["--size", str(TMPFS_BYTES), "--tmpfs", "/tmp",
                "--dev", "/dev", "--size", str(TMPFS_BYTES), "--tmpfs", "/dev/shm", "--remount-ro", "/dev",
                "--proc", "/proc", "--remount-ro", "/proc", "--remount-ro", "/", "--chdir", INSIDE,
                *(["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []),
                *(["--info-fd", str(info_fd)] if info_fd is not None else []), *argv]
    return command


def _pipe_with(data: bytes) -> int:
    """The read end of a pipe that holds `data` and is closed for writing (what bubblewrap and the runner read)."""
    read, write = os.pipe()
    try:
        os.write(write, data)  # far below a pipe's buffer: never blocks
    finally:
        os.close(write)
    return read


@lru_cache(maxsize=None)
def _probe(bwrap: str) -> str | None:
    """None when bubblewrap can start the sandbox here, with the host-built seccomp filter, else why not."""
    if shutil.which(bwrap) is None:
        return f"{bwrap} not found"
    try:
        program = seccomp_program()
    except SandboxUnavailable as error:
        return str(error)
    with tempfile.TemporaryDirectory(prefix="emolib-probe-") as folder:
        filter_fd = _pipe_with(program)
        command = bwrap_command(folder, [_python()[0], "-I", "-S", "-c", "print('sandbox ok')"], bwrap, seccomp_fd=filter_fd)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                                  pass_fds=(filter_fd,))
        except (OSError, subprocess.TimeoutExpired) as error:
            return str(error)
        finally:
            os.close(filter_fd)
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
    """A fresh host folder for one run's input files (bound read-only into the sandbox's /task), inside a private
    (0700) parent; removed afterwards whatever happened (a tree too deep for `shutil.rmtree`'s recursion,
    folders without permissions: under the opt-out the code writes here). `run_python` returns only when nothing
    of the sandbox is alive, so nothing races the removal."""
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


TAMPERED = "tampered result"  # how `_result` begins every verdict on output the code forged or broke


def _result(stdout: str, stderr: str, returncode: int | None, nonce: str) -> dict[str, Any]:
    """The runner's RESULT line, read defensively: the code under test shares the runner's stdout and may
    have written anything there. Exactly one RESULT line, at most RESULT_MAX_CHARS long, in the runner's
    format and with this run's nonce; anything else is tampering (never an exception of the host's)."""
    def tampered(why: str) -> dict[str, Any]:
        return {"passed": 0, "total": 0, "layers": [], "error": f"{TAMPERED}: {why}"}

    try:
        lines = [line for line in stdout.splitlines() if line.startswith("RESULT")]
        if not lines:
            return {"passed": 0, "total": 0, "layers": [], "error": f"no result (exit {returncode}): {stderr[-300:]}"}
        if len(lines) > 1:
            return tampered(f"{len(lines)} RESULT lines (the runner writes one)")
        if len(lines[0]) > RESULT_MAX_CHARS:
            return tampered(f"a RESULT line of {len(lines[0]):,} characters")
        found = _RESULT_LINE.fullmatch(lines[0])
        if found is None:
            return tampered("a malformed RESULT line")
        if found.group(1) != nonce:
            return tampered("a RESULT line without this run's nonce (forged)")
        passed, total = int(found.group(2)), int(found.group(3))
        if passed > total:
            return tampered(f"{passed} of {total} tests passed")
        error = None if found.group(5) == "-" else bytes.fromhex(found.group(5)).decode("utf-8", "replace")
        return {"passed": passed, "total": total, "error": error,
                "layers": [layer.replace("-", " ") for layer in found.group(4).split(",")]}
    except Exception as problem:  # noqa: BLE001 (RecursionError, MemoryError, ...: whatever the text provokes)
        return tampered(f"unreadable output ({type(problem).__name__})")


def run_python(folder: str | Path, files: dict[str, str], limits: Limits = Limits(), *, seccomp: bool = True,
               audit_hook: bool = True, bwrap: str = "bwrap") -> dict[str, Any]:
    """Write `files` (must include test_task.py, a module with `run() -> (passed, total)`) into `folder`
    and run it under every layer above. Returns passed, total, error, timed_out, seconds, output
    (the last 500 characters of stdout and stderr), stdout (its last 4,000), layers and isolation.
    `seccomp=False` / `audit_hook=False` switch one layer off, for the tests that prove each of the others
    holds alone."""
    import secrets

    mode = isolation(bwrap)
    folder = Path(folder)
    for name, text in {**files, "runner.py": RUNNER}.items():
        (folder / name).write_text(text)
    nonce = secrets.token_hex(16)
    nonce_fd = _pipe_with(nonce.encode())
    filter_fd = _pipe_with(seccomp_program()) if seccomp and mode == "bwrap" else None
    in_process = seccomp_program(runner_starts=False).hex() if seccomp and mode != "bwrap" else "-"
    numbers = ",".join(f"{k}={getattr(limits, k)}" for k in ("memory_mb", "cpu_seconds", "file_mb", "open_files", "processes"))
    argv = ["runner.py", numbers, in_process, "1" if audit_hook else "0", str(nonce_fd)]
    python = _python()[0]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # bubblewrap itself gets no secrets either
    info_read, info_write = os.pipe()  # bubblewrap names the sandbox's pid 1 here (its host pid)
    passed_fds = tuple(fd for fd in (info_write, nonce_fd, filter_fd) if fd is not None)
    if mode == "bwrap":
        command, cwd = bwrap_command(folder, [python, "-I", "-S", "-B", *argv], bwrap, info_fd=info_write,
                                     seccomp_fd=filter_fd, task_bytes=limits.task_mb << 20), None
    else:
        command, cwd = [python, "-I", "-S", "-B", *argv], folder
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="emolib-output-") as outputs:
        # output goes to files, not pipes: RLIMIT_FSIZE caps them, so a flood cannot fill the host's memory
        with open(Path(outputs, "stdout"), "wb") as out, open(Path(outputs, "stderr"), "wb") as err:
            try:
                process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                           start_new_session=True, pass_fds=passed_fds)
            finally:
                for fd in passed_fds:
                    os.close(fd)
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
            "output": (text_out + text_err)[-500:], "stdout": text_out[-4000:]}
    if timed_out:
        return {"passed": 0, "total": 0, "error": "timeout", "layers": [], **base}
    return {**_result(text_out, text_err, process.returncode, nonce), **base}


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
