"""`pidfd.open_process`, `pidfd.run_process`, `pidfd.Process`: async processes on a pidfd.

A process is started by :class:`pidfd.Popen` (CPython's own spawning, every
option as `subprocess` documents it), which holds its pidfd from birth. The
pipes are ours: plain non-blocking fds read and written by awaiting readiness
with anyio, and the exit is awaited as the pidfd's readability, then reaped
through ``Popen.poll()`` (``waitid(P_PIDFD, WNOHANG)``, which records the
return code, the rusage and the decoded status). So the same code runs under
``asyncio.run`` (3.11 included), ``trio.run`` and ``anyio.run`` with no
thread, no child watcher and no transport per child.

Where the kernel or a sandbox refuses ``pidfd_open``, the process still
starts: :meth:`Process.wait` then waits in a worker thread
(``anyio.to_thread.run_sync``) on ``waitid(WNOWAIT)``, which never reaps, and
reaps with ``poll()`` back on the event loop.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, TypeAlias, TypedDict, Unpack

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread

from pidfd import _spawn, _turns
from pidfd._async import AsyncPidFd
from pidfd._cgroup import Cgroup
from pidfd._popen import Popen
from pidfd._run import CompletedProcess
from pidfd._streams import PipeReceiveStream, PipeSendStream

if TYPE_CHECKING:
    import resource

    from pidfd._native import ExitStatus

__all__ = ["Process", "open_process", "run_process"]

StrOrBytesPath: TypeAlias = "str | bytes | os.PathLike[str] | os.PathLike[bytes]"

_PIPE = subprocess.PIPE


class _ProcessPopen(Popen[bytes]):
    """The Popen under a `Process`: tells the event loop before its pidfd
    closes, and spawns without waiting for the child's exec (the `Process`
    awaits that on the loop)."""

    _async_pidfd: AsyncPidFd | None = None
    _wait_exec = False

    def _close_pidfd(self) -> None:
        handle = self._async_pidfd
        if handle is not None:
            # Wakes a task awaiting the fd (it re-checks returncode) and has
            # its loop drop the fd before the number can be reused.
            handle.close()
        super()._close_pidfd()


def _wait_without_reaping(pid: int) -> None:
    """Block until child ``pid`` has exited, leaving it a zombie (the fallback)."""
    # ECHILD: already reaped (by our own poll(), or behind our back); the
    # caller's poll() then records what it can.
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


class Process(anyio.abc.Process):
    """A child process started by :func:`open_process`; an ``anyio.abc.Process``.

    Its exit is awaited on its pidfd, its pipes are non-blocking fds awaited
    with anyio: no thread and no watcher per child on asyncio or trio.
    Signals go through the pidfd, so they can never reach a process that
    reused the pid. Use it as an async context manager (or call
    :meth:`aclose`) so that no stream, no fd and no zombie outlives it::

        import anyio, pidfd

        async def main():
            async with await pidfd.open_process(["cat"]) as proc:
                await proc.stdin.send(b"hello")
                await proc.stdin.aclose()
                print(await proc.stdout.receive())   # b'hello'
                print(await proc.wait())             # 0
            print(proc.exit_status)                  # ExitStatus(code=0)

        anyio.run(main)
    """

    def __init__(
        self,
        popen: _ProcessPopen,
        stdin: PipeSendStream | None,
        stdout: PipeReceiveStream | None,
        stderr: PipeReceiveStream | None,
    ) -> None:
        self._popen = popen
        self._stdin = stdin
        self._stdout = stdout
        self._stderr = stderr

    async def _exec_started(self, executable: object, cwd: object) -> None:
        """Await the child's exec (the native spawn returns before it).

        Raises what `subprocess` raises for a child that could not exec,
        once the child is reaped and our streams are closed. Cancelled, it
        kills the child, waits out its last instructions and reaps it,
        shielded, before the cancellation goes on.
        """
        popen = self._popen
        status = popen._exec_status
        if status is None:
            return  # the stock spawn, which waited for the exec itself
        try:
            await anyio.wait_readable(status.fileno())
        except BaseException:
            await self._abandon()
            raise
        popen._exec_status = None
        report = status.finish()
        if report:
            # The child wrote why it could not exec, and exited 255.
            with anyio.CancelScope(shield=True):
                await self.aclose()
            raise _spawn.exec_error(report, executable, cwd)

    async def _abandon(self) -> None:
        """Kill and reap a child whose start was cancelled, shielded; its
        exec status is read first (the child may still be before exec)."""
        with anyio.CancelScope(shield=True):
            self._kill_for_exit()
            status, self._popen._exec_status = self._popen._exec_status, None
            if status is not None:
                status.finish()
            await self.aclose()

    # -- the anyio.abc.Process interface ------------------------------------------

    @property
    def pid(self) -> int:
        """The process id."""
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The return code (``-signal`` if killed), or ``None`` while it runs.

        Reading it reaps a child that has exited, as ``Popen.poll()`` does.
        """
        return self._popen.poll()

    @property
    def stdin(self) -> anyio.abc.ByteSendStream | None:
        """The child's standard input, if it was opened with ``stdin=PIPE``."""
        return self._stdin

    @property
    def stdout(self) -> anyio.abc.ByteReceiveStream | None:
        """The child's standard output, if it was opened with ``stdout=PIPE``."""
        return self._stdout

    @property
    def stderr(self) -> anyio.abc.ByteReceiveStream | None:
        """The child's standard error, if it was opened with ``stderr=PIPE``."""
        return self._stderr

    async def wait(self) -> int:
        """Wait for the process to exit, reap it, and return its return code.

        Returns as soon as the process exits, even if a descendant still
        holds its stdout or stderr open. Cancelling it leaves the process
        running and unreaped; a later ``wait()`` still gets the status.
        Several tasks may wait at once: all get the return code.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        returncode = self._popen.poll()
        if returncode is not None:
            await anyio.lowlevel.cancel_shielded_checkpoint()
            return returncode
        return await self._wait()

    async def _wait(self) -> int:
        """`wait` without its own checkpoints (a caller's part of one)."""
        popen = self._popen
        returncode = popen.poll()
        while returncode is None:
            handle = self._popen._async_pidfd
            if handle is not None and not handle.closed:
                # ClosedResourceError: another task's poll() reaped the child
                # and closed the pidfd while we waited; poll() again says so.
                with contextlib.suppress(anyio.ClosedResourceError):
                    await handle._wait_readable_once()
            else:
                # No pidfd (refused at spawn, or closed by the user): wait in a
                # worker thread without reaping, so that a cancelled wait()
                # leaves the child for a later one. abandon_on_cancel: the
                # thread then finishes when the child exits, harmlessly.
                await anyio.to_thread.run_sync(
                    _wait_without_reaping, popen.pid, abandon_on_cancel=True
                )
            returncode = popen.poll()
        return returncode

    def send_signal(self, signal: int, *, group: bool = False) -> None:
        """Send ``signal`` through the pidfd; nothing once the process has exited.

        Never reaches another process that reused the pid. ``group=True``
        signals the group the process leads, as :meth:`pidfd.Popen.send_signal`
        does (``killpg`` while unreaped where the kernel is older than 6.9).
        """
        self._popen.send_signal(signal, group=group)

    def terminate(self) -> None:
        """Send ``SIGTERM``."""
        self._popen.terminate()

    def kill(self) -> None:
        """Send ``SIGKILL``."""
        self._popen.kill()

    async def aclose(self) -> None:
        """Close the streams, then wait for the process to exit.

        If that wait is cancelled (or fails), the process is killed and
        reaped, shielded from the cancellation, and the cancellation goes on:
        no zombie and no fd outlives the call. A process that leads its own
        group (``start_new_session=True`` or ``process_group=0``) has its
        whole group killed first, while the leader is still unreaped, so the
        group id cannot have been reused.
        """
        with anyio.CancelScope(shield=True):
            for stream in (self._stdin, self._stdout, self._stderr):
                if stream is not None:
                    await stream.aclose()
        try:
            await self.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):
                self._kill_for_exit()
                await self.wait()
            raise

    def _close_streams(self) -> None:
        for stream in (self._stdin, self._stdout, self._stderr):
            if stream is not None:
                stream._close()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # Leaving the block because of a cancellation (asyncio delivers its
        # CancelledError once, so aclose()'s own wait() would not see it) or
        # Ctrl-C: kill first, then close and reap, shielded.
        if isinstance(exc, KeyboardInterrupt | anyio.get_cancelled_exc_class()):
            with anyio.CancelScope(shield=True):
                self._kill_for_exit()
                await self.aclose()
            return
        await self.aclose()

    # -- beyond anyio -------------------------------------------------------------

    @property
    def pidfd(self) -> AsyncPidFd | None:
        """The process's :class:`AsyncPidFd` from spawn until it is reaped.

        ``None`` after that, and from the start where ``pidfd_open`` was
        refused. Reaping is this object's job: use ``wait()``, not the
        handle's own ``wait()``.
        """
        handle = self._popen._async_pidfd
        if handle is None or handle.closed:
            return None
        return handle

    @property
    def rusage(self) -> resource.struct_rusage | None:
        """The child's resource usage once reaped (as ``os.wait4`` reports it)."""
        return self._popen.rusage

    @property
    def exit_status(self) -> ExitStatus | None:
        """The decoded :class:`ExitStatus` once reaped; ``None`` while it runs."""
        return self._popen.exit_status

    @property
    def popen(self) -> Popen[bytes]:
        """The underlying :class:`pidfd.Popen` (its ``stdin``/``stdout``/``stderr``
        are ``None``: the pipes belong to this object)."""
        return self._popen

    def _kill_for_exit(self) -> None:
        # Group first, before anything reaps the leader (poll() would, and
        # a reaped leader no longer pins the group id).
        self._popen._kill_for_exit()

    def __repr__(self) -> str:
        return f"<pidfd.Process pid={self.pid} returncode={self._popen.returncode}>"


