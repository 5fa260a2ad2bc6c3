"""The ``pidfd`` command: run a command or wait for any process, race-free.

Three subcommands, each with ``--help``::

    pidfd run [--timeout DURATION] [--kill-after DURATION] [--kill-tree] [--json] -- CMD [ARG...]
    pidfd wait [--timeout DURATION] [--count N] [--json] PID...
    pidfd info [--json] PID

``run`` is ``/usr/bin/time -v`` on a pidfd: the exit status and resource
usage come from one ``waitid(P_PIDFD)``, and signals are forwarded with
``pidfd_send_signal``, so nothing can hit a recycled pid. ``wait`` waits for
processes that are not our children, like util-linux ``waitpid(1)``, and
reports their exit status where the kernel can tell. The same entry point
runs as ``python -m pidfd``.

Exit statuses follow the wrappers people already script against: ``run``
exits with the command's code, dies by the signal that killed the command
(as ``timeout(1)`` does, so a shell loop stops on the first Ctrl-C), and
exits 124 when ``--timeout`` fired.
"""

from __future__ import annotations

import pidfd as _package

# The unrelated PyPI package `pidfd` installs its own pidfd/__init__.py over
# ours (pip says nothing): what imports then is theirs, or, once it is
# uninstalled, an empty namespace package. Say so, and how to mend it,
# before an import below fails with a bare "cannot import name".
if not hasattr(_package, "Cgroup"):
    raise ImportError(
        "the pidfd package on sys.path is not async-pidfd's whole package "
        f"(pidfd/__init__.py: {getattr(_package, '__file__', None) or 'missing'}); the "
        "unrelated PyPI package 'pidfd' installs over it. Repair: "
        "pip uninstall -y pidfd && pip install --force-reinstall --no-deps async-pidfd"
    )

from pidfd._cli.entry import console, main

__all__ = ["console", "main"]
