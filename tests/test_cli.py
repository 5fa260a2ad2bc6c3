"""End-to-end tests of the ``pidfd`` command, through a real subprocess of it.

The command under test is the console script installed next to this
interpreter (the venv's), else ``python -m pidfd``. Children that must stay
alive until the test is ready block on a pipe instead of sleeping, so no
test depends on timing except the ``--timeout`` cases.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _helpers import kernel_at_least
from pidfd import PidFd
from pidfd._cli import main
from pidfd._native import _REAP_GRACE

# Each test runs the pidfd command in a child process (some call main() here
# with redirected stdio): four threads at once would stress no state of this
# process, only the machine.
pytestmark = pytest.mark.thread_unsafe(reason="runs the pidfd command as a child process")

_script = Path(sys.executable).with_name("pidfd")
PIDFD = [str(_script)] if _script.exists() else [sys.executable, "-m", "pidfd"]

# Generous: a loaded CI machine can take a while to start Python.
LIMIT = 20.0


def cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``pidfd ARGS`` to completion; capture stdout and stderr as text."""
    return subprocess.run(
        [*PIDFD, *args], capture_output=True, text=True, timeout=LIMIT, check=False, **kwargs
    )


def py(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


@contextlib.contextmanager
def started(argv: list[str], **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Popen that is always killed and reaped, its pipes closed, even on failure."""
    with subprocess.Popen(argv, **kwargs) as proc:
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def read_until(fd: int, needle: bytes, timeout: float = LIMIT) -> bytes:
    """Read from ``fd`` until ``needle`` shows up; fail on EOF or timeout."""
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {needle!r}; got {data!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the pty's other side is closed
                chunk = b""
            assert chunk, f"EOF before {needle!r}; got {data!r}"
            data += chunk
    return data


def read_all(fd: int, timeout: float = LIMIT) -> bytes:
    """Read ``fd`` to EOF (or EIO, for a pty whose slave side has closed)."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out reading; got {data!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return data
            if not chunk:
                return data
            data += chunk


def last_json(stdout: str) -> dict[str, Any]:
    """The JSON report: the last line (the command's own output comes first)."""
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def missing_pid() -> int:
    """A pid that cannot exist: pids are always below kernel.pid_max."""
    return int(Path("/proc/sys/kernel/pid_max").read_text())


# A child that waits until its stdin closes, then exits with the code given.
BLOCKED = "import sys; sys.stdin.read(); sys.exit({code})"


# ---------------------------------------------------------------- help


@pytest.mark.parametrize("sub", [[], ["run"], ["wait"], ["info"]])
def test_help(sub: list[str]) -> None:
    result = cli(*sub, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: pidfd")
    if sub:
        assert "exit status:" in result.stdout


def test_python_dash_m_runs_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pidfd", "run", "--", sys.executable, "-c", "raise SystemExit(4)"],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )
    assert result.returncode == 4, result.stderr
    assert "exited with code 4" in result.stderr


# ----------------------------------------------------------------- run


@pytest.mark.parametrize("code", [0, 3])
def test_run_exit_code(code: int) -> None:
    result = cli("run", "--", *py(f"print('out'); raise SystemExit({code})"))
    assert result.returncode == code, result.stderr
    assert result.stdout == "out\n"  # stdout is the command's alone
    assert f"command exited with code {code}" in result.stderr
    assert "max resident set size" in result.stderr
    assert "\x1b[" not in result.stderr  # no status line without a terminal


def test_run_killed_by_signal_dies_by_it() -> None:
    # As timeout(1): the wrapper dies by the signal that killed the command,
    # so its parent sees the same thing as without the wrapper.
    result = cli("run", "--", *py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert "killed by signal 9 (SIGKILL)" in result.stderr
    assert "exit status:               137" in result.stderr  # what a shell shows


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGSEGV])
def test_run_shell_sees_128_plus_n(sig: signal.Signals, tmp_path: Path) -> None:
    # SIGSEGV dumps core by default: pidfd turns its own core dumps off
    # before dying by it, so no core file of pidfd's appears in its cwd.
    line = shlex.join([*PIDFD, "run", "--", *py(f"import os; os.kill(os.getpid(), {int(sig)})")])
    result = subprocess.run(
        ["sh", "-c", f"ulimit -c 0; {line}; echo status=$?"],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
        cwd=tmp_path,
    )
    assert f"status={128 + sig}" in result.stdout, result.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("core")]


def test_main_returns_128_plus_n_instead_of_dying() -> None:
    # main() is for Python callers: it must not kill the caller.
    code = (
        "import sys; from pidfd._cli import main; "
        "sys.exit(main(['run', '--', 'sh', '-c', 'kill -TERM $$']) + 1)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=LIMIT, check=False
    )
    assert result.returncode == 128 + signal.SIGTERM + 1, result.stderr


def test_run_json_parses_back() -> None:
    result = cli("run", "--json", "--", *py("print('hello'); raise SystemExit(5)"))
    assert result.returncode == 5, result.stderr
    assert result.stdout.splitlines()[0] == "hello"
    report = last_json(result.stdout)
    assert report["exit_code"] == 5
    assert report["signal"] is None
    assert report["returncode"] == 5
    assert report["exit_status"] == 5
    assert report["command"][0] == sys.executable
    assert report["pid"] > 0
    assert report["timed_out"] is False
    ru = report["rusage"]
    assert ru["max_rss_kib"] > 0
    assert ru["user_cpu_s"] + ru["system_cpu_s"] > 0
    assert ru["minor_faults"] > 0
    assert result.stderr == ""  # the JSON replaces the text report


def test_run_json_for_a_signal() -> None:
    result = cli("run", "--json", "--", *py("import os; os.kill(os.getpid(), 15)"))
    report = last_json(result.stdout)
    assert result.returncode == -signal.SIGTERM
    assert (report["exit_code"], report["signal"], report["signal_name"]) == (None, 15, "SIGTERM")
    assert report["returncode"] == -15
    assert report["exit_status"] == report["command_exit_status"] == 143


def test_run_command_not_found_is_127() -> None:
    result = cli("run", "--", "pidfd-test-no-such-command-here")
    assert result.returncode == 127
    assert "pidfd-test-no-such-command-here" in result.stderr
    assert "No such file" in result.stderr


def test_run_not_executable_is_126(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    result = cli("run", "--", str(script))
    assert result.returncode == 126
    assert "Permission denied" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--json"], "no command given"),
        (["--bogus", "--", "true"], "unrecognized arguments: --bogus"),
        (["--timeout", "soon", "--", "true"], "not a number of seconds"),
    ],
)
def test_run_usage_error_is_125(args: list[str], message: str) -> None:
    # Not 2, which the command itself could have returned.
    result = cli("run", *args)
    assert result.returncode == 125
    assert message in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_run_forwards_signals(sig: signal.Signals) -> None:
    # The child says it got the signal, then dies from it.
    child = py(
        f"""
        import os, signal, sys, time
        def got(signo, frame):
            print("child got", signal.Signals(signo).name, flush=True)
            signal.signal(signo, signal.SIG_DFL)
            os.kill(os.getpid(), signo)
        signal.signal({int(sig)}, got)
        print("ready", flush=True)
        time.sleep(15)
        sys.exit(99)
        """
    )
    with started(
        [*PIDFD, "run", "--json", "--", *child], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        read_until(proc.stdout.fileno(), b"ready\n")
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=LIMIT)
    text = out.decode()
    assert f"child got {sig.name}\n" in text, err
    assert proc.returncode == -sig, err
    report = last_json(text)
    assert report["signal"] == sig
    assert report["signals_received"] == [{"signal": sig.name, "sent": True}]