def _check_command(command: object) -> None:
    if isinstance(command, str | bytes | os.PathLike):
        if not os.fspath(command):
            raise ValueError("command is empty: pass a shell command line or a list of arguments")
        return
    if not isinstance(command, Sequence):
        raise TypeError(
            "command must be a str (run by the shell) or a sequence of str/bytes/path "
            f"arguments, not {type(command).__name__}"
        )
    if not command:
        raise ValueError("command is empty: the list needs at least the program to run")
    for arg in command:
        if not isinstance(arg, str | bytes | os.PathLike):
            raise TypeError(
                f"command arguments must be str, bytes or os.PathLike, not "
                f"{type(arg).__name__} ({arg!r}): convert them with str()"
            )


def _check_stdio(name: str, value: object) -> None:
    if value is None or hasattr(value, "fileno"):
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{name} must be subprocess.PIPE, DEVNULL, a file object, an fd or None, "
            f"not {type(value).__name__}"
        )
    if value == subprocess.STDOUT and name != "stderr":
        raise ValueError(f"subprocess.STDOUT is only valid for stderr, not {name}")
    if value < 0 and value not in (subprocess.PIPE, subprocess.DEVNULL, subprocess.STDOUT):
        raise ValueError(
            f"{name}={value} is not an fd: use subprocess.PIPE, DEVNULL, a file or an fd >= 0"
        )


