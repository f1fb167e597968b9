"""Text from an HTML body too large for inscriptis: the stdlib's streaming HTML parser, no document tree.

inscriptis lays the text out well (tables, lists, indentation) but builds an lxml tree first: a 44 MB HTML body
took 1.3 GB. Above `TREE_MAX_CHARS` the text is taken in one pass instead: the words in order, a line break at
every block element, scripts and style sheets left out. Such a body is read in the original anyway.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

TREE_MAX_CHARS = 2_000_000
"""Up to this many characters of HTML inscriptis does the layout; beyond it, `streamed_text`."""
FEED_CHARS = 65_536

_BLOCKS = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption", "figure", "footer",
    "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
    "table", "td", "th", "tr", "ul",
})
_WHITESPACE = re.compile(r"\s+")
_HIDDEN = frozenset({"script", "style"})
"""Left out. Only these two: the parser reads their content as raw text up to their end tag, as browsers do,
so an unclosed one hides no more than it would on screen; an unclosed <head> or <title> would hide the mail."""


class _TextCollector(HTMLParser):
    """Collects finished lines, not pieces: a list of millions of small strings costs more than the text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._line: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag in _BLOCKS:
            self.end_line()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCKS:
            self.end_line()

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCKS:
            self.end_line()

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self._line.append(data)

    def end_line(self) -> None:
        if self._line:
            line = _WHITESPACE.sub(" ", "".join(self._line)).strip()  # HTML folds every run of white space
            self._line = []
            if line:
                self.lines.append(line)


def streamed_text(html: str) -> str:
    """The visible words of `html` in order, one block element a line; memory a small multiple of the text."""
    collector = _TextCollector()
    for start in range(0, len(html), FEED_CHARS):
        collector.feed(html[start:start + FEED_CHARS])
    collector.close()
    collector.end_line()
    return "\n".join(collector.lines)