def test_terminal_ctrl_c_reaches_the_command_once() -> None:
    # pidfd runs with a pty as its controlling terminal; ^C makes the
    # terminal signal the whole foreground group, so pidfd must not send a
    # second SIGINT. The child exits with the number of SIGINTs it got.
    child = py(
        """
        import signal, sys, time
        got = []
        signal.signal(signal.SIGINT, lambda *a: got.append(1))
        print("ready", flush=True)
        deadline = time.monotonic() + 15
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # room for a second, forwarded copy to arrive
        sys.exit(len(got))
        """
    )
    # Become a session leader with the pty as controlling terminal, then
    # exec pidfd; the session's group is the terminal's foreground group.
    setup = (
        "import fcntl, os, sys, termios; os.setsid(); "
        "fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execv(sys.argv[1], sys.argv[1:])"
    )
    argv = [*PIDFD, "run", "--json", "--no-progress", "--", *child]
    master, slave = pty.openpty()
    try:
        with started(
            [sys.executable, "-c", setup, *argv],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=slave,
        ) as proc:
            os.close(slave)
            slave = -1
            assert proc.stdout is not None
            read_until(proc.stdout.fileno(), b"ready\n")
            os.write(master, b"\x03")  # ^C
            out, _ = proc.communicate(timeout=LIMIT)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    report = last_json(out.decode())
    assert report["exit_code"] == 1, report  # 2 would mean it was sent twice
    assert report["signals_received"] == [{"signal": "SIGINT", "sent": False}]


