"""W4: scale. Hold N sleeping children with one async waiter each, measure
threads, RSS growth and fds while holding, then SIGKILL them all and time
until every one has been reaped.

Each (backend, peer) repetition is a fresh interpreter: RSS is compared
between processes that did nothing else, floor and ours alternating.
"""

from __future__ import annotations

import gc
import os
import resource
import signal
import time

import _util
import anyio

from pidfd import AsyncPidFd

# A bound on how long a child could outlive a benchmark that was killed
# without a chance to clean up (SIGKILL of the whole run).
SLEEP_SECONDS = "300"


async def _floor(pid: int, parked: list[int]) -> None:
    fd = os.pidfd_open(pid)
    try:
        parked[0] += 1
        while os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG) is None:
            await anyio.wait_readable(fd)
    finally:
        os.close(fd)
    _util.reaped(pid)


async def _ours(pid: int, parked: list[int]) -> None:
    handle = AsyncPidFd.from_pid(pid)
    try:
        parked[0] += 1
        await handle.wait()
    finally:
        handle.close()
    _util.reaped(pid)


PEERS = {"floor": _floor, "ours": _ours}


async def _hold_and_kill(holder, n: int, base: dict[str, int], out: dict) -> None:
    pids = [_util.spawn([_util.SLEEP, SLEEP_SECONDS]) for _ in range(n)]
    parked = [0]
    async with anyio.create_task_group() as tg:
        for pid in pids:
            tg.start_soon(holder, pid, parked)
        while parked[0] < n:
            await anyio.sleep(0.01)
        await anyio.sleep(0.1)  # let the last ones reach their await
        out["threads"] = _util.threads()
        out["fds_growth"] = _util.fds() - base["fds"]
        out["rss_growth_kib"] = _util.rss_kib() - base["rss"]
        t0 = time.perf_counter()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    out["kill_to_reaped_s"] = time.perf_counter() - t0


def run(cfg: dict) -> dict:
    backend, peer, n = cfg["backend"], cfg["peer"], cfg["n"]
    holder = PEERS[peer]
    nproc, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    if nproc != resource.RLIM_INFINITY and nproc < n + 256:
        raise RuntimeError(
            f"RLIMIT_NPROC (ulimit -u) is {nproc}: too low for {n} children; "
            f"raise it or pass a smaller --w4-n"
        )
    limit = _util.raise_nofile(n + 256)
    if limit < n + 64:
        raise RuntimeError(f"RLIMIT_NOFILE allows only {limit} fds; lower --w4-n below {n}")
    try:
        warm: dict = {}
        anyio.run(
            _hold_and_kill,
            holder,
            20,
            {"fds": _util.fds(), "rss": _util.rss_kib()},
            warm,
            backend=backend,
        )
        gc.collect()
        base = {"fds": _util.fds(), "rss": _util.rss_kib()}
        out: dict = {"n": n}
        anyio.run(_hold_and_kill, holder, n, base, out, backend=backend)
        return out
    finally:
        _util.kill_and_reap_all()