class SpawnOptions(TypedDict, total=False):
    """The spawn keywords `open_process` and `run_process` take and pass on
    to `Popen` (trio's ``GeneralProcessArgs`` is the model). Those of
    ``anyio.open_process`` with its defaults, which are `subprocess.Popen`'s,
    plus ``process_group``, ``die_with_parent``, ``no_new_privs`` and
    ``cgroup`` (see `pidfd.Popen`)."""

    cwd: StrOrBytesPath | None
    env: Mapping[str, str] | None
    startupinfo: Any
    creationflags: int
    start_new_session: bool
    pass_fds: Sequence[int]
    user: str | int | None
    group: str | int | None
    extra_groups: Iterable[str | int] | None
    umask: int
    process_group: int | None
    die_with_parent: bool
    no_new_privs: bool
    cgroup: StrOrBytesPath | int | Cgroup | None


def _check_options(options: SpawnOptions) -> dict[str, Any]:
    # **options accepts any name at run time: refuse the ones that are not
    # spawn keywords, as a plain signature would (a preexec_fn, say, would
    # otherwise reach Popen and run Python in the child on the loop thread).
    unknown = sorted(options.keys() - SpawnOptions.__optional_keys__)
    if unknown:
        raise TypeError(
            f"unexpected keyword argument {unknown[0]!r}; the spawn keywords are "
            + ", ".join(sorted(SpawnOptions.__optional_keys__))
        )
    return dict(options)


