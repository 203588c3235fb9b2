"""What every inbox adapter shares: ``async with store:`` opens and closes it."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class StoreBase:
    """Base of the adapters: the async context manager over ``open``/``close``."""

    async def open(self) -> None:
        """Connect (each adapter defines it)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Disconnect (each adapter defines it)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
