"""Byte streams over the non-blocking pipe fds of a `pidfd.Process`.

Plain fds, read and written with ``os.read`` / ``os.write`` after awaiting
readiness with ``anyio.wait_readable`` / ``anyio.wait_writable``: the same
code on asyncio (any version, no transports, no protocol objects) and on
trio. Closing a stream tells the event loop first (``anyio.notify_closing``),
which wakes a task blocked on it with ``ClosedResourceError`` and stops the
loop from watching an fd number that the kernel may hand out again.
"""

from __future__ import annotations

import contextlib
import os

import anyio
import anyio.abc
import anyio.lowlevel

__all__ = ["PipeReceiveStream", "PipeSendStream"]


class _PipeEnd:
    """Owns one non-blocking fd; ``-1`` once closed."""

    __slots__ = ("_busy", "_fd")

    _busy: bool
    _fd: int

    def __init__(self, fd: int) -> None:
        # Set first, so __del__ has something to look at if set_blocking fails.
        self._fd = fd
        self._busy = False
        os.set_blocking(fd, False)

    def fileno(self) -> int:
        """The raw fd (``ValueError`` once closed)."""
        if self._fd < 0:
            raise ValueError("the stream is closed")
        return self._fd

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            # Wake a task blocked on the fd, and drop it from the loop's
            # watch list, before the number can be reused. Outside a running
            # loop (__del__ at shutdown) nobody is watching: nothing to tell.
            with contextlib.suppress(RuntimeError, LookupError):
                anyio.notify_closing(fd)
            os.close(fd)

    async def aclose(self) -> None:
        """Close the fd. Idempotent; a task blocked on the stream gets
        ``anyio.ClosedResourceError``."""
        self._close()
        await anyio.lowlevel.checkpoint()

    def __del__(self) -> None:
        # Silently, as trio's FdStream and the fd's file object would at
        # garbage collection: the stream is unreachable, so nobody waits on it.
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def _claim(self, what: str) -> int:
        if self._fd < 0:
            raise anyio.ClosedResourceError
        if self._busy:
            raise anyio.BusyResourceError(what)
        self._busy = True
        return self._fd


class PipeReceiveStream(_PipeEnd, anyio.abc.ByteReceiveStream):
    """The parent's end of a child's stdout or stderr pipe.

    ``receive()`` returns what is available (at most ``max_bytes``), and
    raises ``anyio.EndOfStream`` once the child side is closed and drained;
    after ``aclose()`` it raises ``anyio.ClosedResourceError``.
    """

    __slots__ = ()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        await anyio.lowlevel.checkpoint_if_cancelled()
        fd = self._claim("reading from")
        waited = False
        try:
            while True:
                try:
                    data = os.read(fd, max_bytes)
                    break
                except BlockingIOError:
                    pass
                await anyio.wait_readable(fd)
                waited = True
                if self._fd != fd:  # closed while we waited
                    raise anyio.ClosedResourceError
        finally:
            self._busy = False
        if not waited:
            # A receive is a checkpoint even when data was already there.
            await anyio.lowlevel.cancel_shielded_checkpoint()
        if not data:
            raise anyio.EndOfStream
        return data

    async def _read_to_end(self) -> bytes:
        """Everything up to the end of the stream, for `run_process`: no
        checkpoint of its own where data is already there (``receive()``
        makes one per chunk), and no claim (nobody else holds the stream)."""
        fd = self.fileno()
        chunks: list[bytes] = []
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                await anyio.wait_readable(fd)
                continue
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    def __repr__(self) -> str:
        return f"<PipeReceiveStream fd={self._fd}>"


class PipeSendStream(_PipeEnd, anyio.abc.ByteSendStream):
    """The parent's end of a child's stdin pipe.

    ``send()`` returns once every byte is in the pipe. It raises
    ``anyio.BrokenResourceError`` once the child has closed its end (exited),
    and ``anyio.ClosedResourceError`` after ``aclose()``, which is how the
    child sees end of input.
    """

    __slots__ = ()

    async def send(self, item: bytes) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        fd = self._claim("writing to")
        waited = False
        try:
            with memoryview(item) as whole, whole.cast("B") as view:
                sent = 0
                while sent < len(view):
                    try:
                        sent += os.write(fd, view[sent:])
                        continue
                    except BlockingIOError:
                        pass
                    except BrokenPipeError as exc:
                        raise anyio.BrokenResourceError from exc
                    await anyio.wait_writable(fd)
                    waited = True
                    if self._fd != fd:
                        raise anyio.ClosedResourceError
        finally:
            self._busy = False
        if not waited:
            await anyio.lowlevel.cancel_shielded_checkpoint()

    def __repr__(self) -> str:
        return f"<PipeSendStream fd={self._fd}>"
