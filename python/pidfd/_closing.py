"""`Closing`: ``with`` and ``async with`` for an object that ends in ``close()``.

`AsyncPidFd` and `Cgroup` are both context managers of either kind; what
differs is only the check on entry and how leaving an ``async with`` closes.
`Subreaper` has an ``__enter__`` of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import types
    from typing import Self


class Closing:
    """Entering checks (``_check_open()``); leaving ``with`` calls ``close()``;
    ``async with`` enters as ``with`` does (nothing there blocks) and leaves
    through ``_close_async()`` (``close()`` unless a subclass awaits more)."""

    def close(self) -> None:
        raise NotImplementedError

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        """Raise ``ValueError`` on entering a closed object."""

    async def _close_async(self) -> None:
        self.close()

    def __enter__(self) -> Self:
        self._check_open()
        return self

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self._close_async()
