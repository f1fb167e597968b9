"""Klantinteracties API v2 shapes (camelCase, related objects embedded), so output could be posted to Open Klant."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.klantinteracties import (
    Actor,
    ActorKlantcontact,
    Betrokkene,
    Bijlage,
    Informatieobject,
    InterneTaak,
    InterneTaakActor,
    Klantcontact,
    Onderwerpobject,
)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def actor_json(actor: Actor) -> dict[str, Any]:
    return {
        "uuid": str(actor.uuid),
        "naam": actor.naam,
        "soortActor": actor.soort_actor,
        "indicatieActief": actor.indicatie_actief,
        "actoridentificator": {
            "objectId": actor.actoridentificator_object_id,
            "codeObjecttype": actor.actoridentificator_code_objecttype,
            "codeRegister": actor.actoridentificator_code_register,
            "codeSoortObjectId": actor.actoridentificator_code_soort_object_id,
        },
    }


def betrokkene_json(betrokkene: Betrokkene, contact: Klantcontact) -> dict[str, Any]:
    return {
        "uuid": str(betrokkene.uuid),
        "hadKlantcontact": {"uuid": str(contact.uuid)},
        "wasPartij": None,
        "rol": betrokkene.rol,
        "initiator": betrokkene.initiator,
        "organisatienaam": betrokkene.organisatienaam,
        "contactnaam": {
            "voorletters": betrokkene.contactnaam_voorletters,
            "voornaam": betrokkene.contactnaam_voornaam,
            "voorvoegselAchternaam": betrokkene.contactnaam_voorvoegsel_achternaam,
            "achternaam": betrokkene.contactnaam_achternaam,
        },
        "digitaleAdressen": [
            {
                "uuid": str(adres.uuid),
                "verstrektDoorBetrokkene": {"uuid": str(betrokkene.uuid)},
                "soortDigitaalAdres": adres.soort_digitaal_adres,
                "adres": adres.adres,
                "omschrijving": adres.omschrijving,
            }
            for adres in betrokkene.digitale_adressen
        ],
    }


def bijlage_json(bijlage: Bijlage, contact: Klantcontact, document: Informatieobject) -> dict[str, Any]:
    return {
        "uuid": str(bijlage.uuid),
        "wasBijlageVanKlantcontact": {"uuid": str(contact.uuid)},
        "bijlageidentificator": {
            "objectId": bijlage.bijlageidentificator_object_id,
            "codeObjecttype": bijlage.bijlageidentificator_code_objecttype,
            "codeRegister": bijlage.bijlageidentificator_code_register,
            "codeSoortObjectId": bijlage.bijlageidentificator_code_soort_object_id,
        },
        "informatieobject": {
            "uuid": str(document.uuid),
            "titel": document.titel,
            "bestandsnaam": document.bestandsnaam,
            "formaat": document.formaat,
            "bestandsomvang": document.bestandsomvang,
            "creatiedatum": document.creatiedatum.isoformat(),
            "taal": document.taal,
            "vertrouwelijkheidaanduiding": document.vertrouwelijkheidaanduiding,
            "auteur": document.auteur,
            "integriteit": {"algoritme": document.integriteit_algoritme, "waarde": document.integriteit_waarde},
        },
    }


def klantcontact_json(session: Session, contact: Klantcontact, *, embed: bool = True) -> dict[str, Any]:
    """A klantcontact; with `embed`, its betrokkenen, bijlagen, actors, tasks and onderwerpobjecten inside."""
    data: dict[str, Any] = {
        "uuid": str(contact.uuid),
        "id": contact.id,
        "referentienummer": contact.referentienummer,
        "kanaal": contact.kanaal,
        "onderwerp": contact.onderwerp,
        "inhoud": contact.inhoud,
        "indicatieContactGelukt": contact.indicatie_contact_gelukt,
        "taal": contact.taal,
        "vertrouwelijk": contact.vertrouwelijk,
        "plaatsgevondenOp": _time(contact.plaatsgevonden_op),
    }
    if not embed:
        return data
    bijlagen = session.execute(
        select(Bijlage, Informatieobject)
        .join(Informatieobject, Informatieobject.id == Bijlage.informatieobject_id)
        .where(Bijlage.klantcontact_id == contact.id)
        .order_by(Bijlage.id)
    )
    actoren = session.scalars(
        select(Actor).join(ActorKlantcontact, ActorKlantcontact.actor_id == Actor.id)
        .where(ActorKlantcontact.klantcontact_id == contact.id).order_by(Actor.id)
    )
    taken = session.scalars(
        select(InterneTaak).where(InterneTaak.aanleidinggevend_klantcontact_id == contact.id).order_by(InterneTaak.id)
    )
    data.update({
        "hadBetrokkenen": [
            betrokkene_json(b, contact)
            for b in sorted(contact.betrokkenen, key=lambda b: b.id)
        ],
        "omvatteBijlagen": [bijlage_json(b, contact, d) for b, d in bijlagen],
        "hadBetrokkenActoren": [actor_json(a) for a in actoren],
        "leiddeTotInterneTaken": [interne_taak_json(session, t, embed=False) for t in taken],
        "gingOverOnderwerpobjecten": _onderwerpen(session, Onderwerpobject.klantcontact_id == contact.id),
        "wasOnderwerpobject": _onderwerpen(session, Onderwerpobject.was_klantcontact_id == contact.id),
    })
    return data


def _onderwerpen(session: Session, condition: Any) -> list[dict[str, Any]]:
    result = []
    for onderwerp in session.scalars(select(Onderwerpobject).where(condition).order_by(Onderwerpobject.id)):
        over = session.get(Klantcontact, onderwerp.klantcontact_id) if onderwerp.klantcontact_id else None
        was = session.get(Klantcontact, onderwerp.was_klantcontact_id) if onderwerp.was_klantcontact_id else None
        result.append({
            "uuid": str(onderwerp.uuid),
            "klantcontact": {"uuid": str(over.uuid)} if over else None,
            "wasKlantcontact": {"uuid": str(was.uuid)} if was else None,
            "onderwerpobjectidentificator": {
                "objectId": onderwerp.onderwerpobjectidentificator_object_id,
                "codeObjecttype": onderwerp.onderwerpobjectidentificator_code_objecttype,
                "codeRegister": onderwerp.onderwerpobjectidentificator_code_register,
                "codeSoortObjectId": onderwerp.onderwerpobjectidentificator_code_soort_object_id,
            },
        })
    return result


def interne_taak_json(session: Session, taak: InterneTaak, *, embed: bool) -> dict[str, Any]:
    """A task; with `embed`, its klantcontact in full, so the colleague never has to ask the customer again."""
    contact = session.get(Klantcontact, taak.aanleidinggevend_klantcontact_id)
    assert contact is not None  # a foreign key guarantees it
    actoren = session.scalars(
        select(Actor).join(InterneTaakActor, InterneTaakActor.actor_id == Actor.id)
        .where(InterneTaakActor.interne_taak_id == taak.id).order_by(Actor.id)
    )
    vervangt = session.get(InterneTaak, taak.vervangt_taak_id) if taak.vervangt_taak_id else None
    return {
        "uuid": str(taak.uuid),
        "id": taak.id,
        "gevraagdeHandeling": taak.gevraagde_handeling,
        "aanleidinggevendKlantcontact": klantcontact_json(session, contact, embed=embed),
        "toegewezenAanActoren": [actor_json(a) for a in actoren],
        "toelichting": taak.toelichting,
        "status": taak.status,
        "toegewezenOp": _time(taak.toegewezen_op),
        "afgehandeldOp": _time(taak.afgehandeld_op),
        "vervangtInterneTaak": {"uuid": str(vervangt.uuid), "id": vervangt.id} if vervangt else None,
    }
