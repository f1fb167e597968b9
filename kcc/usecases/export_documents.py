"""A document in the Documenten API exactly once, however large: inline when small, else part by part.

A document up to `inline_max_bytes` goes as today: base64 in the JSON POST. A larger one is created without
`inhoud` and with its `bestandsomvang`; the register answers with the document locked, its `lock`, and the
`bestandsdelen` it wants (url, volgnummer, omvang). Each part is PUT with its bytes streamed from the database a
window at a time (`BlobWindow`), and the document is unlocked with the lock when every part is voltooid; only then
is it written to the local → remote map, so a map entry always names a whole document.

Resuming needs no local state: the document is looked up by its `identificatie` (the local uuid) as before, and
what the register shows says how far the upload got. Open Zaak 1.30 shows the document's lock in each of its
bestandsdelen, so after a crash or a lost answer the parts not yet voltooid are uploaded with that lock and the
document is unlocked. A document found unlocked without its bytes (an operator unlocked the unfinished upload) is
locked again and given its bestandsomvang anew (a PATCH, which makes Open Zaak hand out fresh parts). A document
found locked whose lock the register does not show is unlocked by force (scope `documenten.geforceerd-unlock`),
then treated the same; if the register refuses that, the job fails and says what the operator must do. The one
remote document is always finished, never made a second time.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kcc.registers.documenten import DocumentenClient
from kcc.registers.http import RegisterRefused
from kcc.usecases.export_bodies import Remote, differences, informatieobject_body
from store.blobs import get_blob, read_blob_slice
from store.uow import UnitOfWork

Row = dict[str, Any]
READ_WINDOW = 4 * 1024 * 1024
"""How much of a part is read from the database at a time: the memory an upload costs, whatever the part size."""
RESOURCE = "enkelvoudiginformatieobjecten"


@dataclass(frozen=True, slots=True)
class DocumentSettings:
    """What Open Zaak needs on every document (the RSIN, a published informatieobjecttype), and how large a
    document may be to go inline."""

    bronorganisatie: str
    informatieobjecttype: str
    inline_max_bytes: int = 4 * 1024 * 1024


class BlobWindow(io.RawIOBase):
    """Bytes [start, start + size) of a stored blob as a seekable file, read a window at a time, each window in a
    short transaction of its own: httpx learns the length by seeking, then reads it in small pieces."""

    def __init__(self, uow_factory: Callable[[], UnitOfWork], sha256: str, start: int, size: int,
                 window: int = READ_WINDOW) -> None:
        super().__init__()
        self._uow, self._sha256, self._start, self._size, self._window = uow_factory, sha256, start, size, window
        self._position = 0
        self._buffer = b""
        self._buffer_at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        self._position = min(max(base + offset, 0), self._size)
        return self._position

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        wanted = min(len(view), self._size - self._position)
        if wanted <= 0:
            return 0
        if not self._buffer_at <= self._position < self._buffer_at + len(self._buffer):
            self._fill()
        offset = self._position - self._buffer_at
        chunk = self._buffer[offset:offset + wanted]
        view[:len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)

    def _fill(self) -> None:
        length = min(self._window, self._size - self._position)
        with self._uow() as uow:
            data = read_blob_slice(uow.session, self._sha256, self._start + self._position, length)
        if len(data) != length:
            raise LookupError(f"the stored bytes {self._sha256[:12]}… of a document are shorter than its "
                              "bestandsomvang; it cannot be exported")
        self._buffer, self._buffer_at = data, self._position


def remote_of(found: Row) -> Remote:
    """Open Zaak's documents carry their url only: the uuid is its last segment."""
    url = str(found["url"])
    return Remote(url.rstrip("/").rpartition("/")[2], url)


def is_whole(found: Row) -> bool:
    """The register has the document's bytes: a download link, and no bestandsdelen waiting."""
    return bool(found.get("inhoud")) and not found.get("bestandsdelen")


def open_parts(found: Row) -> Iterator[tuple[Row, int]]:
    """The parts not yet voltooid, each with where its bytes begin in the document (parts follow volgnummer)."""
    offset = 0
    for part in sorted(found.get("bestandsdelen") or [], key=lambda p: int(p["volgnummer"])):
        if not part.get("voltooid"):
            yield part, offset
        offset += int(part["omvang"])


def shown_lock(found: Row) -> str:
    """The lock Open Zaak shows in each bestandsdeel of a document locked for an upload; "" when none does."""
    return next((str(p["lock"]) for p in found.get("bestandsdelen") or [] if p.get("lock")), "")


def unfinished(found: Row) -> str:
    """What is left of the document's upload in the register, for `export verify`; "" when it is whole."""
    parts = found.get("bestandsdelen") or []
    if is_whole(found):
        return "locked in the register (checked out)" if found.get("locked") else ""
    done = sum(1 for p in parts if p.get("voltooid"))
    locked = "locked, " if found.get("locked") else ""
    return f"upload unfinished in the register ({locked}{done} of {len(parts)} bestandsdelen voltooid)"