def _start(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
    stdin: int | IO[Any] | None,
    stdout: int | IO[Any] | None,
    stderr: int | IO[Any] | None,
    popen_kwargs: dict[str, Any],
) -> Process:
    # Our own pipes (close-on-exec on both ends: Popen dup2()s the child's
    # end onto 0/1/2, which clears the flag there only), so that we own raw
    # fds rather than Popen's buffered file objects.
    _check_command(command)
    for name, value in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)):
        _check_stdio(name, value)
    ours: list[int] = []
    theirs: list[int] = []

    def pipe(child_reads: bool) -> tuple[int, int]:
        r, w = os.pipe2(os.O_CLOEXEC)
        mine, child = (w, r) if child_reads else (r, w)
        ours.append(mine)
        theirs.append(child)
        return mine, child

    shell = isinstance(command, str | bytes | os.PathLike)
    args: Any = os.fspath(command) if isinstance(command, os.PathLike) else command
    try:
        in_mine = out_mine = err_mine = -1
        if stdin == _PIPE:
            in_mine, stdin = pipe(child_reads=True)
        if stdout == _PIPE:
            out_mine, stdout = pipe(child_reads=False)
        if stderr == _PIPE:
            err_mine, stderr = pipe(child_reads=False)
        popen = _ProcessPopen(
            args, stdin=stdin, stdout=stdout, stderr=stderr, shell=shell, **popen_kwargs
        )
        try:
            if popen.pidfd is not None:
                popen._async_pidfd = AsyncPidFd(popen.pidfd)
            process = Process(
                popen,
                PipeSendStream(in_mine) if in_mine >= 0 else None,
                PipeReceiveStream(out_mine) if out_mine >= 0 else None,
                PipeReceiveStream(err_mine) if err_mine >= 0 else None,
            )
        except BaseException:  # pragma: no cover - set_blocking or MemoryError
            popen.kill()
            popen.wait()
            raise
    except BaseException:
        for fd in ours:
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    return process


async def open_process(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
    *,
    stdin: int | IO[Any] | None = _PIPE,
    stdout: int | IO[Any] | None = _PIPE,
    stderr: int | IO[Any] | None = _PIPE,
    **options: Unpack[SpawnOptions],
) -> Process:
    """Start a process, as ``anyio.open_process`` does, on a pidfd from birth.

    The same arguments and defaults as ``anyio.open_process`` (plus
    ``process_group``, as in ``subprocess.Popen``): a string or path
    ``command`` runs through the shell, a sequence is executed directly;
    ``stdin``/``stdout``/``stderr`` take ``subprocess.PIPE`` (the default:
    a stream on the returned :class:`Process`), ``DEVNULL``, ``STDOUT`` (for
    ``stderr``), a file object, an fd, or ``None`` to inherit. Errors from
    spawning (``FileNotFoundError``, ``PermissionError``, a bad argument's
    ``ValueError`` or ``TypeError``) are ``subprocess.Popen``'s own.
    ``die_with_parent=True`` has the child killed when this process dies, as
    in :class:`pidfd.Popen`, ``no_new_privs=True`` sets
    ``PR_SET_NO_NEW_PRIVS`` in it, and ``cgroup=`` starts it in a cgroup v2
    (a path, an open directory fd or a :class:`pidfd.Cgroup`; errors as in
    :class:`pidfd.Popen`).

    Spawning runs on the event loop thread and never waits there for the
    child's exec: the native spawn (``clone3``) returns as soon as the child
    exists, and the exec's outcome is awaited like any other fd. A burst of
    calls spawns in slices of at most half a millisecond of the loop's time,
    the loop handed back between two, so other tasks keep running.
    Where the kernel or a sandbox refuses ``clone3``, the stock spawn (which
    waits for the exec) runs in a worker thread instead.
    """
    checked = _check_options(options)
    if _spawn.native_refused() and not checked.get("die_with_parent"):
        # The stock spawn waits for the child's exec (and fork()s): not on
        # the loop's thread. Shielded, so that a cancellation cannot lose
        # the child the thread started. Not with die_with_parent:
        # PR_SET_PDEATHSIG fires when the spawning thread exits, and worker
        # threads do.
        await anyio.lowlevel.checkpoint_if_cancelled()
        with anyio.CancelScope(shield=True):
            process = await anyio.to_thread.run_sync(
                _start, command, stdin, stdout, stderr, checked
            )
        try:
            await anyio.lowlevel.checkpoint()
        except BaseException:
            await process._abandon()
            raise
        return process
    process = await _turns.in_turn(
        _start, (command, stdin, stdout, stderr, checked), Process._abandon
    )
    try:
        # What subprocess names in an exec failure: the program (checked by
        # _start, so a non-empty sequence), or the shell.
        shell = isinstance(command, str | bytes | os.PathLike)
        executable = "/bin/sh" if shell else command[0]  # type: ignore[index]
        await process._exec_started(executable, options.get("cwd"))
    finally:
        _turns.exec_done()
    return process


