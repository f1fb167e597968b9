"""Address-list headers (From, To, Cc, Reply-To) read strictly: the address is the one inside the angle brackets.

Python 3.11's `email.utils.getaddresses` predates the CVE-2023-27043 fix: for `boss@gemeente.nl <jan@example.nl>`
it returns boss@gemeente.nl, a display name, as an address; the modern header parser does the same. A reply sent
there goes to whoever the sender chose to name. This reader follows RFC 5322 §3.4: outside quoted strings and
comments, commas separate mailboxes and a `name:` … `;` group is unwrapped; a mailbox with an angle-addr has that
address and nothing else; without one, the whole element (comments removed) must be one addr-spec.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One mailbox as written: its display phrase (still encoded, quotes removed) and its address text."""

    phrase: str
    address: str


def mailboxes(value: str) -> list[Mailbox]:
    """Every mailbox of an address-list header value (unfolded), in order; empty elements are left out."""
    return [box for element in _elements(value) if (box := _mailbox(element)) is not None]


def _elements(value: str) -> list[str]:
    """Split at top-level commas; a top-level colon opens a group (its name dropped), a semicolon closes it."""
    parts: list[str] = []
    current: list[str] = []
    quoted = angle = False
    depth = 0
    escape = False
    for char in value:
        if escape:
            current.append(char)
            escape = False
            continue
        if char == "\\" and (quoted or depth):
            current.append(char)
            escape = True
            continue
        if quoted:
            quoted = char != '"'
        elif depth:
            depth += {"(": 1, ")": -1}.get(char, 0)
        elif char == '"':
            quoted = True
        elif char == "(":
            depth = 1
        elif char == "<":
            angle = True
        elif char == ">":
            angle = False
        elif not angle and char in ",;":
            parts.append("".join(current))
            current = []
            continue
        elif not angle and char == ":":
            current = []  # `name:` of a group, or junk before an address: never part of a mailbox
            continue
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _mailbox(element: str) -> Mailbox | None:
    phrase, angle_addr, rest, comments = _scan(element)
    if angle_addr is not None:
        return Mailbox(" ".join(phrase.split()), angle_addr.strip())
    address = "".join(rest.split())
    if not address:
        return None
    return Mailbox(" ".join(" ".join(comments).split()), address)


def _scan(element: str) -> tuple[str, str | None, str, list[str]]:
    """(phrase before the last angle-addr, that angle-addr's content or None, the text outside comments, comments).

    Quoted strings lose their quotes (and backslash escapes) in the phrase; comments are dropped from both.
    """
    phrase: list[str] = []
    outside: list[str] = []
    comments: list[str] = []
    comment: list[str] = []
    angle: list[str] | None = None
    last_angle: str | None = None
    phrase_before_angle = ""
    quoted = escape = False
    depth = 0
    for char in element:
        if escape:
            (comment if depth else angle if angle is not None else phrase).append(char)
            if not depth and angle is None:
                outside.append(char)
            escape = False
            continue
        if char == "\\" and (quoted or depth):
            escape = True
            continue
        if depth:
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if not depth:
                    comments.append("".join(comment))
                    comment = []
                    continue
            comment.append(char)
            continue
        if quoted:
            if char == '"':
                quoted = False
                outside.append(char)
            else:
                (angle if angle is not None else phrase).append(char)
                outside.append(char)
            continue
        if char == '"':
            quoted = True
            outside.append(char)  # an addr-spec keeps the quotes of a quoted local part (the reader refuses it)
        elif char == "(":
            depth = 1
        elif char == "<" and angle is None:
            angle = []
            phrase_before_angle = "".join(phrase)
        elif char == ">" and angle is not None:
            last_angle = "".join(angle)
            angle = None
            phrase = [phrase_before_angle]
        elif angle is not None:
            angle.append(char)
        else:
            phrase.append(char)
            outside.append(char)
    if angle is not None:  # "Jan <jan@example.nl" without its '>': what follows the '<' is still the address
        last_angle = "".join(angle)
        phrase = [phrase_before_angle]
    return "".join(phrase), last_angle, "".join(outside), comments
