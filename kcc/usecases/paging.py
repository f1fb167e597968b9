"""A page of a list: its items and how many there are in all, so a list never stops short without saying so."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


class Page(list[T]):
    """The items of one page (a list), with `total`, `offset` and `limit` of the whole list."""

    def __init__(self, items: Iterable[T], *, total: int, offset: int = 0, limit: int | None = None) -> None:
        super().__init__(items)
        self.total = total
        self.offset = offset
        self.limit = limit

    @property
    def complete(self) -> bool:
        """Does this page hold the whole list?"""
        return self.offset == 0 and len(self) == self.total

    def note(self, noun: str) -> str:
        """'3 mails', or '500 of 1,249 mails shown (501–1,000 next: --offset 500)' when it is one page of more."""
        if self.complete:
            return f"{self.total:,} {noun}"
        shown = f"{len(self):,} of {self.total:,} {noun} shown"
        if self.offset:
            shown += f" (from number {self.offset + 1:,})"
        following = self.offset + len(self)
        return shown + (f"; --offset {following} shows the next" if following < self.total else "")
