"""`pidfd.run` and `pidfd.CompletedProcess`: `subprocess.run` on `pidfd.Popen`."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from pidfd._popen import Popen, RusageOnRead

if TYPE_CHECKING:
    import resource

    from pidfd._native import ExitStatus
    from pidfd._popen import _Cmd

__all__ = ["CompletedProcess", "run"]

_T = TypeVar("_T")


class CompletedProcess(RusageOnRead, subprocess.CompletedProcess[_T]):
    """`subprocess.CompletedProcess` with the child's `rusage` and `exit_status`.

    Returned by :func:`run`. ``rusage`` is the child's
    ``resource.struct_rusage``; ``exit_status`` its decoded
    :class:`ExitStatus`. Either is ``None`` where it could not be known (a
    child reaped by the kernel because ``SIGCHLD`` is ignored, or a sandbox
    that refuses ``pidfd_open``); ``rusage`` also for a ``die_with_parent``
    child on Linux >= 7.1, which the kernel reaps itself.
    """

    def __init__(
        self,
        args: Any,
        returncode: int,
        stdout: _T | None = None,
        stderr: _T | None = None,
        *,
        rusage: resource.struct_rusage | None = None,
        exit_status: ExitStatus | None = None,
    ) -> None:
        # What the stock __init__ sets, without calling it: run() makes one
        # per child, and each Python call is a share of W5.
        self.args = args
        self.returncode = returncode
        # typeshed types them _T; the stock __init__ stores None as well.
        self.stdout = stdout  # type: ignore[assignment]
        self.stderr = stderr  # type: ignore[assignment]
        self._rusage = rusage
        self.exit_status = exit_status

    def __repr__(self) -> str:
        base = super().__repr__()
        return f"{base[:-1]}, exit_status={self.exit_status!r})"


@overload
def run(
    args: _Cmd,
    *popenargs: Any,
    input: str | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    text: Literal[True],
    encoding: str | None = None,
    errors: str | None = None,
    universal_newlines: bool | None = None,
    **kwargs: Any,
) -> CompletedProcess[str]: ...
@overload
def run(
    args: _Cmd,
    *popenargs: Any,
    input: str | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    text: bool | None = None,
    encoding: str,
    errors: str | None = None,
    universal_newlines: bool | None = None,
    **kwargs: Any,
) -> CompletedProcess[str]: ...
@overload
def run(
    args: _Cmd,
    *popenargs: Any,
    input: str | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    text: bool | None = None,
    encoding: str | None = None,
    errors: str,
    universal_newlines: bool | None = None,
    **kwargs: Any,
) -> CompletedProcess[str]: ...
@overload
def run(
    args: _Cmd,
    *popenargs: Any,
    input: str | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    text: bool | None = None,
    encoding: str | None = None,
    errors: str | None = None,
    universal_newlines: Literal[True],
    **kwargs: Any,
) -> CompletedProcess[str]: ...
@overload
def run(
    args: _Cmd,
    *popenargs: Any,
    input: bytes | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    text: Literal[False] | None = None,
    encoding: None = None,
    errors: None = None,
    universal_newlines: Literal[False] | None = None,
    **kwargs: Any,
) -> CompletedProcess[bytes]: ...
@overload
def run(
    args: _Cmd,
    *popenargs: Any,
    input: str | bytes | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    text: bool | None = None,
    encoding: str | None = None,
    errors: str | None = None,
    universal_newlines: bool | None = None,
    **kwargs: Any,
) -> CompletedProcess[Any]: ...
def run(
    args: _Cmd,
    *popenargs: Any,
    input: str | bytes | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **kwargs: Any,
) -> CompletedProcess[Any]:
    """`subprocess.run` on :class:`Popen`: run a command, wait, return a result.

    The same arguments and behaviour as `subprocess.run` (``input``,
    ``capture_output``, ``timeout``, ``check`` and everything `Popen`
    takes); on timeout the child is killed and reaped before
    `subprocess.TimeoutExpired` propagates. A child that leads its own group
    (``start_new_session=True`` or ``process_group=0``) has its whole group
    killed first, before the leader is reaped, so members it started do not
    survive it and the signal cannot reach a recycled group id. The result adds the child's
    ``rusage`` and ``exit_status``::

        import pidfd

        done = pidfd.run(["sh", "-c", "echo hi; exit 2"], capture_output=True, text=True)
        print(done.returncode, done.stdout.strip())   # 2 hi
        print(done.exit_status)                       # ExitStatus(code=2)
    """
    if input is not None:
        if kwargs.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used.")
        kwargs["stdin"] = subprocess.PIPE
    if capture_output:
        if kwargs.get("stdout") is not None or kwargs.get("stderr") is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output.")
        kwargs["stdout"] = subprocess.PIPE
        kwargs["stderr"] = subprocess.PIPE
    process: Popen[Any]
    with Popen(args, *popenargs, **kwargs) as process:
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            # communicate() has already put the output so far on the
            # exception; kill (the whole group first if the child leads one)
            # and reap before letting it propagate.
            process._kill_for_exit()
            process.wait()
            raise
        except BaseException:
            # KeyboardInterrupt included: __exit__ then waits (briefly, for
            # Ctrl-C) as subprocess.run does.
            process._kill_for_exit()
            raise
        # What the stock run's process.poll() returns here: communicate()
        # has waited, so poll() would only read it.
        returncode = process.returncode
        assert returncode is not None
        if check and returncode:
            raise subprocess.CalledProcessError(
                returncode, process.args, output=stdout, stderr=stderr
            )
    done = CompletedProcess(
        process.args, returncode, stdout, stderr, exit_status=process.exit_status
    )
    # The rusage as the Popen holds it: built, or still its ExitInfo.
    done._rusage, done._exit_info = process._rusage, process._exit_info
    return done
