"""Model-written code cannot get out: each test is a real escape attempt that must fail.

Each attempt runs as a solution module's top level (executed when the sandbox imports it). Where it is
safe to do so, the same code is first run *without* the sandbox and must succeed there, so the attempt is
known to be a real one and not a typo the sandbox merely survives.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from emolib import sandbox
from emolib.errors import EmolibError

TEST_TASK = "import solution\n\ndef run():\n    return 1, 1\n"

if sandbox._probe("bwrap") is not None:  # CI installs bubblewrap (.ci/run): there a missing sandbox fails
    if os.environ.get("CI"):
        pytest.fail(f"bubblewrap does not work here ({sandbox._probe('bwrap')}): {sandbox.INSTALL}", pytrace=False)
    pytest.skip(f"bubblewrap does not work here ({sandbox._probe('bwrap')}): {sandbox.INSTALL}", allow_module_level=True)


def attempt(code: str, folder: Path, limits: sandbox.Limits = sandbox.Limits(timeout=5), **kw) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    return sandbox.run_python(folder, {"solution.py": textwrap.dedent(code), "test_task.py": TEST_TASK}, limits, **kw)


def unsandboxed(code: str, folder: Path) -> subprocess.CompletedProcess:
    """The control: the same code in a plain interpreter (only for attempts whose effect is harmless)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "attack.py").write_text(textwrap.dedent(code))
    return subprocess.run([sys.executable, "attack.py"], cwd=folder, capture_output=True, text=True, timeout=30)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the task folder, which the sandboxed code must not touch or see."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


WRITES = {
    "sqlite3": "import sqlite3\nsqlite3.connect({target!r}).execute('create table t (x)')\n",
    "os.open": "import os\nos.close(os.open({target!r}, os.O_CREAT | os.O_WRONLY, 0o644))\n",
    "pathlib": "import pathlib\npathlib.Path({target!r}).write_text('escaped')\n",
    "rename out": "import os\nopen('inside.txt', 'w').write('escaped')\nos.rename('inside.txt', {target!r})\n",
    "replace out": "import os\nopen('inside.txt', 'w').write('escaped')\nos.replace('inside.txt', {target!r})\n",
    "io.FileIO": "import io\nio.FileIO({target!r}, 'w').write(b'escaped')\n",
}


@pytest.mark.parametrize("how", list(WRITES))
def test_no_file_is_created_outside_the_task_folder(how: str, outside: Path, tmp_path: Path) -> None:
    target = str(outside / "escaped")
    code = WRITES[how].format(target=target)
    assert unsandboxed(code, tmp_path / "control").returncode == 0 and os.path.exists(target)  # a real attempt
    os.remove(target)
    result = attempt(code, tmp_path / "task")
    assert not os.path.exists(target) and os.listdir(outside) == []
    assert result["error"] and result["isolation"] == "bwrap"


def test_a_file_outside_is_neither_moved_in_nor_deleted(outside: Path, tmp_path: Path) -> None:
    victim = outside / "victim.txt"
    victim.write_text("keep me")
    code = f"import os, shutil\nshutil.move({str(victim)!r}, 'stolen.txt')\nos.remove({str(victim)!r})\n"
    attempt(code, tmp_path / "task")
    assert victim.read_text() == "keep me" and not (tmp_path / "task" / "stolen.txt").exists()


FORK_EXEC = '''
import _posixsubprocess, os
r, w = os.pipe()
argv = {argv!r}
head = ([a.encode() for a in argv], [argv[0].encode()], True, (), None, None,
        -1, -1, -1, -1, -1, -1, r, w, False, False)
for tail in ((-1, None, None, None, -1, None, False), (-1, None, None, None, -1, None), (None, None, None, -1, None)):
    try:  # the argument list differs between Python versions
        pid = _posixsubprocess.fork_exec(*head, *tail)
        break
    except TypeError:
        continue
os.waitpid(pid, 0)
'''
EXECS = {
    "_posixsubprocess.fork_exec": FORK_EXEC.replace("{argv!r}", "['/usr/bin/touch', {target!r}]"),  # no audit event
    "os.posix_spawn": "import os\npid = os.posix_spawn('/usr/bin/touch', ['touch', {target!r}], {{}})\nos.waitpid(pid, 0)\n",
    "os.fork + execv": "import os\npid = os.fork()\nif pid == 0:\n    os.execv('/usr/bin/touch', ['touch', {target!r}])\nos.waitpid(pid, 0)\n",
    "os.system": "import os\nos.system('touch ' + {target!r})\n",
}


@pytest.mark.parametrize("how", list(EXECS))
def test_no_program_runs(how: str, outside: Path, tmp_path: Path) -> None:
    target = str(outside / "ran")
    code = EXECS[how].format(target=target)
    assert unsandboxed(code, tmp_path / "control").returncode == 0 and os.path.exists(target)  # a real attempt
    os.remove(target)
    result = attempt(code, tmp_path / "task")
    assert not os.path.exists(target)
    assert result["error"] and "PermissionError" in result["error"]


def test_seccomp_alone_refuses_processes_and_programs(tmp_path: Path) -> None:
    """The kernel layer by itself (the audit hook cannot see `_posixsubprocess`): fork and exec fail with EPERM."""
    code = FORK_EXEC.format(argv=["/usr/bin/touch", str(tmp_path / "task" / "ran")])
    result = attempt(code, tmp_path / "task")
    assert result["layers"] == ["seccomp"] and "Operation not permitted" in result["error"]
    assert not (tmp_path / "task" / "ran").exists()


