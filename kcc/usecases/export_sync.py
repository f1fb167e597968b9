"""One klantcontact brought into the register as it is now: read locally, sent with no transaction open.

The exporter (kcc.usecases.export) holds a lease on the klantcontact's jobs. This module reads the dossier in
one short transaction, then for every record: already in the map → PATCH it if it changed; not in the map → look
it up in the register first (a POST that arrived before a crash or a timeout is found there, never made twice),
and only then create it. The outcomes are written to the map in one short transaction at the end of the pass
(and at least every quarter of the lease) that also checks and extends the lease; what a crash loses before
that, the next pass's lookups find. Documents, inline or through bestandsdelen, are kcc.usecases.export_documents'
job; one enters the map only once the register has it whole.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid as uuid_module
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kcc.registers.documenten import DocumentenClient
from kcc.registers.http import JsonApi, RegisterRefused
from kcc.registers.klantinteracties import KlantinteractiesClient
from kcc.usecases.export_bodies import (
    MUTABLE,
    Remote,
    actor_body,
    actor_klantcontact_body,
    betrokkene_body,
    betrokkene_fields,
    bijlage_body,
    differences,
    digest,
    digitaal_adres_body,
    interne_taak_body,
    klantcontact_body,
    onderwerpobject_body,
    onderwerpobject_fields,
    patch_of,
)
from kcc.usecases.export_documents import DocumentExport, DocumentSettings, is_whole, remote_of
from store.export import ExportedRecord, ExportJob, remember_remote
from store.klantinteracties import (
    Actor,
    ActorKlantcontact,
    Betrokkene,
    Bijlage,
    DigitaalAdres,
    Informatieobject,
    InterneTaak,
    InterneTaakActor,
    Klantcontact,
    Onderwerpobject,
)
from store.states import ExportStatus
from store.types import utcnow
from store.uow import UnitOfWork

Row = dict[str, Any]
log = logging.getLogger(__name__)


REPAIR = "repair"
"""The digest of a mapped record `export verify --repair` found different in the register: its whole body is
sent again, also the fields kcc-mail never changes after creation, to undo a change made there."""


class NotReady(Exception):
    """The klantcontact refers to another one that is not in the register yet; its own job will bring it."""


class LeaseLost(Exception):
    """Another exporter took these jobs over (this one was too slow); it stops without recording more."""


@dataclass(frozen=True, slots=True)
class JobClaim:
    """The due jobs of one klantcontact, held under one lease token."""

    klantcontact_id: int
    job_ids: tuple[int, ...]
    lease_token: str
    attempt: int


@dataclass
class Dossier:
    """A klantcontact and everything of it the register holds, as plain values read in one transaction."""

    klantcontact: Row
    betrokkenen: list[tuple[Row, list[Row]]]
    actoren: dict[uuid_module.UUID, Row]
    actor_klantcontacten: list[tuple[Row, uuid_module.UUID]]
    onderwerpen: list[tuple[Row, uuid_module.UUID]]
    taken: list[tuple[Row, list[uuid_module.UUID], uuid_module.UUID | None]]
    bijlagen: list[tuple[Row, Row]] = field(default_factory=list)
    """Each bijlage with its informatieobject (without the bytes: those are read one document at a time)."""
    remote: dict[uuid_module.UUID, tuple[Remote, str]] = field(default_factory=dict)


def _plain(record: Any) -> Row:
    return {column.key: getattr(record, column.key) for column in record.__table__.columns}


def read_dossier(uow: UnitOfWork, klantcontact_id: int) -> Dossier:
    with uow:
        session = uow.session
        contact = session.get(Klantcontact, klantcontact_id)
        if contact is None:
            raise LookupError(f"klantcontact {klantcontact_id} is gone (purged?); its export jobs have nothing to do")
        betrokkenen = [
            (_plain(b), [_plain(a) for a in session.scalars(
                select(DigitaalAdres).where(DigitaalAdres.betrokkene_id == b.id).order_by(DigitaalAdres.id))])
            for b in session.scalars(select(Betrokkene).where(Betrokkene.klantcontact_id == contact.id)
                                     .order_by(Betrokkene.id))
        ]
        actoren: dict[int, Row] = {}
        links = []
        for link, actor in session.execute(
            select(ActorKlantcontact, Actor).join(Actor, Actor.id == ActorKlantcontact.actor_id)
            .where(ActorKlantcontact.klantcontact_id == contact.id).order_by(ActorKlantcontact.id)
        ):
            actoren[actor.id] = _plain(actor)
            links.append((_plain(link), actor.uuid))
        was_uuids = {
            k.id: k.uuid for k in session.scalars(select(Klantcontact).where(Klantcontact.id.in_(
                select(Onderwerpobject.was_klantcontact_id).where(Onderwerpobject.klantcontact_id == contact.id))))
        }
        onderwerpen = [
            (_plain(o), was_uuids[o.was_klantcontact_id])
            for o in session.scalars(select(Onderwerpobject).where(Onderwerpobject.klantcontact_id == contact.id)
                                     .order_by(Onderwerpobject.id))
            if o.was_klantcontact_id is not None
        ]
        taken_rows = list(session.scalars(select(InterneTaak).where(
            InterneTaak.aanleidinggevend_klantcontact_id == contact.id).order_by(InterneTaak.id)))
        taak_uuids = {t.id: t.uuid for t in taken_rows}
        taken = []
        for taak in taken_rows:
            toegewezen = []
            for actor in session.scalars(select(Actor).join(InterneTaakActor, InterneTaakActor.actor_id == Actor.id)
                                         .where(InterneTaakActor.interne_taak_id == taak.id).order_by(Actor.id)):
                actoren[actor.id] = _plain(actor)
                toegewezen.append(actor.uuid)
            vervangt = taak_uuids.get(taak.vervangt_taak_id) if taak.vervangt_taak_id else None
            taken.append((_plain(taak), toegewezen, vervangt))
        bijlagen = [(_plain(b), _plain(d)) for b, d in session.execute(
            select(Bijlage, Informatieobject).join(Informatieobject, Informatieobject.id == Bijlage.informatieobject_id)
            .where(Bijlage.klantcontact_id == contact.id).order_by(Bijlage.id))]
        dossier = Dossier(_plain(contact), betrokkenen, {a["uuid"]: a for a in actoren.values()}, links,
                          onderwerpen, taken, bijlagen)
        local = [contact.uuid, *dossier.actoren, *was_uuids.values(), *(b["uuid"] for b, _ in betrokkenen),
                 *(a["uuid"] for _, adressen in betrokkenen for a in adressen), *(link["uuid"] for link, _ in links),
                 *(o["uuid"] for o, _ in onderwerpen), *taak_uuids.values(),
                 *(b["uuid"] for b, _ in bijlagen), *(d["uuid"] for _, d in bijlagen)]
        for row in session.scalars(select(ExportedRecord).where(ExportedRecord.local_uuid.in_(local))):
            dossier.remote[row.local_uuid] = (Remote(row.remote_uuid, row.remote_url), row.body_sha256)
        return dossier


@dataclass(frozen=True, slots=True)
class Lookup:
    """How to find a record in the register: the list filters, and the fields a match must have.

    With `fields` (records under a parent, several alike), a remote object another local record is mapped to
    is skipped; without (klantcontact by referentienummer, actor by identificator), the first match is it.
    """

    params: dict[str, str]
    fields: dict[str, Any] | None = None


class DossierSync:
    """Brings one dossier into the register; every call to the register happens outside any transaction."""

    def __init__(self, uow_factory: Callable[[], UnitOfWork], client: KlantinteractiesClient, claim: JobClaim, *,
                 prefix: str, lease_seconds: float, documenten: DocumentenClient | None = None,
                 documents: DocumentSettings | None = None, verify: bool = False,
                 actor_lock: threading.Lock | None = None) -> None:
        """With `verify`, nothing is sent: every mapped record is read back and compared (`differences`).

        `actor_lock` is shared by the dossiers exported side by side: they share actors, and Open Klant would
        take two POSTs of one actor as two actors, so one dossier at a time looks an actor up and creates it.
        """
        self._actor_lock = actor_lock or threading.Lock()
        self._verify = verify
        self.differences: list[str] = []
        self.gone: list[uuid_module.UUID] = []
        """Verify mode: mapped records the register no longer has (to be looked up and made again on repair)."""
        self.changed: list[uuid_module.UUID] = []
        """Verify mode: mapped records the register holds differently (to be sent whole again on repair)."""
        self._pending: list[tuple[str, uuid_module.UUID, Remote, str]] = []
        self._flushed_at = 0.0
        self._uow = uow_factory
        self._client = client
        self._documenten = documenten
        self._documents = documents
        self._claim = claim
        self._prefix = prefix
        self._lease = timedelta(seconds=lease_seconds)
        self._dossier: Dossier | None = None

    def run(self) -> int:
        """Send what the register lacks or has differently; returns how many requests changed something."""
        self._pending = []
        self._flushed_at = time.monotonic()
        try:
            return self._run()
        finally:
            if self._pending:  # also after a failure: what did arrive is known
                self._flush()

    def _run(self) -> int:
        dossier = self._dossier = read_dossier(self._uow(), self._claim.klantcontact_id)
        # A map entry of another register (openklant.url changed) says nothing about this one: look up again.
        apis: list[JsonApi] = [self._client, *([self._documenten] if self._documenten else [])]
        dossier.remote = {k: v for k, v in dossier.remote.items() if any(api.owns(v[0].url) for api in apis)}
        self.changes = 0
        actoren = {local: self._actor(row) for local, row in dossier.actoren.items()}
        contact = dossier.klantcontact
        body = klantcontact_body(contact, self._prefix)
        kc = self._ensure("klantcontact", contact["uuid"], "klantcontacten", body,
                          Lookup({"referentienummer": body["referentienummer"]}), create=self._maak_klantcontact)
        for betrokkene, adressen in dossier.betrokkenen:
            b_body = betrokkene_body(betrokkene, kc)
            b = self._ensure("betrokkene", betrokkene["uuid"], "betrokkenen", b_body, Lookup(
                {"hadKlantcontact__uuid": kc.uuid}, {"rol": b_body["rol"], "initiator": b_body["initiator"]}))
            for adres in adressen:
                a_body = digitaal_adres_body(adres, b)
                self._ensure("digitaal_adres", adres["uuid"], "digitaleadressen", a_body, Lookup(
                    {"verstrektDoorBetrokkene__uuid": b.uuid}, {"adres": a_body["adres"]}))
        for link, actor_uuid in dossier.actor_klantcontacten:
            actor = actoren[actor_uuid]
            self._ensure("actor_klantcontact", link["uuid"], "actorklantcontacten", actor_klantcontact_body(actor, kc),
                         Lookup({"actor__uuid": actor.uuid, "klantcontact__uuid": kc.uuid}))
        for onderwerp, was_uuid in dossier.onderwerpen:
            if was_uuid not in dossier.remote and self._verify:
                self.differences.append(f"onderwerpobject {onderwerp['uuid']}: its klantcontact {was_uuid} is not "
                                        "in the register")
                continue
            if was_uuid not in dossier.remote:
                raise NotReady(f"it refers to klantcontact {was_uuid}, which is not in Open Klant yet")
            was = dossier.remote[was_uuid][0]
            self._ensure("onderwerpobject", onderwerp["uuid"], "onderwerpobjecten", onderwerpobject_body(kc, was),
                         Lookup({"klantcontact__uuid": kc.uuid, "wasKlantcontact__uuid": was.uuid}, {}))
        for taak, toegewezen, vervangt in dossier.taken:
            previous = dossier.remote[vervangt][0] if vervangt is not None and vervangt in dossier.remote else None
            t_body = interne_taak_body(taak, kc, [actoren[a] for a in toegewezen], previous)
            self._ensure("interne_taak", taak["uuid"], "internetaken", t_body, Lookup(
                {"aanleidinggevendKlantcontact__uuid": kc.uuid}, {"gevraagdeHandeling": t_body["gevraagdeHandeling"]}))
        if self._documenten is not None and self._documents is not None:
            for bijlage, document in dossier.bijlagen:
                remote_document = self._document(self._documenten, self._documents, document)
                self._ensure("bijlage", bijlage["uuid"], "bijlagen", bijlage_body(kc, remote_document), Lookup(
                    {"klantcontact__uuid": kc.uuid, "bijlageidentificatorObjectId": remote_document.uuid}))
        return self.changes

    def _maak_klantcontact(self, body: dict[str, Any]) -> dict[str, Any]:
        """A new klantcontact with its first betrokkene and onderwerpobject in one atomic call (Open Klant's
        /maak-klantcontact): two requests fewer, and a klantcontact found by its referentienummer after a lost
        answer always has them. The other records of the dossier follow one by one, as their lookups find them.

        A reply whose customer's klantcontact is not in the register yet waits before anything is created.
        """
        dossier = self._dossier
        assert dossier is not None
        request: dict[str, Any] = {"klantcontact": body}
        betrokkene = dossier.betrokkenen[0][0] if dossier.betrokkenen else None
        onderwerp = dossier.onderwerpen[0] if dossier.onderwerpen else None
        if onderwerp is not None and onderwerp[1] not in dossier.remote:
            raise NotReady(f"it refers to klantcontact {onderwerp[1]}, which is not in Open Klant yet")
        if betrokkene is not None:
            request["betrokkene"] = betrokkene_fields(betrokkene)
        if onderwerp is not None:
            request["onderwerpobject"] = onderwerpobject_fields(dossier.remote[onderwerp[1]][0])
        answer = self._client.create("maak-klantcontact", request)
        created = answer["klantcontact"]
        kc = Remote(str(created["uuid"]), str(created["url"]))
        if betrokkene is not None and answer.get("betrokkene"):
            self._record("betrokkene", betrokkene["uuid"], _remote(answer["betrokkene"]),
                         digest(betrokkene_body(betrokkene, kc)))
        if onderwerp is not None and answer.get("onderwerpobject"):
            self._record("onderwerpobject", onderwerp[0]["uuid"], _remote(answer["onderwerpobject"]),
                         digest(onderwerpobject_body(kc, dossier.remote[onderwerp[1]][0])))
        return dict(created)

    def _document(self, api: DocumentenClient, settings: DocumentSettings, document: Row) -> Remote:
        """The document whole in the Documenten API (kcc.usecases.export_documents); mapped only once it is."""
        assert self._dossier is not None
        known = self._dossier.remote.get(document["uuid"])
        documents = DocumentExport(api, self._uow, settings, keep_lease=self._keep_lease)
        if self._verify:
            return self._compare_document(documents, api, document, known)
        if known is not None:
            return known[0]
        try:
            remote = documents.ensure(document)
        finally:
            self.changes += documents.changes
        self._record("informatieobject", document["uuid"], remote, "")
        return remote

    def _compare_document(self, documents: DocumentExport, api: DocumentenClient, document: Row,
                          known: tuple[Remote, str] | None) -> Remote:
        """Verify mode: the document read back (or looked up, when a crash left it unmapped) and compared.

        One gone (404) or with its upload unfinished counts as gone for `--repair`: the next round looks it up
        and makes or finishes it; one that differs otherwise is only listed (Open Zaak keeps its versions).
        """
        local = document["uuid"]
        if known is not None:
            try:
                found: Row | None = api.get(known[0].url)
            except RegisterRefused as exc:
                self.differences.append(f"informatieobject {local}: {known[0].url} cannot be read "
                                        f"({exc.status}: {exc.detail})")
                if exc.status == 404:
                    self.gone.append(local)
                return known[0]
        else:
            found = documents.find(document)
        if found is None:
            self.differences.append(f"informatieobject {local}: not in the register")
            return Remote("00000000-0000-0000-0000-000000000000", "")
        lines = documents.differences(document, found)
        self.differences += lines
        if not is_whole(found):
            self.gone.append(local)
        elif lines:
            self.changed.append(local)
        return remote_of(found)

    def _actor(self, row: Row) -> Remote:
        """Open Klant has no uniqueness on actors: the one with our identificator is looked up before any POST."""
        body = actor_body(row)
        ident = body["actoridentificator"]
        with self._actor_lock:
            remote = self._ensure("actor", row["uuid"], "actoren", body, Lookup({
                "actoridentificatorObjectId": ident["objectId"],
                "actoridentificatorCodeRegister": ident["codeRegister"],
                "actoridentificatorCodeSoortObjectId": ident["codeSoortObjectId"],
            }))
            if self._pending and not self._verify:  # in the map before the next dossier looks: no two rows for it
                self._flush()
            return remote

    def _look_up(self, resource: str, lookup: Lookup) -> dict[str, Any] | None:
        """The remote object a lost answer or a crash left behind: the first that fits and is no one else's."""
        assert self._dossier is not None
        used = {remote.uuid for remote, _ in self._dossier.remote.values()} if lookup.fields is not None else set()
        for found in self._client.find(resource, lookup.params):
            if found.get("uuid") not in used and all(found.get(k) == v for k, v in (lookup.fields or {}).items()):
                return found
        return None

    def _ensure(self, soort: str, local: uuid_module.UUID, resource: str, body: dict[str, Any],
                lookup: Lookup, *, create: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Remote:
        """The record in the register as `body` says: PATCHed when mapped and changed, found by `lookup` when
        unmapped (a create whose answer was lost), created (by `create` when given) only when not found."""
        assert self._dossier is not None
        sent = digest(body)
        known = self._dossier.remote.get(local)
        if self._verify:
            return self._compare(soort, local, known, self._client, body)
        if known is not None:
            remote, before = known
            patch = patch_of(soort, body) if soort in MUTABLE and before != REPAIR else dict(body)
            if before == sent or not patch:
                return remote
            try:
                self._client.update(remote.url, patch)
            except RegisterRefused as exc:
                if exc.status != 404:
                    raise
                # gone from the register (restored to an earlier moment, or deleted there): made again below
                log.warning("%s %s was gone from the register at %s; it is looked up and made again",
                            soort, local, remote.url)
                del self._dossier.remote[local]
            else:
                self.changes += 1
                self._record(soort, local, remote, sent)
                return remote
        found = self._look_up(resource, lookup)
        if found is not None:  # created before a crash or a lost answer, or (an actor) by another system
            remote = Remote(str(found["uuid"]), str(found["url"]))
            if patch_of(soort, body):
                self._client.update(remote.url, patch_of(soort, body))
                self.changes += 1
        else:
            created = create(body) if create is not None else self._client.create(resource, body)
            remote = _remote(created)
            self.changes += 1
        self._record(soort, local, remote, sent)
        return remote

    def _compare(self, soort: str, local: uuid_module.UUID, known: tuple[Remote, str] | None, api: JsonApi,
                 body: dict[str, Any]) -> Remote:
        """Verify mode: the register's object read back and compared with what would be sent now."""
        if known is None:
            self.differences.append(f"{soort} {local}: not in the register")
            return Remote("00000000-0000-0000-0000-000000000000", "")
        remote = known[0]
        try:
            found = api.get(remote.url)
        except RegisterRefused as exc:
            self.differences.append(f"{soort} {local}: {remote.url} cannot be read ({exc.status}: {exc.detail})")
            if exc.status == 404:
                self.gone.append(local)
            return remote
        lines = differences(f"{soort} {local}", body, found)
        if lines:
            self.differences += lines
            self.changed.append(local)
        return remote

    def _record(self, soort: str, local: uuid_module.UUID, remote: Remote, sent: str) -> None:
        """Remember where the record went; written to the map with the others of this pass (see `_flush`)."""
        assert self._dossier is not None
        self._dossier.remote[local] = (remote, sent)
        self._pending.append((soort, local, remote, sent))
        self._keep_lease()

    def _keep_lease(self) -> None:
        """Between the parts of a long upload: write what is known and extend the lease every quarter of it."""
        if time.monotonic() - self._flushed_at > self._lease.total_seconds() / 4:
            self._flush()

    def _flush(self) -> None:
        """Write the remembered outcomes in one short transaction that checks and extends the lease.

        Losing them (a crash before this) costs no duplicate: the next pass looks every unmapped record up in
        the register before it creates one. Writing them once per pass, not once per record, saves a
        transaction per record; the lease is still extended at least every quarter of its length.
        """
        pending, self._pending = self._pending, []
        self._flushed_at = time.monotonic()
        with self._uow() as uow:
            session = uow.session
            _extend_lease(session, self._claim, self._lease)
            latest = {local: (soort, remote, sent) for soort, local, remote, sent in pending}  # one row per record
            remember_remote(session, [
                {"local_uuid": local, "soort": soort, "remote_uuid": remote.uuid, "remote_url": remote.url,
                 "body_sha256": sent} for local, (soort, remote, sent) in latest.items()])
            uow.commit()


def _remote(created: dict[str, Any]) -> Remote:
    return Remote(str(created["uuid"]), str(created["url"]))


def _extend_lease(session: Session, claim: JobClaim, lease: timedelta) -> None:
    """Still ours? Then hold the jobs a while longer; otherwise stop before recording anything."""
    result = session.execute(
        update(ExportJob).where(ExportJob.id.in_(claim.job_ids), ExportJob.lease_token == claim.lease_token,
                                ExportJob.status == ExportStatus.SENDING)
        .values(lease_until=utcnow() + lease).execution_options(synchronize_session=False)
    )
    if int(getattr(result, "rowcount", 0)) != len(claim.job_ids):
        raise LeaseLost(f"the export jobs of klantcontact {claim.klantcontact_id} were taken over by another exporter")


__all__ = ["REPAIR", "DocumentSettings", "Dossier", "DossierSync", "JobClaim", "LeaseLost", "NotReady",
           "read_dossier"]
