"""IMAP mailbox source: read a folder with BODY.PEEK[] (never setting \\Seen), then mark what was stored.

An adapter only: it turns the MailSource contract into IMAP commands and every socket or protocol failure into a
SourceError that names the mailbox, the server and what to check. It never logs mail contents or secrets.
"""

from __future__ import annotations

import imaplib
import logging
import random
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import CapabilityError, LoginError

from ingest.sources.base import FetchedMail, FolderStatus, MailCommandError, MailRef, SourceError

log = logging.getLogger(__name__)

T = TypeVar("T")

BATCH_BYTES = 20 * 1024 * 1024
"""Upper bound of one FETCH batch, so memory stays bounded whatever the mailbox holds (a bigger mail goes alone)."""
COMMAND_CHUNK = 500
"""UIDs per SIZE/STORE/MOVE command: keeps command lines short on servers that limit their length."""
IDLE_MAX_SECONDS = 25 * 60
IDLE_SETTLE_SECONDS = 0.7  # Dovecot announces new mail 0.5 s after it arrives
"""RFC 2177: servers may drop an IDLE after 30 minutes, so one IDLE never lasts longer than this."""

_CONNECTION_LOST = (OSError, imaplib.IMAP4.abort)
_COMMAND_REFUSED = imaplib.IMAP4.error
_BODY = b"BODY[]"


Security = Literal["tls", "starttls", "none"]
AuthMethod = Literal["password", "xoauth2"]


def _no_secret() -> str:
    return ""


@dataclass(frozen=True, slots=True)
class ImapSettings:
    """How to reach one IMAP folder and how to mark what was stored, as the application configures it.

    `secret` is called at every connect (a password, or an OAuth2 access token for `auth = "xoauth2"`), so a
    rotated token is picked up; `secret_source` says where it is kept, for error messages (never the secret).
    """

    mailbox: str
    host: str
    port: int = 993
    security: Security = "tls"
    auth: AuthMethod = "password"
    username: str = ""
    secret: Callable[[], str] = _no_secret
    secret_source: str = "the configured password"
    folder: str = "INBOX"
    processed_folder: str = ""
    processed_keyword: str = "$KccOpgeslagen"
    batch_size: int = 50
    timeout: float = 60.0


class _CommandRefused(SourceError):
    """The server answered NO or BAD: the connection is fine, this command (or one mail in it) is not."""


