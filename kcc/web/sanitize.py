"""A mail's HTML made harmless to show: nh3 (ammonia) keeps the layout tags and drops everything that runs,
submits, embeds or fetches; inline images (cid:) point at this server; remote images only when asked.

What stays is shown under the frame policy of kcc.web.security, so even a mistake here cannot run script or
reach another host: two locks, each enough on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import nh3

TAGS = (nh3.ALLOWED_TAGS - {"area", "map"}) | {"font", "tfoot"}
ATTRIBUTES: dict[str, set[str]] = {
    **{tag: set(values) for tag, values in nh3.ALLOWED_ATTRIBUTES.items()},
    "*": {"style", "dir", "lang", "title", "align", "valign", "width", "height", "bgcolor"},
    "font": {"color", "face", "size"},
    "table": {"summary", "align", "border", "cellpadding", "cellspacing", "width"},
}
STYLE_PROPERTIES = frozenset({
    "color", "background-color", "font", "font-family", "font-size", "font-style", "font-weight", "line-height",
    "text-align", "text-decoration", "text-indent", "text-transform", "letter-spacing", "white-space",
    "vertical-align", "margin", "margin-top", "margin-right", "margin-bottom", "margin-left", "padding",
    "padding-top", "padding-right", "padding-bottom", "padding-left", "border", "border-top", "border-right",
    "border-bottom", "border-left", "border-color", "border-style", "border-width", "border-collapse",
    "border-spacing", "width", "max-width", "min-width", "height", "list-style-type", "display",
})
"""Layout only: no property that takes a url() (background-image, content, cursor…), so style cannot fetch."""
DROPPED_WITH_CONTENT = frozenset({"script", "style", "title", "noscript", "template", "xmp", "iframe", "object"})


@dataclass(frozen=True, slots=True)
class SafeHtml:
    html: str
    remote_images_blocked: int
    """How many remote images were left out; the screen offers to show them."""


def mail_html(html: str, *, inline_image: Callable[[str], str | None], remote_images: bool) -> SafeHtml:
    """The mail's HTML, sanitised: `inline_image(content_id)` gives the URL of a cid: image (None: not ours).

    "cid" is an allowed URL scheme only so the filter sees it: it is rewritten on an image and dropped elsewhere.
    """
    blocked = 0

    def source(element: str, attribute: str, value: str) -> str | None:
        nonlocal blocked
        lowered = value.strip().lower()
        if element != "img" or attribute != "src":
            return None if lowered.startswith("cid:") else value
        if lowered.startswith("cid:"):
            return inline_image(value.strip()[4:].strip("<>"))
        if lowered.startswith(("http://", "https://", "//")):
            if remote_images and not lowered.startswith("//"):
                return value
            blocked += 1
            return None
        return None  # data:, file:, relative: nothing the frame could load on purpose

    cleaned = nh3.clean(
        html, tags=set(TAGS), clean_content_tags=set(DROPPED_WITH_CONTENT), attributes=ATTRIBUTES,
        attribute_filter=source, url_schemes={"http", "https", "mailto", "cid"}, link_rel="noopener noreferrer",
        set_tag_attribute_values={"a": {"target": "_blank"}}, filter_style_properties=set(STYLE_PROPERTIES),
        strip_comments=True,
    )
    return SafeHtml(cleaned, blocked)
