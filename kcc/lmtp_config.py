"""The [[mailbox]] kind = "lmtp" keys, checked at start: where the MTA delivers, to whom, and within which limits.

Kept apart from kcc.config (which calls `check_lmtp`) because an LMTP mailbox is a listening socket: an address
that would accept mail from the whole network must be asked for explicitly, and two mailboxes can never share an
address or a recipient, so every mail has exactly one mailbox.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from kcc.errors import ConfigError

UNIX_PREFIX = "unix:"


class LmtpMailbox(Protocol):
    """The keys of kcc.config.MailboxConfig this module reads."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def listen(self) -> str: ...
    @property
    def recipients(self) -> tuple[str, ...]: ...
    @property
    def allow_remote(self) -> bool: ...
    @property
    def socket_mode(self) -> int: ...
    @property
    def max_message_bytes(self) -> int: ...
    @property
    def max_recipients(self) -> int: ...
    @property
    def max_connections(self) -> int: ...
    @property
    def idle_timeout(self) -> float: ...


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """`listen` parsed: a Unix socket path, or a host and a TCP port."""

    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def is_unix(self) -> bool:
        return bool(self.path)

    def __str__(self) -> str:
        if self.path:
            return f"{UNIX_PREFIX}{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(listen: str) -> ListenAddress | None:
    """`unix:/run/kcc/lmtp.sock` or `HOST:PORT` (`[::1]:2424` for IPv6); None when it is neither."""
    if listen.startswith(UNIX_PREFIX):
        path = listen[len(UNIX_PREFIX):]
        return ListenAddress(path=path) if path.startswith("/") else None
    host, colon, port = listen.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return ListenAddress(host=host, port=int(port))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_lmtp(mailboxes: Sequence[LmtpMailbox], where: str) -> None:
    """Refuse an LMTP mailbox that cannot work, would listen to the network unasked, or overlaps another."""
    owners: dict[str, str] = {}
    places: dict[str, str] = {}
    for mailbox in mailboxes:
        if mailbox.kind != "lmtp":
            continue
        label = f"mailbox {mailbox.name}"
        address = parse_listen(mailbox.listen)
        if address is None:
            raise ConfigError(
                f"{where}: {label}.listen {mailbox.listen!r} must be HOST:PORT (e.g. 127.0.0.1:2424) or "
                "unix:/absolute/path.sock"
            )
        if not address.is_unix and not is_loopback(address.host) and not mailbox.allow_remote:
            raise ConfigError(
                f"{where}: {label} would accept mail over LMTP from other machines on {address.host}, and LMTP "
                "has no sign-in; listen on 127.0.0.1 or a unix: socket, or set allow_remote = true and limit who "
                "can reach the port with a firewall"
            )
        if str(address) in places:
            raise ConfigError(
                f"{where}: mailboxes {places[str(address)]} and {mailbox.name} both listen on {address}; give each "
                "LMTP mailbox its own listen address"
            )
        places[str(address)] = mailbox.name
        if not mailbox.recipients:
            raise ConfigError(
                f"{where}: {label} is kind lmtp but lists no recipients; name the addresses it accepts, e.g. "
                'recipients = ["info@gemeente.nl"]'
            )
        for recipient in mailbox.recipients:
            local, at, domain = recipient.partition("@")
            if not at or not local or not domain or any(c.isspace() or c in "<>,;\"" for c in recipient):
                raise ConfigError(
                    f"{where}: {label}.recipients holds {recipient!r}, which is not one plain address like "
                    "info@gemeente.nl"
                )
            key = recipient.lower()
            if key in owners and owners[key] != mailbox.name:
                raise ConfigError(
                    f"{where}: {recipient} is a recipient of both mailbox {owners[key]} and {mailbox.name}; each "
                    "address belongs to one mailbox"
                )
            owners[key] = mailbox.name
        for key in ("max_message_bytes", "max_recipients", "max_connections", "idle_timeout"):
            if getattr(mailbox, key) <= 0:
                raise ConfigError(f"{where}: {label}.{key} must be more than 0, not {getattr(mailbox, key)}")
        if not 0 <= mailbox.socket_mode <= 0o777:
            raise ConfigError(
                f"{where}: {label}.socket_mode must be file permissions such as 0o660, not {mailbox.socket_mode}"
            )