@pytest.mark.parametrize("ignore_term", [False, True], ids=["obeys-term", "ignores-term"])
def test_run_timeout_then_kill_after(ignore_term: bool) -> None:
    # `exec` so that the signals reach sleep itself, and nothing outlives it.
    trap = 'trap "" TERM; ' if ignore_term else ""
    started_at = time.monotonic()
    result = cli(
        "run", "--json", "--timeout", "0.5", "--kill-after", "0.5", "--",
        "sh", "-c", f"{trap}exec sleep 15",
    )  # fmt: skip
    elapsed = time.monotonic() - started_at
    report = last_json(result.stdout)
    assert report["timed_out"] is True
    # 124 as timeout(1), whatever the signal; the command's own status is
    # kept in the report.
    assert result.returncode == 124
    assert report["exit_status"] == 124
    if ignore_term:
        assert report["signal_name"] == "SIGKILL"
        assert report["command_exit_status"] == 128 + signal.SIGKILL
        assert report["sigkill_sent"] is True
    else:
        assert report["signal_name"] == "SIGTERM"
        assert report["command_exit_status"] == 128 + signal.SIGTERM
        assert report["sigkill_sent"] is False
    assert elapsed < 10  # not the 15 s sleep


def test_run_text_report_mentions_timeout() -> None:
    result = cli("run", "--timeout", "0.2", "--", "sleep", "15")
    assert result.returncode == 124
    assert "timed out" in result.stderr
    assert "SIGTERM" in result.stderr
    assert "exit status:               124 (timed out; the command's own: 143)" in result.stderr


def test_run_timeout_preserve_status() -> None:
    # sh sets its trap within a millisecond or so of starting, where a Python
    # child on a loaded machine could still be starting when the timeout
    # fires (and die of the SIGTERM, 143). The trap ends its sleep too.
    result = cli(
        "run", "--json", "--timeout", "1", "--preserve-status", "--",
        "sh", "-c", "trap 'kill $!; exit 7' TERM; sleep 15 & wait",
    )  # fmt: skip
    assert result.returncode == 7, result.stderr
    report = last_json(result.stdout)
    assert report["timed_out"] is True
    assert report["exit_status"] == report["command_exit_status"] == 7


def test_run_closed_stdout_keeps_the_status() -> None:
    # The reader of stdout is gone before the JSON report is written: the
    # command's status must still be pidfd's, not 125.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [*PIDFD, "run", "--json", "--", "sh", "-c", "exit 3"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=LIMIT,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr


def test_run_json_seq_into_head() -> None:
    # The issue's own pipeline: seq dies of SIGPIPE once head has gone, and
    # pidfd, which cannot print its JSON either, dies of it too, as `seq`
    # alone would; before, it exited 125 and hid the command's status.
    line = shlex.join([*PIDFD, "run", "--json", "--", "seq", "1", "100000"])
    result = subprocess.run(
        ["bash", "-c", f"{line} | head -1; echo status=${{PIPESTATUS[0]}}"],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=False,
    )
    assert result.stdout.splitlines() == ["1", f"status={128 + signal.SIGPIPE}"], result.stderr
    assert "Traceback" not in result.stderr


WORKLOAD = """
import time
block = b"x" * (80 << 20)      # 80 MiB, every page written
start = time.process_time()
while time.process_time() - start < 0.3:
    pass
"""

