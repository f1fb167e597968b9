"""The request bodies the exporter sends to the Klantinteracties API, built from plain local values (pure).

Field names and limits are those of Open Klant 2.18; the contract tests validate every body against its OpenAPI
file. References to other objects are always the **remote** uuids (the local → remote map), never local ones.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

TOELICHTING_MAX = 1000
REFERENTIENUMMER_MAX = 10
OMSCHRIJVING_MAX = 40

# What Open Klant's e-mail check (Django's EmailValidator) accepts, as observed: a dot-atom local part and a domain
# with a dot and a top level of two or more characters. Anything else is refused with a 400.
_DOT_ATOM = r"[-!#$%&'*+/=?^_`{}|~0-9A-Za-z]+(?:\.[-!#$%&'*+/=?^_`{}|~0-9A-Za-z]+)*"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{1,62}[A-Za-z0-9]"
_ACCEPTED_EMAIL = re.compile(rf"{_DOT_ATOM}@{_DOMAIN}")
UNCHECKED_EMAIL = "e-mailadres (niet te controleren)"
"""The omschrijving of an address Open Klant would refuse as e-mail: sent as `overig`, so it is never lost."""


class ExportRefused(Exception):
    """A local record cannot be expressed in the register as it is; the message says what and why."""


@dataclass(frozen=True, slots=True)
class Remote:
    """Where a local record lives in the register."""

    uuid: str
    url: str


def ref(remote: Remote) -> dict[str, str]:
    """A foreign key in a request body: the API takes the uuid (the url is read-only)."""
    return {"uuid": remote.uuid}


def digest(body: Mapping[str, Any]) -> str:
    """A fingerprint of what was sent, so an unchanged record is not sent again."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def remote_referentienummer(local: str, prefix: str) -> str:
    """kcc-mail's number in Open Klant: the prefix, then the local number's digits (at most 10 characters).

    Open Klant wants it unique register-wide and other systems write there too; a prefix of letters no other
    writer uses makes a collision impossible. A local number too large for the room left is refused, not cut.
    """
    room = REFERENTIENUMMER_MAX - len(prefix)
    digits = local.lstrip("0") or "0"
    if len(digits) > room:
        raise ExportRefused(
            f"referentienummer {local} does not fit in {room} digits after the prefix {prefix!r}; "
            "choose a shorter openklant.referentienummer_prefix"
        )
    return prefix + digits.rjust(room, "0")