class DocumentExport:
    """One document at a time into the Documenten API; every call to it happens with no transaction open."""

    def __init__(self, api: DocumentenClient, uow_factory: Callable[[], UnitOfWork], settings: DocumentSettings,
                 *, keep_lease: Callable[[], None] = lambda: None) -> None:
        """`keep_lease` is called between parts, so a long upload does not lose the export jobs' lease."""
        self._api = api
        self._uow = uow_factory
        self._settings = settings
        self._keep_lease = keep_lease
        self.changes = 0

    def ensure(self, document: Row) -> Remote:
        """The document whole in the register: found (and finished when its upload was not), or created."""
        found = self.find(document)
        if found is None:
            return self._create(document)
        if not is_whole(found):
            self._finish(document, found)
        return remote_of(found)

    def find(self, document: Row) -> Row | None:
        """Looked up by its identificatie (the local uuid): a POST whose answer was lost is found here."""
        found = self._api.find(RESOURCE, {"bronorganisatie": self._settings.bronorganisatie,
                                          "identificatie": str(document["uuid"])})
        return found[0] if found else None

    def differences(self, document: Row, found: Row) -> list[str]:
        """Verify mode: where the register's document differs from the local one, and an unfinished upload."""
        what = f"informatieobject {document['uuid']}"
        lines = differences(what, {
            "identificatie": str(document["uuid"]), "bestandsnaam": document["bestandsnaam"],
            "bestandsomvang": document["bestandsomvang"], "formaat": document["formaat"],
            "integriteit": {"algoritme": document["integriteit_algoritme"],
                            "waarde": document["integriteit_waarde"]}}, found)
        left = unfinished(found)
        return [*lines, f"{what}: {left}"] if left else lines

    def _create(self, document: Row) -> Remote:
        if document["bestandsomvang"] <= self._settings.inline_max_bytes:
            created = self._api.create(RESOURCE, self._body(document, self._inline(document["blob_sha256"])))
            self.changes += 1
            return remote_of(created)
        created = self._api.create(RESOURCE, self._body(document, None))
        self.changes += 1
        if created.get("lock"):
            self._upload(document, created, str(created["lock"]))
        else:  # a register that keeps the lock out of the create answer: as if the answer had been lost
            self._finish(document, created)
        return remote_of(created)

    def _finish(self, document: Row, found: Row) -> None:
        """Resume an upload a crash, a lost answer or a failed part left unfinished, on the same document."""
        lock = shown_lock(found)
        if found.get("locked") and not lock:
            self._unlock_by_force(found)
        if not lock:
            lock = self._api.lock(str(found["url"]))
            self.changes += 1
            found = self._api.update(str(found["url"]), {"bestandsomvang": document["bestandsomvang"], "lock": lock})
            self.changes += 1
        self._upload(document, found, lock)

    def _unlock_by_force(self, found: Row) -> None:
        try:
            self._api.unlock(str(found["url"]), None)
        except RegisterRefused as exc:
            raise RegisterRefused(
                f"document {found['url']} is locked with an unfinished upload whose lock kcc-mail does not know, "
                f"and the forced unlock was refused ({exc.status}: {exc.detail}). Give the client "
                f"{self._api.client_id!r} the scope documenten.geforceerd-unlock in Open Zaak, or unlock the document "
                "there, then run `kcc-mail export retry`", exc.status, exc.detail) from None
        self.changes += 1

    def _upload(self, document: Row, eio: Row, lock: str) -> None:
        """Every part not yet voltooid, its bytes streamed from the database; then the unlock that joins them."""
        if not lock:
            raise RegisterRefused(f"the register gave no lock for document {eio['url']}, so its parts cannot be "
                                  "uploaded; is documenten.url the Documenten API?", 0, "no lock in the answer")
        for part, offset in open_parts(eio):
            self._keep_lease()
            with BlobWindow(self._uow, document["blob_sha256"], offset, int(part["omvang"])) as inhoud:
                self._api.upload_bestandsdeel(str(part["url"]), lock, inhoud, document["bestandsnaam"])
            self.changes += 1
        self._api.unlock(str(eio["url"]), lock)
        self.changes += 1

    def _inline(self, sha256: str) -> str:
        """A small document's bytes as base64, read in a short transaction of its own."""
        with self._uow() as uow:
            try:
                data = get_blob(uow.session, sha256)
            except LookupError:
                raise LookupError(f"the stored bytes {sha256[:12]}… of a document are gone; it cannot be exported"
                                  ) from None
        return base64.b64encode(data).decode()

    def _body(self, document: Row, inhoud: str | None) -> dict[str, Any]:
        return informatieobject_body(document, inhoud, bronorganisatie=self._settings.bronorganisatie,
                                     informatieobjecttype=self._settings.informatieobjecttype)


__all__ = ["BlobWindow", "DocumentExport", "DocumentSettings", "is_whole", "open_parts", "unfinished"]