WAIT4 = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-c", sys.argv[1]])
_, status, ru = os.wait4(pid, 0)
print(json.dumps({"status": status, "cpu": ru.ru_utime + ru.ru_stime, "maxrss": ru.ru_maxrss}))
"""


def test_run_rusage_matches_wait4() -> None:
    # Same workload under `pidfd run` and under fork/exec/wait4 in a fresh,
    # equally small Python parent (a child's max RSS starts at its parent's,
    # so the parent must not be this big test process). A units check, not a
    # benchmark: RSS within 20 %, CPU of the same order. The workload spins
    # until its user+system time reaches 0.3 s, so the sum is what it fixes;
    # how the kernel splits it (page faults are system time) varies by run.
    result = cli("run", "--json", "--", sys.executable, "-c", WORKLOAD)
    assert result.returncode == 0, result.stderr
    ours = last_json(result.stdout)["rusage"]
    direct = subprocess.run(
        [sys.executable, "-c", WAIT4, WORKLOAD],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        check=True,
    )
    ref = json.loads(direct.stdout)
    assert ref["status"] == 0
    assert ref["maxrss"] > 80 << 10  # KiB: the workload really ran
    assert 0.8 < ours["max_rss_kib"] / ref["maxrss"] < 1.2, (ours, ref)
    cpu = ours["user_cpu_s"] + ours["system_cpu_s"]
    assert 0.5 < cpu / ref["cpu"] < 2.0, (ours, ref)


# A session leader whose controlling terminal is the pty fd argv[1], which
# then execs argv[2:]: the terminal's foreground group is that process's.
CTTY = (
    "import fcntl, os, sys, termios; os.setsid(); fd = int(sys.argv[1]); "
    "fcntl.ioctl(fd, termios.TIOCSCTTY, 0); fd > 2 and os.close(fd); "
    "os.execvp(sys.argv[2], sys.argv[2:])"
)
PTY = object()  # stands for the pty's slave side in on_pty()'s stdio arguments


@contextlib.contextmanager
def on_pty(
    argv: list[str], *, keep_open: bool = False, **stdio: Any
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Start ``argv`` on a new pty as its controlling terminal; yield (proc, master fd).

    ``stdin``/``stdout``/``stderr`` given as :data:`PTY` are the terminal;
    anything else is passed to Popen as it is. ``keep_open`` keeps our own
    copy of the terminal open, so that reading the master does not fail
    with EIO while no process has it open (reads then never see EOF).
    """
    master, slave = pty.openpty()
    try:
        kwargs = {k: (slave if v is PTY else v) for k, v in stdio.items()}
        with started(
            [sys.executable, "-c", CTTY, str(slave), *argv], pass_fds=(slave,), **kwargs
        ) as proc:
            if not keep_open:
                os.close(slave)
                slave = -1
            yield proc, master
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


SLOW = "import time; time.sleep(1.6)"  # outlives RUN_STATUS_DELAY (1 s)


def test_run_draws_no_status_line_on_the_commands_terminal() -> None:
    # The command's stderr is the terminal (python3 -q's ">>>" prompt goes
    # there): a status line drawn on it would mix with the command's output.
    with on_pty([*PIDFD, "run", "--", *py(SLOW)], stdin=subprocess.DEVNULL, stderr=PTY) as (
        proc,
        master,
    ):
        text = read_all(master).decode()
        assert proc.wait(timeout=LIMIT) == 0
    assert "command exited with code 0" in text
    assert "running pid" not in text and "\x1b[" not in text


def test_run_progress_never_on_a_terminal_the_command_shares() -> None:
    # Asked for, the line still stays off a terminal the command writes to:
    # the terminal shows the command's output and nothing else.
    child = py("""
        import sys, time
        sys.stdout.write(">>> "); sys.stdout.flush()
        time.sleep(1.6)
        print("bye")
        """)
    with on_pty(
        [*PIDFD, "run", "--progress", "--", *child],
        stdin=subprocess.DEVNULL,
        stdout=PTY,
        stderr=subprocess.PIPE,
    ) as (proc, master):
        shown = read_all(master)
        _, err = proc.communicate(timeout=LIMIT)
    assert proc.returncode == 0, err
    assert shown == b">>> bye\r\n"
    assert b"command exited with code 0" in err and b"\x1b[" not in err