def when(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def actor_body(actor: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "naam": actor["naam"], "soortActor": actor["soort_actor"], "indicatieActief": actor["indicatie_actief"],
        "actoridentificator": actor_identificator(actor),
    }
    if actor["soort_actor"] == "geautomatiseerde_actor":
        body["actorIdentificatie"] = {"functie": "e-mailintake", "omschrijving": actor["naam"]}
    return body


def actor_identificator(actor: Mapping[str, Any]) -> dict[str, str]:
    return {
        "objectId": actor["actoridentificator_object_id"],
        "codeObjecttype": actor["actoridentificator_code_objecttype"],
        "codeRegister": actor["actoridentificator_code_register"],
        "codeSoortObjectId": actor["actoridentificator_code_soort_object_id"],
    }


def klantcontact_body(contact: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {
        "referentienummer": remote_referentienummer(contact["referentienummer"], prefix),
        "kanaal": contact["kanaal"], "onderwerp": contact["onderwerp"], "inhoud": contact["inhoud"],
        "indicatieContactGelukt": contact["indicatie_contact_gelukt"], "taal": contact["taal"],
        "vertrouwelijk": contact["vertrouwelijk"], "plaatsgevondenOp": when(contact["plaatsgevonden_op"]),
    }


def betrokkene_body(betrokkene: Mapping[str, Any], klantcontact: Remote) -> dict[str, Any]:
    return {"hadKlantcontact": ref(klantcontact), **betrokkene_fields(betrokkene)}


def betrokkene_fields(betrokkene: Mapping[str, Any]) -> dict[str, Any]:
    """The betrokkene without its klantcontact: as /maak-klantcontact takes it (the server links the two)."""
    naam = {
        "voorletters": betrokkene["contactnaam_voorletters"], "voornaam": betrokkene["contactnaam_voornaam"],
        "voorvoegselAchternaam": betrokkene["contactnaam_voorvoegsel_achternaam"],
        "achternaam": betrokkene["contactnaam_achternaam"],
    }
    return {
        "wasPartij": None, "rol": betrokkene["rol"],
        "initiator": betrokkene["initiator"], "organisatienaam": betrokkene["organisatienaam"],
        "contactnaam": naam if any(naam.values()) else None,
    }


def digitaal_adres_body(adres: Mapping[str, Any], betrokkene: Remote) -> dict[str, Any]:
    """`verstrektDoorPartij` is always sent (null): Open Klant refuses the body without the key.

    An e-mail address Open Klant's check would refuse (a@b.c, a quoted local part, a domain without a dot) is
    still the customer's address kcc-mail answered: it goes as `overig`, with an omschrijving that says so.
    """
    soort, omschrijving = adres["soort_digitaal_adres"], adres["omschrijving"]
    if soort == "email" and not _ACCEPTED_EMAIL.fullmatch(adres["adres"]):
        soort, omschrijving = "overig", UNCHECKED_EMAIL
    return {
        "verstrektDoorBetrokkene": ref(betrokkene), "verstrektDoorPartij": None, "adres": adres["adres"],
        "soortDigitaalAdres": soort, "omschrijving": omschrijving[:OMSCHRIJVING_MAX],
    }


def actor_klantcontact_body(actor: Remote, klantcontact: Remote) -> dict[str, Any]:
    return {"actor": ref(actor), "klantcontact": ref(klantcontact)}


def onderwerpobject_body(over: Remote, was: Remote) -> dict[str, Any]:
    return {"klantcontact": ref(over), **onderwerpobject_fields(was)}


def onderwerpobject_fields(was: Remote) -> dict[str, Any]:
    """What the klantcontact is about (`was`); the identificator names the remote klantcontact, as the local one
    names the local. Without the klantcontact it belongs to: as /maak-klantcontact takes it."""
    return {
        "wasKlantcontact": ref(was),
        "onderwerpobjectidentificator": {
            "objectId": was.uuid, "codeObjecttype": "klantcontact", "codeRegister": "openklant",
            "codeSoortObjectId": "uuid",
        },
    }


def interne_taak_body(
    taak: Mapping[str, Any], klantcontact: Remote, actoren: list[Remote], vervangt: Remote | None,
) -> dict[str, Any]:
    """Open Klant has no `vervangtInterneTaak`: a rerouted task says in its toelichting which task it replaces.

    `toegewezenOp` is read-only there (the server sets its own time), so it is not sent.
    """
    return {
        "aanleidinggevendKlantcontact": ref(klantcontact), "gevraagdeHandeling": taak["gevraagde_handeling"],
        "toegewezenAanActoren": [ref(actor) for actor in actoren],
        "toelichting": toelichting(taak["toelichting"], vervangt), "status": taak["status"],
        "afgehandeldOp": when(taak["afgehandeld_op"]),
    }


def toelichting(text: str, vervangt: Remote | None) -> str:
    if vervangt is None:
        return text[:TOELICHTING_MAX]
    suffix = f" [Vervangt interne taak {vervangt.uuid}]"
    room = TOELICHTING_MAX - len(suffix)
    return (text if len(text) <= room else text[: room - 1] + "…") + suffix


DOCUMENT_OBJECTTYPE = "enkelvoudiginformatieobject"
DOCUMENT_REGISTER = "open-zaak"


def informatieobject_body(document: Mapping[str, Any], inhoud: str | None, *, bronorganisatie: str,
                          informatieobjecttype: str) -> dict[str, Any]:
    """An EnkelvoudigInformatieObject with its bytes inline (base64 in `inhoud`), or without `inhoud` (None):
    then its `bestandsomvang` makes the register hand out bestandsdelen to upload the bytes in.

    Its `identificatie` is the local uuid, so a document whose answer was lost is found again by it; Open Zaak
    wants `integriteit.datum` whenever `integriteit` is sent.
    """
    body = {
        "identificatie": str(document["uuid"]), "bronorganisatie": bronorganisatie,
        "creatiedatum": document["creatiedatum"].isoformat(), "titel": document["titel"] or document["bestandsnaam"],
        "vertrouwelijkheidaanduiding": document["vertrouwelijkheidaanduiding"], "auteur": document["auteur"],
        "status": "definitief", "formaat": document["formaat"], "taal": document["taal"],
        "bestandsnaam": document["bestandsnaam"], "inhoud": inhoud, "bestandsomvang": document["bestandsomvang"],
        "indicatieGebruiksrecht": False, "informatieobjecttype": informatieobjecttype,
        "integriteit": {"algoritme": document["integriteit_algoritme"], "waarde": document["integriteit_waarde"],
                        "datum": document["creatiedatum"].isoformat()},
    }
    if inhoud is None:
        del body["inhoud"]
    return body


def bijlage_body(klantcontact: Remote, document: Remote) -> dict[str, Any]:
    """The bijlage names the **remote** document (its uuid in the Documenten API), never the local one."""
    return {
        "wasBijlageVanKlantcontact": ref(klantcontact),
        "bijlageidentificator": {"objectId": document.uuid, "codeObjecttype": DOCUMENT_OBJECTTYPE,
                                 "codeRegister": DOCUMENT_REGISTER, "codeSoortObjectId": "uuid"},
    }


MUTABLE = {
    "klantcontact": ("kanaal", "onderwerp", "inhoud", "indicatieContactGelukt", "taal", "vertrouwelijk",
                     "plaatsgevondenOp"),
    "interne_taak": ("toegewezenAanActoren", "toelichting", "status", "afgehandeldOp"),
}
"""What may change after creation, and so is PATCHed alone. Any other record is sent whole when its body
changed: only when a record it refers to was made again in the register (found gone, then repaired)."""


def patch_of(soort: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return {key: body[key] for key in MUTABLE.get(soort, ()) if key in body}


NOT_COMPARED = {"inhoud"}
"""A document's bytes come back as a download link: its integriteit (sha256) is compared instead."""


def differences(what: str, sent: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    """Where the register's object differs from what kcc-mail would send now: one line per field.

    References are compared by uuid, times as moments (the register may write them in another zone), lists of
    references as sets.
    """
    lines = []
    for key, value in sent.items():
        if key in NOT_COMPARED:
            continue
        there = found.get(key)
        if _same(value, there):
            continue
        lines.append(f"{what}: {key} is {_short(there)} in the register, {_short(value)} here")
    return lines


def _same(here: Any, there: Any) -> bool:
    if isinstance(here, dict) and set(here) == {"uuid"}:
        return isinstance(there, dict) and there.get("uuid") == here["uuid"]
    if isinstance(here, list) and all(isinstance(item, dict) and set(item) == {"uuid"} for item in here):
        return isinstance(there, list) and {i["uuid"] for i in here} == {
            i.get("uuid") for i in there if isinstance(i, dict)}
    if isinstance(here, dict):
        return isinstance(there, dict) and all(_same(v, there.get(k)) for k, v in here.items())
    if isinstance(here, str) and isinstance(there, str) and here != there:
        moments = _moment(here), _moment(there)
        return None not in moments and moments[0] == moments[1]
    return bool(here == there)


def _moment(text: str) -> datetime | None:
    if "T" not in text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:79] + "…"