async def run_process(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
    *,
    input: bytes | None = None,
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = _PIPE,
    stderr: int | IO[Any] | None = _PIPE,
    check: bool = True,
    **options: Unpack[SpawnOptions],
) -> CompletedProcess[bytes]:
    """Run a command to completion, as ``anyio.run_process`` does.

    ``input`` is written to the child's stdin, which is then closed (it
    excludes ``stdin``); stdout and stderr are captured by default. With
    ``check=True`` (the default) a non-zero return code raises
    ``subprocess.CalledProcessError`` carrying the output. Cancellation
    kills the process and reaps it before the cancellation propagates.
    ``die_with_parent``, ``no_new_privs`` and ``cgroup`` are :func:`open_process`'s. Returns a
    :class:`pidfd.CompletedProcess` with ``rusage`` and ``exit_status``::

        import anyio, pidfd

        async def main():
            done = await pidfd.run_process(["echo", "hi"])
            print(done.stdout, done.exit_status)   # b'hi\\n' ExitStatus(code=0)

        anyio.run(main)
    """
    if stdin is not None and input is not None:
        raise ValueError("only one of stdin and input is allowed")
    if input is not None and not isinstance(input, bytes | bytearray | memoryview):
        raise TypeError(
            f"input must be bytes, not {type(input).__name__}"
            + (" (encode it, e.g. input.encode())" if isinstance(input, str) else "")
        )

    outputs: list[bytes | None] = [None, None]

    async def drain(stream: PipeReceiveStream | None, index: int) -> None:
        if stream is not None:
            outputs[index] = await stream._read_to_end()

    process = await open_process(
        command,
        stdin=_PIPE if input is not None else stdin,
        stdout=stdout,
        stderr=stderr,
        **options,
    )
    try:
        async with anyio.create_task_group() as tg:
            # The last stream is read by this task when it has nothing to
            # write: one task fewer per child.
            readers = [process._stdout, process._stderr]
            mine = readers.pop() if input is None else None
            for index, stream in enumerate(readers):
                if stream is not None:
                    tg.start_soon(drain, stream, index)
            if process._stdin is not None and input is not None:
                # A child that exits without reading all of it is not an
                # error, as in subprocess.run.
                with contextlib.suppress(anyio.BrokenResourceError):
                    if input:
                        await process._stdin.send(input)
                await process._stdin.aclose()
            await drain(mine, len(readers))
            await process._wait()
    except BaseException as exc:
        await process.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    process._close_streams()  # all read to their end, and the child reaped

    returncode = process._popen.returncode
    assert returncode is not None  # _wait() reaped
    output, errors = outputs
    if check and returncode != 0:
        raise subprocess.CalledProcessError(returncode, command, output, errors)
    return CompletedProcess(
        command,
        returncode,
        output,
        errors,
        rusage=process.rusage,
        exit_status=process.exit_status,
    )