def test_no_connection_reaches_a_server_on_the_host(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(6)
    port = server.getsockname()[1]
    accepted: list[bytes] = []

    def serve() -> None:
        try:
            while True:
                connection, _ = server.accept()
                accepted.append(connection.recv(100))
                connection.close()
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'escaped')\n"
    try:
        assert unsandboxed(code, tmp_path / "control").returncode == 0  # a real attempt
        time.sleep(0.2)
        assert accepted == [b"escaped"]
        result = attempt(code, tmp_path / "task")
        no_seccomp = attempt(code, tmp_path / "task2", seccomp=False)  # the network namespace alone
        time.sleep(0.2)
    finally:
        server.close()
        thread.join(timeout=7)
    assert accepted == [b"escaped"], "the sandboxed attempt reached the server"
    assert result["error"] and no_seccomp["error"]


def _processes() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit()}


def test_a_fork_bomb_is_contained(tmp_path: Path) -> None:
    before = _processes()
    started = time.perf_counter()
    result = attempt("import os\nwhile True:\n    os.fork()\n", tmp_path / "task", sandbox.Limits(timeout=5))
    assert time.perf_counter() - started < 5 and not result["timed_out"]
    assert "PermissionError" in result["error"]
    time.sleep(0.2)
    assert len(_processes() - before) <= 2  # nothing left behind (a stray pytest helper at most)


def test_a_grandchild_dies_at_the_timeout(tmp_path: Path) -> None:
    """Without seccomp (so that it can start one at all, through `fork_exec`, which the audit hook does not
    see), a shell's background job that outlives its parent is killed with the sandbox's PID namespace
    when the timeout kills the run."""
    task = tmp_path / "task"
    code = FORK_EXEC.format(argv=["/bin/sh", "-c", "(sleep 3; echo alive > /task/late.txt) &"]) + "import time\ntime.sleep(30)\n"
    started = time.perf_counter()
    result = attempt(code, task, sandbox.Limits(timeout=1.5, cpu_seconds=30), seccomp=False)
    assert result["timed_out"] and time.perf_counter() - started < 5
    time.sleep(3.5)
    assert not (task / "late.txt").exists()
    control = code.replace("time.sleep(30)", "time.sleep(4)")  # the job does start and write while the run lives
    assert not attempt(control, tmp_path / "control", sandbox.Limits(timeout=8, cpu_seconds=30), seccomp=False)["timed_out"]
    assert (tmp_path / "control" / "late.txt").read_text() == "alive\n"


def test_nothing_outside_is_visible(outside: Path, tmp_path: Path) -> None:
    key = outside / ".ssh" / "id_ed25519"
    key.parent.mkdir()
    key.write_text("SECRET-KEY-MATERIAL")
    code = f'''
    import os
    seen = []
    for path in ({str(key)!r}, {str(outside)!r}, "/etc/passwd", "/etc/shadow", {str(Path.home())!r}, {os.getcwd()!r}):
        try:
            seen.append((path, open(path).read() if os.path.isfile(path) else os.listdir(path)))
        except OSError as error:
            seen.append((path, type(error).__name__))
    open("seen.txt", "w").write(repr(seen) + repr(sorted(os.environ)))
    '''
    attempt(code, tmp_path / "task")
    seen = (tmp_path / "task" / "seen.txt").read_text()
    assert "SECRET-KEY-MATERIAL" not in seen and "root:" not in seen
    assert seen.count("FileNotFoundError") + seen.count("PermissionError") == 5, seen  # all but home (Python inside it)
    assert seen.endswith("['HOME', 'LANG', 'PATH', 'PWD']")  # an empty environment


def test_the_python_installation_is_read_only(tmp_path: Path) -> None:
    stdlib = os.path.dirname(os.__file__)
    result = attempt(f"open({os.path.join(stdlib, 'os.py')!r}, 'a').write('# escaped')\n", tmp_path / "task")
    assert result["error"] and "escaped" not in Path(stdlib, "os.py").read_text()[-20:]


def test_memory_and_file_size_are_limited(tmp_path: Path) -> None:
    big = attempt("x = bytearray(2 << 30)\n", tmp_path / "a", sandbox.Limits(memory_mb=256))
    assert big["error"] and "MemoryError" in big["error"]
    large = attempt("open('big.bin', 'wb').write(b'0' * (4 << 20))\n", tmp_path / "b", sandbox.Limits(file_mb=1))
    assert large["error"] and (tmp_path / "b" / "big.bin").stat().st_size <= 1 << 20


def test_an_honest_run_passes(tmp_path: Path) -> None:
    result = attempt("def add(a, b):\n    return a + b\n", tmp_path / "task")
    assert result == {**result, "error": None, "passed": 1, "total": 1, "timed_out": False, "isolation": "bwrap"}


def test_without_bubblewrap_nothing_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sandbox.OPT_OUT, raising=False)
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap") as error:
        attempt("open('ran.txt', 'w')\n", tmp_path / "task", bwrap="no-such-bwrap")
    assert isinstance(error.value, EmolibError) and "\n" not in str(error.value)
    assert not (tmp_path / "task" / "ran.txt").exists()


def test_the_opt_out_is_loud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sandbox.OPT_OUT, "1")
    with pytest.warns(RuntimeWarning, match="WITHOUT operating-system isolation"):
        result = attempt("def add(a, b):\n    return a + b\n", tmp_path / "task", bwrap="no-such-bwrap")
    assert result["isolation"] == "none" and result["passed"] == 1


def test_bubblewrap_is_on_the_path_where_tests_run_in_ci() -> None:
    assert shutil.which("bwrap") or not os.environ.get("CI")