def test_run_progress_on_a_free_terminal() -> None:
    # stdin, stdout and stderr all elsewhere: the line is drawn on the
    # controlling terminal, then erased; the report goes to stderr.
    # pidfd alone opens the terminal (as /dev/tty), so we keep it open too.
    with on_pty(
        [*PIDFD, "run", "--progress", "--", *py(SLOW)],
        keep_open=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as (proc, master):
        shown = read_until(master, b"running pid")
        out, err = proc.communicate(timeout=LIMIT)
        while select.select([master], [], [], 0)[0]:
            shown += os.read(master, 4096)
    assert proc.returncode == 0, err
    text = shown.decode()
    assert text.endswith("\r\x1b[K")  # erased before pidfd ended
    assert "command exited with code 0" not in text
    assert b"command exited with code 0" in err and b"\x1b[" not in err
    assert out == b""


def test_ctrl_c_stops_a_shell_loop_at_once() -> None:
    # The loop: with `timeout 30 sleep 30` one Ctrl-C is enough, and
    # so it must be with pidfd run, which means dying by SIGINT (bash goes on
    # after a child that merely exits 130, taking it as handled).
    one = shlex.join(
        [*PIDFD, "run", "--no-progress", "--", "sh", "-c", "echo ready; exec sleep 30"]
    )
    loop = f"for i in 1 2 3; do {one}; echo next-$i; done; echo loop-done"
    with on_pty(["bash", "-c", loop], stdin=PTY, stdout=PTY, stderr=PTY) as (proc, master):
        seen = read_until(master, b"ready")
        os.write(master, b"\x03")  # ^C
        seen += read_all(master)
        assert proc.wait(timeout=LIMIT) == -signal.SIGINT
    text = seen.decode()
    assert "killed by signal 2 (SIGINT)" in text  # reported first
    assert "next-1" not in text and "loop-done" not in text


def test_wait_ctrl_c_reports_then_dies_by_sigint() -> None:
    with started(py(BLOCKED.format(code=0)), stdin=subprocess.PIPE) as child:
        with on_pty(
            [*PIDFD, "wait", str(child.pid)], stdin=PTY, stdout=subprocess.PIPE, stderr=PTY
        ) as (proc, master):
            seen = read_until(master, b"waiting for 1 of 1")
            os.write(master, b"\x03")
            seen += read_all(master)
            assert proc.wait(timeout=LIMIT) == -signal.SIGINT
        assert child.poll() is None  # the watched process was not touched
    assert f"interrupted; still running: {child.pid}" in seen.decode()


def test_run_help_never_breaks_an_option_across_lines(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for columns in range(40, 121):
        monkeypatch.setenv("COLUMNS", str(columns))
        assert main(["run", "--help"]) == 0
        text = capsys.readouterr().out
        broken = [line for line in text.splitlines() if re.search(r"--[a-z]+-$", line)]
        assert not broken, (columns, broken)


def test_wait_help_states_the_real_reap_grace(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wait", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"not reaped it {_REAP_GRACE:g} s after it exited" in text
    assert "half a second" not in text


# ---------------------------------------------------------------- wait


def test_wait_non_children_reports_their_status() -> None:
    # The test is the parent; pidfd wait is not, so it can only watch. It
    # reports the status once the parent (this test) reaps, where the kernel
    # can tell (PIDFD_INFO_EXIT, Linux >= 6.15), else "unknown".
    kw: dict[str, Any] = {"stdin": subprocess.PIPE}
    with (
        started(py(BLOCKED.format(code=7)), **kw) as a,
        started(py(BLOCKED.format(code=0)), **kw) as b,
        started(
            [*PIDFD, "wait", "--json", "--progress", str(a.pid), str(b.pid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as waiter,
    ):
        assert waiter.stdout is not None and waiter.stderr is not None
        # --progress draws the status line once both handles are open.
        read_until(waiter.stderr.fileno(), b"waiting for 2 of 2")
        assert a.stdin is not None and b.stdin is not None
        a.stdin.close()
        assert a.wait(timeout=LIMIT) == 7
        b.kill()
        assert b.wait(timeout=LIMIT) == -signal.SIGKILL
        out, err = waiter.communicate(timeout=LIMIT)
    assert waiter.returncode == 0, err
    records = {r["pid"]: r for r in map(json.loads, out.decode().splitlines())}
    assert set(records) == {a.pid, b.pid}
    if kernel_at_least(6, 15):
        assert records[a.pid]["exit_code"] == 7
        assert records[b.pid]["signal"] == signal.SIGKILL
        assert records[b.pid]["signal_name"] == "SIGKILL"
    else:
        # Never a made-up status where the kernel cannot tell.
        assert not records[a.pid]["status_known"]
        assert records[a.pid]["exit_code"] is None


def test_wait_never_invents_a_status() -> None:
    # The parent (this test) does not reap its exited child while pidfd
    # waits: the kernel cannot tell a non-parent the status of a zombie,
    # so after its grace period pidfd reports it as unknown.
    with started(py(BLOCKED.format(code=9)), stdin=subprocess.PIPE) as child:
        with started(
            [*PIDFD, "wait", "--json", "--progress", str(child.pid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as waiter:
            assert waiter.stderr is not None and child.stdin is not None
            read_until(waiter.stderr.fileno(), b"waiting for 1 of 1")
            child.stdin.close()
            out, err = waiter.communicate(timeout=LIMIT)
        # Only now is it reaped, with its real status.
        assert child.wait(timeout=LIMIT) == 9
    assert waiter.returncode == 0, err
    record = json.loads(out)
    assert record["pid"] == child.pid
    assert record["status_known"] is False
    assert record["exit_code"] is None and record["signal"] is None


def test_wait_text_output_and_missing_pid() -> None:
    gone = missing_pid()
    with (
        started(py(BLOCKED.format(code=3)), stdin=subprocess.PIPE) as child,
        started(
            [*PIDFD, "wait", "--progress", str(gone), str(child.pid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as waiter,
    ):
        assert waiter.stdout is not None and waiter.stderr is not None
        seen = read_until(waiter.stderr.fileno(), b"waiting for 1 of 1")
        assert f"pid {gone}: no such process".encode() in seen
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(timeout=LIMIT) == 3
        out, _ = waiter.communicate(timeout=LIMIT)
    assert waiter.returncode == 0  # the missing pid is reported, not fatal
    line = out.decode().strip()
    if kernel_at_least(6, 15):
        assert line == f"pid {child.pid} exited with code 3"
    else:
        assert line == f"pid {child.pid} exited, status unknown"


def test_wait_only_missing_pids_is_a_usage_error() -> None:
    result = cli("wait", str(missing_pid()))
    assert result.returncode == 2
    assert "no such process" in result.stderr
    assert result.stdout == ""


def test_wait_count_returns_after_n() -> None:
    kw: dict[str, Any] = {"stdin": subprocess.PIPE}
    with (
        started(py(BLOCKED.format(code=1)), **kw) as first,
        started(py(BLOCKED.format(code=0)), **kw) as second,
        started(py(BLOCKED.format(code=0)), **kw) as third,
    ):
        pids = [str(p.pid) for p in (first, second, third)]
        with started(
            [*PIDFD, "wait", "--count", "1", "--progress", *pids],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as waiter:
            assert waiter.stderr is not None
            read_until(waiter.stderr.fileno(), b"waiting for 3 of 3")
            assert second.stdin is not None
            second.stdin.close()
            assert second.wait(timeout=LIMIT) == 0
            out, err = waiter.communicate(timeout=LIMIT)
        assert waiter.returncode == 0, err
        assert out.decode().startswith(f"pid {second.pid} exited")
        assert len(out.decode().splitlines()) == 1
        assert first.poll() is None and third.poll() is None


def test_wait_timeout_exit_status() -> None:
    with started(py(BLOCKED.format(code=0)), stdin=subprocess.PIPE) as child:
        result = cli("wait", "--timeout", "0.3", str(child.pid))
        assert child.poll() is None
    assert result.returncode == 3
    assert "timed out" in result.stderr
    assert str(child.pid) in result.stderr
    assert result.stdout == ""


def test_wait_for_already_exited_child_of_another() -> None:
    # Exited and reaped before pidfd looks: reported as missing.
    proc = subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=LIMIT)
    assert proc.returncode == 0
    with started(py(BLOCKED.format(code=0)), stdin=subprocess.PIPE) as child:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=LIMIT)
        result = cli("wait", str(child.pid))
    assert result.returncode == 2
    assert f"pid {child.pid}: no such process" in result.stderr


def test_wait_status_line_on_a_terminal() -> None:
    master, slave = pty.openpty()
    try:
        with (
            started(py(BLOCKED.format(code=0)), stdin=subprocess.PIPE) as child,
            started(
                [*PIDFD, "wait", str(child.pid)], stdout=subprocess.PIPE, stderr=slave
            ) as waiter,
        ):
            os.close(slave)
            slave = -1
            shown = read_until(master, b"waiting for 1 of 1")
            assert child.stdin is not None
            child.stdin.close()
            child.wait(timeout=LIMIT)
            out, _ = waiter.communicate(timeout=LIMIT)
            rest = read_all(master)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    assert waiter.returncode == 0
    assert str(child.pid).encode() in shown
    assert (shown + rest).endswith(b"\r\x1b[K")  # erased before the result
    assert out.decode().startswith(f"pid {child.pid} exited")


# ---------------------------------------------------------------- info


def _info_or_skip(*args: str) -> subprocess.CompletedProcess[str]:
    result = cli("info", *args)
    if result.returncode != 0 and "needs Linux" in result.stderr:
        pytest.skip(f"kernel without PIDFD_GET_INFO: {result.stderr.strip()}")
    return result


def test_info_json_for_this_process() -> None:
    result = _info_or_skip("--json", str(os.getpid()))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["pid"] == info["tgid"] == os.getpid()
    assert info["ppid"] == os.getppid()
    assert (info["ruid"], info["euid"]) == (os.getuid(), os.geteuid())
    assert (info["rgid"], info["egid"]) == (os.getgid(), os.getegid())
    assert info["alive"] is True
    assert info["exit"] is None


def test_info_text_for_an_exited_child_of_another() -> None:
    with started(py(BLOCKED.format(code=0)), stdin=subprocess.PIPE) as child:
        running = _info_or_skip(str(child.pid))
        assert child.stdin is not None
        child.stdin.close()
        # Wait for the exit without reaping, so the zombie is still there.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        exited = cli("info", str(child.pid))
    assert running.returncode == 0, running.stderr
    assert "state:" in running.stdout and "running" in running.stdout
    assert re.search(rf"^parent pid: +{os.getpid()}$", running.stdout, re.M)
    assert exited.returncode == 0, exited.stderr
    # Not pidfd's child, and not reaped yet: the kernel cannot tell the status.
    assert "exited, status unknown" in exited.stdout


def test_info_missing_pid() -> None:
    result = cli("info", str(missing_pid()))
    assert result.returncode == 1
    assert "no such process" in result.stderr


# ------------------------------------------------------------- --kill-tree

# The command leaves three descendants behind and prints their pids on
# stderr: a daemon that left its group and session (setsid), a plain
# background job, and (with IGNORING) one that ignores SIGTERM.
LEAVES = "setsid sleep 60 & echo $! >&2; sleep 60 & echo $! >&2"
# The shell ignores SIGTERM before it forks, so the job inherits that from birth.
IGNORING = "trap '' TERM; sleep 60 & echo $! >&2"


def _pids(stderr: str) -> list[int]:
    return [int(word) for word in stderr.split() if word.isdigit()]


def _ended(pid: int) -> bool:
    # Reaped by pidfd run: gone from /proc (a zombie would still be listed).
    return not Path(f"/proc/{pid}").exists()


def test_run_kill_tree_ends_and_reaps_every_descendant() -> None:
    result = cli("run", "--kill-tree", "--json", "--", "sh", "-c", LEAVES)
    assert result.returncode == 0, result.stderr
    left = _pids(result.stderr)
    assert len(left) == 2
    tree = json.loads(result.stdout)["kill_tree"]
    assert tree["left"] == 2 and tree["sigterm"] == 2, tree
    assert sorted(e["pid"] for e in tree["ended"]) == sorted(left)
    assert all(e["signal_sent"] == "SIGTERM" for e in tree["ended"])
    assert all(_ended(pid) for pid in left)


def test_run_kill_tree_kills_what_ignores_sigterm_after_kill_after() -> None:
    result = cli("run", "--kill-tree", "--kill-after", "0.3s", "--json", "--", "sh", "-c", IGNORING)
    assert result.returncode == 0, result.stderr
    (pid,) = _pids(result.stderr)
    tree = json.loads(result.stdout)["kill_tree"]
    assert tree["sigkill"] == 1 and tree["left"] == 1, tree
    assert tree["ended"][0]["signal_name"] == "SIGKILL"
    assert _ended(pid)


def test_run_kill_tree_on_timeout() -> None:
    result = cli(
        "run", "--kill-tree", "--timeout", "0.5", "--json", "--",
        "sh", "-c", "setsid sleep 60 & echo $! >&2; exec sleep 60",
    )  # fmt: skip
    assert result.returncode == 124, result.stderr
    (pid,) = _pids(result.stderr)
    report = json.loads(result.stdout)
    assert report["timed_out"] is True
    assert report["kill_tree"]["left"] == 1 and report["kill_tree"]["sigterm"] == 1
    assert _ended(pid)


def test_run_kill_tree_text_report_counts_them() -> None:
    result = cli(
        "run", "--kill-tree", "--kill-after", "0.3", "--", "sh", "-c", LEAVES + "; " + IGNORING
    )
    assert result.returncode == 0, result.stderr
    assert "descendants left behind:   3 (2 ended by SIGTERM, 1 killed by SIGKILL)" in result.stderr
    assert all(_ended(pid) for pid in _pids(result.stderr.split("pidfd:")[0]))


def test_run_without_kill_tree_leaves_them() -> None:
    # Its output away from our pipes, which it would otherwise hold open.
    script = "setsid sleep 60 >/dev/null 2>&1 & echo $! >&2"
    result = cli("run", "--json", "--", "sh", "-c", script)
    assert result.returncode == 0, result.stderr
    (pid,) = _pids(result.stderr)
    assert json.loads(result.stdout)["kill_tree"] is None
    try:
        assert not _ended(pid)  # the daemon lives on: what --kill-tree is for
    finally:
        with contextlib.suppress(ProcessLookupError), PidFd.from_pid(pid) as daemon:
            daemon.kill()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2.5", 2.5), ("10s", 10.0), ("1m", 60.0), ("2h", 7200.0), ("1d", 86400.0)],
)
def test_durations_as_timeout_takes_them(text: str, seconds: float) -> None:
    from pidfd._cli import _seconds

    assert _seconds(text) == seconds


@pytest.mark.parametrize("text", ["5x", "m", "-1s", "inf", ""])
def test_bad_durations_are_usage_errors(text: str) -> None:
    result = cli("run", "--kill-after", text, "--", "true")
    assert result.returncode == 125
    assert "--kill-after" in result.stderr


# Issue 22: huge durations, 0 disables, pid range, closed stderr, JSON on a failed start.
@pytest.mark.parametrize(
    ("opts", "expect"),
    [
        (["--timeout", "1e300"], 0),
        (["--timeout", "1e18"], 0),
        # The kill-after deadline is only computed once the timeout fires.
        (["--timeout", "0.1", "--kill-after", "1e300"], 124),
    ],
)
def test_huge_durations_are_clamped(opts: list[str], expect: int) -> None:
    command = ["true"] if expect == 0 else ["sleep", "30"]
    result = cli("run", *opts, "--", *command)
    assert result.returncode == expect, result.stderr
    assert "Traceback" not in result.stderr


def test_timeout_zero_disables() -> None:
    result = cli("run", "--timeout", "0", "--", "sh", "-c", "exit 4")
    assert result.returncode == 4, result.stderr


@pytest.mark.parametrize("sub", ["wait", "info"])
def test_pid_beyond_pid_t_is_a_usage_error(sub: str) -> None:
    result = cli(sub, "2147483648")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_info_extra_argument_shows_info_usage() -> None:
    result = cli("info", "1", "2")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: pidfd info")


def test_run_status_survives_closed_stderr() -> None:
    argv = shlex.join([*PIDFD, "run", "--", "sh", "-c", "exit 3"])
    result = subprocess.run(["sh", "-c", f"{argv} 2>&-"], timeout=LIMIT, check=False)
    assert result.returncode == 3


def test_run_json_when_the_command_cannot_start() -> None:
    result = cli("run", "--json", "--", "nosuchcmd-pidfd-test")
    assert result.returncode == 127
    assert json.loads(result.stdout)["started"] is False


def test_run_timeout_wakes_a_stopped_command() -> None:
    result = cli("run", "--json", "--timeout", "0.5", "--", "sh", "-c", "kill -STOP $$")
    assert result.returncode == 124
    assert last_json(result.stdout)["signal_name"] == "SIGTERM"
