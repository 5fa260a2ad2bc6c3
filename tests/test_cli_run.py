"""`pidfd run`: exit statuses, signal forwarding, --timeout, the report and --json,
the status line on a terminal.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pidfd
from _cli_helpers import (
    LIMIT,
    PIDFD,
    PTY,
    SLOW,
    cli,
    last_json,
    on_pty,
    py,
    read_all,
    read_until,
    started,
)

# Each test runs the pidfd command in a child process: four threads at once
# would stress no state of this process, only the machine.
pytestmark = pytest.mark.thread_unsafe(reason="runs the pidfd command as a child process")


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


@pytest.mark.parametrize("flag", [True, False])
def test_die_with_parent_takes_the_command_down_with_a_sigkilled_pidfd(flag: bool) -> None:
    # The command ignores SIGTERM, and pidfd gets no chance to forward
    # anything: only the kernel's parent-death signal can end it.
    opts = ["--die-with-parent"] if flag else []
    script = "trap '' TERM; echo $$; exec sleep 300"
    owner = subprocess.Popen(
        [*PIDFD, "run", *opts, "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert owner.stdout is not None
    command = pidfd.PidFd.from_pid(int(owner.stdout.readline()))
    with command:
        owner.kill()
        owner.wait()
        owner.stdout.close()
        if flag:
            # Returns once it has exited (its status, or None where init
            # has yet to reap it or the kernel keeps none).
            command.wait_exit(timeout=LIMIT)
            assert not command.is_alive()
        else:
            # The control: without the flag the command lives on.
            with pytest.raises(TimeoutError):
                command.wait_exit(timeout=1)
            command.send_signal(signal.SIGKILL)
            command.wait_exit(timeout=LIMIT)
