"""Run a Python snippet in a child process that sees an older kernel.

A seccomp filter makes one system call (or one ioctl request, one flag, one
socket option) fail with the errno an older kernel gives, so the code paths
that say "needs Linux >= X" run for real on a new kernel. The filter is raw
classic BPF installed with ``prctl`` through ctypes: no libseccomp needed.

Only x86_64 syscall numbers are known here; :data:`SKIP_REASON` is set on
other machines and the tests skip with it.

Example::

    from _seccomp import NR_PIDFD_OPEN, Rule, run_snippet
    out = run_snippet(
        "from pidfd import PidFd\\nreport(lambda: PidFd.from_pid(1))",
        [Rule(NR_PIDFD_OPEN, errno.ENOSYS)],
    )
    assert out["errno"] == errno.ENOSYS
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
from dataclasses import asdict, dataclass
from typing import Any

import pytest

# x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl).
NR_IOCTL = 16
NR_GETSOCKOPT = 55
NR_WAITID = 247
NR_PIDFD_SEND_SIGNAL = 424
NR_PIDFD_OPEN = 434
NR_CLONE3 = 435
NR_PIDFD_GETFD = 438

AUDIT_ARCH_X86_64 = 0xC000003E

# _IOWR(0xFF, 11, struct pidfd_info), 88 bytes (up to supported_mask): what
# pidfd sends for PIDFD_GET_INFO.
PIDFD_GET_INFO = (3 << 30) | (88 << 16) | (0xFF << 8) | 11
PIDFD_THREAD = os.O_EXCL
SO_PEERPIDFD = 77
P_PIDFD = 3

# The child's exit status when it cannot install a filter.
_UNAVAILABLE = 77

SKIP_REASON: str | None = (
    None
    if platform.machine() == "x86_64" and sys.platform.startswith("linux")
    else f"the seccomp helper knows only x86_64 syscall numbers, not {platform.machine()}"
)


@dataclass(frozen=True)
class Rule:
    """Make syscall ``nr`` fail with ``errno``.

    With ``arg`` set, only when argument ``arg`` (its low 32 bits) equals
    ``value``, or, with ``any_bits=True``, has any of the bits in ``value``.
    """

    nr: int
    errno: int
    arg: int | None = None
    value: int = 0
    any_bits: bool = False


# The child's side: build the BPF program, install it, define report().
_PRELUDE = r"""
import ctypes, json, os, sys
_UNAVAILABLE = __UNAVAILABLE__

def _install(rules):
    BPF_LD_W_ABS = 0x20
    BPF_JEQ_K = 0x15
    BPF_JSET_K = 0x45
    BPF_RET_K = 0x06
    RET_ALLOW = 0x7FFF0000
    RET_ERRNO = 0x00050000
    OFF_NR, OFF_ARCH, OFF_ARGS = 0, 4, 16

    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                    ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Insn))]

    prog = [
        (BPF_LD_W_ABS, 0, 0, OFF_ARCH),
        # Another ABI (e.g. x32 or i386 compat): let everything through.
        (BPF_JEQ_K, 1, 0, __ARCH__),
        (BPF_RET_K, 0, 0, RET_ALLOW),
    ]
    for r in rules:
        block = [(BPF_LD_W_ABS, 0, 0, OFF_NR), [BPF_JEQ_K, 0, None, r["nr"]]]
        if r["arg"] is not None:
            # Little-endian: the low 32 bits of args[i] come first.
            block.append((BPF_LD_W_ABS, 0, 0, OFF_ARGS + 8 * r["arg"]))
            block.append([BPF_JSET_K if r["any_bits"] else BPF_JEQ_K, 0, None, r["value"]])
        block.append((BPF_RET_K, 0, 0, RET_ERRNO | r["errno"]))
        # A failed test skips to the next rule, just past this block.
        for i, insn in enumerate(block):
            if isinstance(insn, list):
                insn[2] = len(block) - i - 1
        prog.extend(tuple(insn) for insn in block)
    prog.append((BPF_RET_K, 0, 0, RET_ALLOW))

    insns = (Insn * len(prog))(*[Insn(*i) for i in prog])
    fprog = Prog(len(prog), insns)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p,
                           ctypes.c_ulong, ctypes.c_ulong]
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")

def _jsonable(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)

def report(fn):
    '''Call fn() and print its outcome as the last line, as JSON.'''
    try:
        value = fn()
    except BaseException as exc:
        out = {"ok": False, "type": type(exc).__name__,
               "errno": getattr(exc, "errno", None), "message": str(exc)}
    else:
        out = {"ok": True, "value": _jsonable(value)}
    print(json.dumps(out), flush=True)

try:
    _install(json.loads(os.environ.pop("PIDFD_TEST_SECCOMP_RULES")))
except OSError as exc:
    # A sandbox that forbids seccomp filters: the tests skip, not fail.
    print("seccomp unavailable:", exc, file=sys.stderr)
    sys.exit(_UNAVAILABLE)
"""


def run_snippet(code: str, rules: list[Rule], timeout: float = 120.0) -> dict[str, Any]:
    """Run ``code`` in ``sys.executable`` under a filter made of ``rules``.

    ``timeout`` only stops a hung child: a snippet that starts three
    interpreters and imports trio took over 30 s in an emulated (TCG) VM
    on a busy machine (``scripts/kernels``).

    ``code`` runs after the filter is installed and may call ``report(fn)``;
    the JSON of its last output line is returned: ``{"ok": True, "value": …}``
    or ``{"ok": False, "type", "errno", "message"}``. The calling test skips
    where seccomp filters are not allowed; a child that fails otherwise
    raises ``AssertionError`` with its stderr.
    """
    env = dict(os.environ)
    env["PIDFD_TEST_SECCOMP_RULES"] = json.dumps([asdict(r) for r in rules])
    prelude = _PRELUDE.replace("__ARCH__", hex(AUDIT_ARCH_X86_64)).replace(
        "__UNAVAILABLE__", str(_UNAVAILABLE)
    )
    proc = subprocess.run(
        [sys.executable, "-c", prelude + "\n" + textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode == _UNAVAILABLE and "seccomp unavailable" in proc.stderr:
        pytest.skip(proc.stderr.strip())
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0 and lines, (
        f"snippet failed with {proc.returncode}:\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    )
    result: dict[str, Any] = json.loads(lines[-1])
    return result