class ImapSource:
    """One IMAP folder as a MailSource; one connection, opened (and reopened) by `open()`."""

    def __init__(
        self,
        settings: ImapSettings,
        *,
        max_mail_bytes: int,
        ssl_context: ssl.SSLContext | None = None,
        connect_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        self.mailbox = settings.mailbox
        self._settings = settings
        self._max_mail_bytes = max_mail_bytes
        self._ssl_context = ssl_context
        self._attempts = max(1, connect_attempts)
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._batch_bytes = batch_bytes
        self._client: Any = None
        self._secret = ""
        self._processed_folder_ready = False
        self._listed_up_to: int | None = None

    # --- the MailSource contract ----------------------------------------------------------------------------

    def open(self) -> FolderStatus:
        """Select the folder, (re)connecting first when needed, with capped exponential backoff between tries.

        Errors that another try cannot fix (login refused, certificate, missing folder) are raised at once.
        """
        if self._client is not None:
            try:
                return self._select()
            except _CONNECTION_LOST:
                self._drop()  # a connection that died while we were away: reconnect at once
        last: BaseException | None = None
        for attempt in range(self._attempts):
            if attempt:
                time.sleep(self._backoff(attempt))
            try:
                return self._open_once()
            except _CONNECTION_LOST as exc:
                self._drop()
                last = exc
                log.warning("mailbox=%s connecting to %s failed (try %d of %d): %s",
                            self.mailbox, self._address, attempt + 1, self._attempts, self._redact(str(exc)),
                            extra=self._context)
        raise self._error(
            f"cannot connect after {self._attempts} tries: {_describe(last)}",
            "that the server is up and reachable and that host, port and security in the configuration match it",
        )

    def list_new(self, above_uid: int) -> list[MailRef]:
        """UIDs above `above_uid` not yet marked processed, with their sizes, lowest UID first."""
        uids = self._search_new(above_uid)
        sizes: dict[int, int] = {}
        for chunk in _chunks(uids, COMMAND_CHUNK):
            sizes.update(self._sizes(chunk))
        self._listed_up_to = max([above_uid, *uids])
        # A UID without a size was expunged between SEARCH and FETCH: it is gone, not new.
        return [MailRef(uid=uid, key=str(uid), size=sizes[uid]) for uid in uids if uid in sizes]

    def _search_new(self, above_uid: int) -> list[int]:
        """UID SEARCH for unprocessed mail above `above_uid`, ascending."""
        criteria: list[str] = ["UID", f"{above_uid + 1}:*"]
        if not self._settings.processed_folder:
            criteria += ["NOT", "KEYWORD", self._settings.processed_keyword]
        found = self._call("UID SEARCH", lambda c: c.search(criteria))
        # "N:*" always matches the highest UID, even when that is below N: filter it out.
        return sorted(int(uid) for uid in found if int(uid) > above_uid)

    def _sizes(self, uids: list[int]) -> dict[int, int]:
        """RFC822.SIZE per UID, so intake knows a mail is too large before it asks for the bytes."""
        response = self._call("FETCH RFC822.SIZE", lambda c: c.fetch(uids, ["RFC822.SIZE"]))
        return {int(uid): int(data[b"RFC822.SIZE"]) for uid, data in response.items() if b"RFC822.SIZE" in data}

    def fetch(self, refs: Sequence[MailRef]) -> Iterator[FetchedMail | MailCommandError]:
        """Yield each mail via BODY.PEEK[] in batches bounded by count and bytes; one bad mail yields its error."""
        for batch in self._batches(refs):
            yield from self._fetch_batch(batch)

    def mark_processed(self, refs: Sequence[MailRef]) -> None:
        """Add the processed keyword, or move the mails to the processed folder; \\Seen is never touched."""
        uids = [ref.uid for ref in refs if ref.uid is not None]
        if not uids:
            return
        mark = self._mover() if self._settings.processed_folder else self._keyword_adder()
        failed: list[int] = []
        for chunk in _chunks(uids, COMMAND_CHUNK):
            failed += self._mark_chunk(chunk, mark)
        if failed:
            raise MailCommandError(self._message(
                f"could not mark UID {', '.join(map(str, failed))} as processed",
                "the server log; these mails will be fetched again and skipped as already stored",
            ))

    def wait(self, timeout: float) -> bool:
        """IDLE until the server reports new mail or `timeout` (at most 25 minutes) passes; poll without IDLE.

        Mail that arrived since `list_new` is found by a UID SEARCH first, because the server announced it in
        an earlier response and IDLE will not repeat that; a second SEARCH after a short first IDLE catches mail
        that landed between the first SEARCH and the IDLE command.
        """
        if not self._call("CAPABILITY", lambda c: bool(c.has_capability("IDLE"))):
            time.sleep(timeout)
            return False
        if self._arrived_since_listing():
            return True
        budget = min(timeout, IDLE_MAX_SECONDS)
        first = min(budget, IDLE_SETTLE_SECONDS)
        if self._call("IDLE", lambda c: self._idle(c, first)):
            return True
        # Mail that landed between the SEARCH and the IDLE command is not announced in IDLE (measured on
        # Dovecot 2.3); a second look once IDLE had time to report catches it within a second.
        if self._arrived_since_listing():
            return True
        remaining = budget - first
        return remaining > 0 and self._call("IDLE", lambda c: self._idle(c, remaining))

    def close(self) -> None:
        """Log out; a connection that is already dead is just dropped. Safe to call twice."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:  # closing must not fail because the connection already has
            _shutdown(client)

    def logged_in_client(self) -> Any:
        """The logged-in connection, made when needed, for other commands on this account (a Sent-folder copy)."""
        if self._client is None:
            self._client = self._connect()
        return self._client

    # --- connecting -----------------------------------------------------------------------------------------

    @property
    def _address(self) -> str:
        return f"{self._settings.host}:{self._settings.port}"

    def _open_once(self) -> FolderStatus:
        if self._client is None:
            self._client = self._connect()
        return self._select()

    def _select(self) -> FolderStatus:
        """SELECT read-write (we store keywords); a refusal means a wrong folder name, not a network problem."""
        try:
            info = self._client.select_folder(self._settings.folder, readonly=False)
        except _CONNECTION_LOST:
            raise
        except _COMMAND_REFUSED as exc:
            raise self._error(f"cannot select folder {self._settings.folder!r}: {_server_text(exc)}",
                              "that the folder exists for this user (mailbox.folder)") from exc
        uidnext = info.get(b"UIDNEXT")
        return FolderStatus(
            uidvalidity=int(info[b"UIDVALIDITY"]),
            uidnext=int(uidnext) if uidnext is not None else None,
            exists=int(info.get(b"EXISTS", 0)),
        )

    def _connect(self) -> Any:
        """Dial, secure and log in; any half-made connection is closed again when a step fails."""
        self._secret = self._read_secret()
        self._processed_folder_ready = False
        self._listed_up_to = None
        security = self._settings.security
        context = self._ssl_context or ssl.create_default_context()
        try:
            client = IMAPClient(self._settings.host, self._settings.port, ssl=security == "tls",
                                ssl_context=context if security == "tls" else None, timeout=self._settings.timeout)
        except ssl.SSLError as exc:
            raise self._tls_error(exc) from exc
        except _CONNECTION_LOST:
            raise
        except _COMMAND_REFUSED as exc:
            raise self._error(f"the server's greeting is not that of an IMAP server: {_server_text(exc)}",
                              "host and port (993 for tls, 143 for starttls)") from exc
        try:
            if security == "starttls":
                client.starttls(context)
            self._login(client)
            client.normalise_times = False
        except ssl.SSLError as exc:
            _shutdown(client)
            raise self._tls_error(exc) from exc
        except CapabilityError as exc:
            _shutdown(client)
            raise self._error("the server does not offer STARTTLS",
                              "security = \"tls\" with the imaps port (993) instead") from exc
        except _CONNECTION_LOST:
            _shutdown(client)
            raise
        except _COMMAND_REFUSED as exc:
            _shutdown(client)
            raise self._error(f"the server refused to set up the session: {_server_text(exc)}",
                              "security and auth in the configuration") from exc
        except BaseException:
            _shutdown(client)
            raise
        log.info("mailbox=%s connected to %s", self.mailbox, self._address, extra=self._context)
        return client

    def _login(self, client: Any) -> None:
        """LOGIN, or AUTHENTICATE PLAIN when the name or password is not ASCII (LOGIN cannot carry it; PLAIN is
        UTF-8, RFC 4616), or AUTHENTICATE XOAUTH2 with a token."""
        username, secret = self._settings.username, self._secret
        try:
            if self._settings.auth == "xoauth2":
                log.debug("mailbox=%s > AUTHENTICATE XOAUTH2 as %s", self.mailbox, username, extra=self._context)
                client.oauth2_login(username, secret)
            elif username.isascii() and secret.isascii():
                log.debug("mailbox=%s > LOGIN as %s", self.mailbox, username, extra=self._context)
                client.login(username, secret)
            else:
                log.debug("mailbox=%s > AUTHENTICATE PLAIN as %s", self.mailbox, username, extra=self._context)
                client.plain_login(username, secret)
        except CapabilityError:
            raise self._error(
                "the password or user name has non-ASCII characters, which IMAP LOGIN cannot carry, and the server "
                "does not offer AUTHENTICATE PLAIN", "the server's authentication settings, or use an ASCII password",
            ) from None
        except LoginError as exc:
            what = "token" if self._settings.auth == "xoauth2" else "password"
            raise self._error(
                f"login refused for user {self._settings.username!r}: {_server_text(exc)}",
                f"the username and the {what} in {self._secret_source()}",
            ) from None

    def _read_secret(self) -> str:
        """Read the password or token each time we connect, so a rotated token file is picked up."""
        return self._settings.secret()

    def _secret_source(self) -> str:
        return self._settings.secret_source

    def _backoff(self, attempt: int) -> float:
        """Exponential, capped, with jitter so many workers do not hammer a recovering server in step."""
        delay = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
        return random.uniform(delay / 2, delay)

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            _shutdown(client)

    # --- commands -------------------------------------------------------------------------------------------

    def _require_client(self) -> Any:
        if self._client is None:
            raise self._error("not connected", "that open() is called (again) before using the mailbox")
        return self._client

    def _call(self, what: str, action: Callable[[Any], T]) -> T:
        """Run one command; a lost connection or a refusal becomes a SourceError that says which."""
        client = self._require_client()
        log.debug("mailbox=%s > %s", self.mailbox, what, extra=self._context)
        try:
            return action(client)
        except _CONNECTION_LOST as exc:
            self._drop()
            raise self._error(f"connection lost during {what}: {_describe(exc)}",
                              "the network and the server; the next open() reconnects") from exc
        except _COMMAND_REFUSED as exc:
            raise _CommandRefused(self._message(f"the server refused {what}: {_server_text(exc)}",
                                                "the server log for this user")) from exc

    def _batches(self, refs: Iterable[MailRef]) -> Iterator[list[MailRef]]:
        """Group refs by `batch_size` and by bytes; a mail larger than the byte bound travels alone."""
        batch: list[MailRef] = []
        size = 0
        for ref in refs:
            mail_size = ref.size or 0
            if batch and (len(batch) >= self._settings.batch_size or size + mail_size > self._batch_bytes):
                yield batch
                batch, size = [], 0
            batch.append(ref)
            size += mail_size
        if batch:
            yield batch

    def _fetch_batch(self, batch: list[MailRef]) -> Iterator[FetchedMail | MailCommandError]:
        """One UID FETCH for the batch; when the server refuses it, each mail is tried alone to find the bad one."""
        for ref in batch:
            if ref.size is not None and ref.size > self._max_mail_bytes:
                log.info("mailbox=%s uid=%s is %d bytes, above the limit; fetched to be kept in quarantine",
                         self.mailbox, ref.uid, ref.size, extra=self._context)
        uids = [ref.uid for ref in batch if ref.uid is not None]
        try:
            response = self._call("UID FETCH BODY.PEEK[]", lambda c: c.fetch(uids, ["BODY.PEEK[]", "INTERNALDATE"]))
        except _CommandRefused as exc:
            if len(batch) == 1:
                yield MailCommandError(str(exc))
                return
            for ref in batch:
                yield from self._fetch_batch([ref])
            return
        for ref in batch:
            data = response.pop(ref.uid, None) if ref.uid is not None else None
            if data is None or data.get(_BODY) is None:
                # Not returned at all, or BODY[] NIL: Dovecot's answer for a mail expunged by another session.
                yield MailCommandError(self._message(
                    f"UID {ref.uid} was not returned by the server",
                    "nothing: another client probably expunged or moved it meanwhile",
                ))
                continue
            yield FetchedMail(ref=ref, raw=bytes(data[_BODY]), internaldate=_utc(data.get(b"INTERNALDATE")))

    def _mark_chunk(self, chunk: list[int], mark: Callable[[Any, list[int]], object]) -> list[int]:
        """Mark a chunk at once; when the server refuses, mark one by one and return the UIDs that failed."""
        try:
            self._call("marking processed", lambda c: mark(c, chunk))
            return []
        except _CommandRefused:
            if len(chunk) == 1:
                return chunk
        return [uid for uid in chunk if self._mark_chunk([uid], mark)]

    def _prepare_processed_folder(self) -> None:
        """Create the processed folder once per connection when it is missing."""
        if self._processed_folder_ready:
            return
        folder = self._settings.processed_folder
        if not self._call("LIST", lambda c: c.folder_exists(folder)):
            self._call(f"CREATE {folder}", lambda c: c.create_folder(folder))
            log.info("mailbox=%s created processed folder %r", self.mailbox, folder, extra=self._context)
        self._processed_folder_ready = True

    def _keyword_adder(self) -> Callable[[Any, list[int]], object]:
        """+FLAGS.SILENT (keyword): the mail stays where the employee sees it, \\Seen untouched."""
        keyword = self._settings.processed_keyword

        def add_keyword(c: Any, chunk: list[int]) -> None:
            c.add_flags(chunk, [keyword], silent=True)

        return add_keyword

    def _mover(self) -> Callable[[Any, list[int]], object]:
        """UID MOVE where the server has it; else COPY + \\Deleted + UID EXPUNGE, which needs UIDPLUS."""
        self._prepare_processed_folder()
        folder = self._settings.processed_folder
        if self._call("CAPABILITY", lambda c: c.has_capability("MOVE")):
            return lambda c, chunk: c.move(chunk, folder)
        if not self._call("CAPABILITY", lambda c: c.has_capability("UIDPLUS")):
            raise self._error(
                "the server supports neither MOVE nor UIDPLUS, so mails cannot be moved without expunging "
                "other mails marked deleted",
                "processed_folder: leave it empty to mark processed mails with a keyword instead",
            )

        def copy_and_expunge(c: Any, chunk: list[int]) -> None:
            c.copy(chunk, folder)
            c.add_flags(chunk, [b"\\Deleted"], silent=True)
            c.uid_expunge(chunk)

        return copy_and_expunge

    # --- waiting --------------------------------------------------------------------------------------------

    def _arrived_since_listing(self) -> bool:
        """Mail that arrived during our last commands was announced then, so IDLE would not report it again."""
        listed_up_to = self._listed_up_to
        if listed_up_to is None:
            return False
        # Dovecot's SEARCH answers from the session's last view of the folder; NOOP makes it look again.
        self._call("NOOP", lambda c: c.noop())
        return bool(self._search_new(listed_up_to))

    def _idle(self, client: Any, budget: float) -> bool:
        """One IDLE of at most `budget` seconds, always ended with DONE; True when EXISTS/RECENT arrived."""
        client.idle()
        woke = False
        try:
            deadline = time.monotonic() + budget
            while not woke:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                started = time.monotonic()
                responses = client.idle_check(timeout=remaining)
                woke = _announces_mail(responses)
                if not responses and time.monotonic() - started < remaining - 0.05:
                    break  # readable but nothing parsed: EOF; DONE below tells for sure
        finally:
            _text, responses = client.idle_done()
        return woke or _announces_mail(responses)

    # --- messages -------------------------------------------------------------------------------------------

    @property
    def _context(self) -> dict[str, object]:
        """The ids a log line carries as JSON keys (see kcc.logs.CONTEXT_FIELDS)."""
        return {"mailbox": self.mailbox}

    def _message(self, what: str, check: str) -> str:
        text = (f"mailbox {self.mailbox!r} ({self._address}, user {self._settings.username!r}, "
                f"folder {self._settings.folder!r}): {what}; check {check}")
        return self._redact(text)

    def _error(self, what: str, check: str) -> SourceError:
        return SourceError(self._message(what, check))

    def _tls_error(self, exc: ssl.SSLError) -> SourceError:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return self._error(f"the server certificate could not be verified: {exc.verify_message}",
                               "that host matches the certificate's name and that its CA is trusted here")
        return self._error(f"the TLS handshake failed: {exc.reason or exc}",
                           "that security (tls on the imaps port, starttls on the plain port) matches the port")

    def _redact(self, text: str) -> str:
        """Belt and braces: no message we make should hold the secret, but if a server echoes it, hide it."""
        return text.replace(self._secret, "***") if len(self._secret) >= 4 else text


class ImapAppender:
    """A copy of each sent reply in a folder of an IMAP account (e.g. Sent), so colleagues see it in their client.

    APPENDs over one lazily opened connection, marked \\Seen (we wrote it ourselves). The copy is a courtesy: the
    reply was sent and registered before, so a failure is logged and never fails the send; after one, copies are
    skipped for `pause_seconds`, so an unreachable server does not cost every reply a connection timeout.
    """

    def __init__(
        self, settings: ImapSettings, folder: str, *, ssl_context: ssl.SSLContext | None = None,
        pause_seconds: float = 300.0,
    ) -> None:
        self._account = ImapSource(settings, max_mail_bytes=0, ssl_context=ssl_context, connect_attempts=1)
        self._folder = folder
        self._pause_seconds = pause_seconds
        self._paused_until = 0.0

    def append(self, data: bytes, when: datetime, outbox_id: int) -> bool:
        """Store the copy; False (and a log line) when it could not be made."""
        if time.monotonic() < self._paused_until:
            log.info("outbox %s: sent; no copy in folder %r, copies are paused after an earlier failure",
                     outbox_id, self._folder)
            return False
        try:
            self._account.logged_in_client().append(self._folder, data, flags=(b"\\Seen",), msg_time=when)
        except Exception as exc:  # a copy must never fail the send, whatever the server or the network does
            log.warning(
                "outbox %s: sent, but the copy to folder %r of mailbox %s failed (%s: %s); check that the folder "
                "exists and [replies] sent_folder; copies pause for %.0f s", outbox_id, self._folder,
                self._account.mailbox, type(exc).__name__, exc, self._pause_seconds,
            )
            self.close()
            self._paused_until = time.monotonic() + self._pause_seconds
            return False
        return True

    def close(self) -> None:
        self._account.close()


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _announces_mail(responses: Iterable[Any]) -> bool:
    """True for an untagged `* N EXISTS` or a non-zero `* N RECENT`."""
    for response in responses:
        if not (isinstance(response, tuple) and len(response) >= 2 and isinstance(response[0], int)):
            continue
        if response[1] == b"EXISTS" or (response[1] == b"RECENT" and response[0] > 0):
            return True
    return False


def _utc(value: object) -> datetime | None:
    """INTERNALDATE in UTC; None (intake then uses the time it stored the mail) when it is unusable.

    A server keeps whatever date an APPEND gave: 1 Jan 0001 +1200 is a valid datetime with no UTC moment.
    """
    if not isinstance(value, datetime):
        return None
    try:
        return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    except (OverflowError, ValueError):
        return None


def _server_text(exc: BaseException) -> str:
    """The server's own words from an imaplib error, without Python's b'...' wrapping."""
    text = str(exc)
    if text.startswith(("b'", 'b"')) and text.endswith(text[1]):
        text = text[2:-1]
    return text


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no attempt was made"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {_server_text(exc)}" if str(exc) else type(exc).__name__


def _shutdown(client: Any) -> None:
    try:
        client.shutdown()
    except Exception:  # the socket is being thrown away either way
        log.debug("shutting down an IMAP connection failed", exc_info=True)
