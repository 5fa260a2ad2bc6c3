"""What `pidfd.Popen` knows of CPython's own `subprocess.Popen`, in one place.

`pidfd.Popen` reuses the stock class's private machinery; everything that
depends on how a CPython version spells it lives here, so that a new CPython
touches this file only:

- how ``_internal_poll`` reaches ``os.waitpid`` (a default argument, so that
  it still works from ``__del__`` at interpreter shutdown: ``_waitpid`` on
  3.11 and 3.12, a ``_del_safe`` holder on 3.13 and later);
- the stock ``_execute_child``, run with our ``_fork_exec`` in place of
  ``_posixsubprocess.fork_exec`` (the native spawn), where its globals and
  ``fork_exec``'s 23 arguments are the ones this module knows.
"""

from __future__ import annotations

import _posixsubprocess
import inspect
import subprocess
import types
from collections.abc import Callable
from typing import Any

_STOCK_POLL_PARAMS = inspect.signature(subprocess.Popen._internal_poll).parameters  # type: ignore[attr-defined]
#: The name under which the stock ``_internal_poll`` takes its waitpid.
POLL_TAKES_WAITPID = "_waitpid" in _STOCK_POLL_PARAMS
_STOCK_DEL_SAFE: Any = (
    _STOCK_POLL_PARAMS["_del_safe"].default if "_del_safe" in _STOCK_POLL_PARAMS else None
)


class _DelSafe:
    """The stock ``_del_safe`` with one object's ``waitpid`` in place of
    ``os.waitpid``; every other name is the stock one."""

    __slots__ = ("waitpid",)

    def __init__(self, waitpid: Any) -> None:
        self.waitpid = waitpid

    def __getattr__(self, name: str) -> Any:
        return getattr(_STOCK_DEL_SAFE, name)


def poll_kwargs(kwargs: dict[str, Any], waitpid: Callable[[int, int], tuple[int, int]]) -> None:
    """Hand the stock ``_internal_poll`` our ``waitpid`` (unless the caller
    passed its own shutdown-safe default)."""
    if POLL_TAKES_WAITPID:
        kwargs.setdefault("_waitpid", waitpid)
    elif _STOCK_DEL_SAFE is not None:
        kwargs.setdefault("_del_safe", _DelSafe(waitpid))


# -- the stock _execute_child on our fork_exec ---------------------------------

STOCK_FORK_EXEC: Callable[..., int] = _posixsubprocess.fork_exec
#: fork_exec's argument count on the CPython versions this module knows
#: (3.11 to 3.14: args ... preexec_fn, allow_vfork).
FORK_EXEC_ARGS = 23

#: CPython's own method (whatever `subprocess.Popen` is bound to later).
stock_execute_child: Any = subprocess.Popen._execute_child  # type: ignore[attr-defined]


def _names_read(code: types.CodeType) -> set[str]:
    """Every name ``code`` and the functions nested in it look up."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names_read(const)
    return names


# The subprocess globals the stock method reads (os, sys, _USE_VFORK...),
# refreshed before each call: the whole module dict would cost a few times
# more, on every spawn.
_READS = tuple(
    sorted(
        name
        for name in _names_read(stock_execute_child.__code__)
        if name in subprocess.__dict__ and name not in ("_fork_exec", "_USE_POSIX_SPAWN")
    )
)
_globals: dict[str, Any] = {"__builtins__": subprocess.__dict__["__builtins__"]}
_ours: Any = None
if stock_execute_child.__closure__ is None:
    _ours = types.FunctionType(
        stock_execute_child.__code__,
        _globals,
        stock_execute_child.__name__,
        stock_execute_child.__defaults__,
    )
    _ours.__kwdefaults__ = stock_execute_child.__kwdefaults__

#: The stock ``_execute_child``'s argument count (3.11 to 3.14: args ...
#: start_new_session, process_group).
EXECUTE_CHILD_ARGS = 23
#: Whether ``_execute_child`` is the method `pidfd._spawn.execute_plain`
#: knows how to stand in for.
KNOWN_EXECUTE_CHILD = (
    _ours is not None
    and stock_execute_child.__code__.co_argcount == EXECUTE_CHILD_ARGS + 1
    and stock_execute_child.__code__.co_varnames[EXECUTE_CHILD_ARGS] == "process_group"
)


#: Whether this CPython's parent side tells a failed ``chdir(cwd)``
#: (``noexec:chdir``, 3.13 on) from other failures before exec (``noexec``).
CHDIR_MARKER = "noexec:chdir" in stock_execute_child.__code__.co_consts


def execute_child_on(fork_exec: Callable[..., int]) -> Any:
    """The stock ``_execute_child`` calling ``fork_exec`` instead of
    ``_posixsubprocess.fork_exec``, or ``None`` where that cannot be done
    faithfully: someone replaced ``subprocess._fork_exec`` (a test's mock
    must see its calls) or the stock method is not the plain function this
    module knows.

    The copy reads the ``subprocess`` module's globals as they are now (a
    monkeypatched ``_USE_VFORK`` or ``os`` is honoured), with two
    exceptions: ``_fork_exec`` is ours, and ``os.posix_spawn`` is never
    used (it would bypass the native spawn).
    """
    stock = subprocess.__dict__
    if _ours is None or stock.get("_fork_exec") is not STOCK_FORK_EXEC:
        return None
    for name in _READS:
        _globals[name] = stock[name]
    _globals["_fork_exec"] = fork_exec
    _globals["_USE_POSIX_SPAWN"] = False
    return _ours
