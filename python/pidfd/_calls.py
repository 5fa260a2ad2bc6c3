"""`subprocess`'s older helpers on :class:`pidfd.Popen`, so that
``import pidfd as subprocess`` serves code written against `subprocess`.

Each is the stock function's contract (CPython's own ``Lib/subprocess.py``
documents it), with our `Popen` underneath: the waits block on the pidfd and
a timeout kills and reaps the child before `subprocess.TimeoutExpired`
propagates.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any

from pidfd._popen import Popen
from pidfd._run import run

if TYPE_CHECKING:
    from pidfd._popen import _Cmd

__all__ = ["call", "check_call", "check_output"]


def call(args: _Cmd, *popenargs: Any, timeout: float | None = None, **kwargs: Any) -> int:
    """`subprocess.call` on :class:`Popen`: run a command, wait, return its returncode.

    On a timeout (or any exception while waiting) the child is killed and
    reaped before the exception propagates::

        import pidfd

        print(pidfd.call(["sh", "-c", "exit 3"]))   # 3
    """
    with Popen(args, *popenargs, **kwargs) as process:
        try:
            return process.wait(timeout=timeout)
        except BaseException:
            process._kill_for_exit()
            process.wait()
            raise


def check_call(args: _Cmd, *popenargs: Any, **kwargs: Any) -> int:
    """`subprocess.check_call` on :class:`Popen`: as :func:`call`, but a non-zero
    returncode raises `subprocess.CalledProcessError`::

        import pidfd

        pidfd.check_call(["true"])   # returns 0
    """
    returncode = call(args, *popenargs, **kwargs)
    if returncode:
        raise subprocess.CalledProcessError(returncode, args)
    return 0


def check_output(args: _Cmd, *popenargs: Any, timeout: float | None = None, **kwargs: Any) -> Any:
    """`subprocess.check_output` on :class:`Popen`: run a command and return its stdout.

    A non-zero returncode raises `subprocess.CalledProcessError` carrying the
    output; ``input``, ``text`` and the other `subprocess.run` arguments work
    as they do there::

        import pidfd

        print(pidfd.check_output(["echo", "hi"], text=True))   # hi
    """
    if "stdout" in kwargs:
        raise ValueError("stdout argument not allowed, it will be overridden.")
    if kwargs.get("input", 0) is None:
        # As the stock function: input=None means "an empty stdin", not "inherit".
        text = kwargs.get("universal_newlines") or kwargs.get("text")
        text = text or kwargs.get("encoding") or kwargs.get("errors")
        kwargs["input"] = "" if text else b""
    return run(
        args, *popenargs, stdout=subprocess.PIPE, timeout=timeout, check=True, **kwargs
    ).stdout
