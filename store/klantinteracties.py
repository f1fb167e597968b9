"""The Klantinteracties records (after Open Klant 2): snake_case here, camelCase in the API's JSON."""

from __future__ import annotations

import uuid as uuid_module
from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Date, ForeignKey, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column, relationship

from store.base import Base, Key, choice, created_column, id_column, uuid_column
from store.states import Rol, SoortActor, SoortDigitaalAdres, TaakStatus, Vertrouwelijkheidaanduiding
from store.types import SafeString, UTCDateTime


class Actor(Base):
    """Who took part on the municipality's side: a medewerker, a department, or this service itself."""

    __tablename__ = "actor"
    __table_args__ = (
        UniqueConstraint(
            "actoridentificator_code_register", "actoridentificator_code_soort_object_id",
            "actoridentificator_object_id", name="actoridentificator",
        ),
    )

    id: Mapped[int] = id_column()
    uuid: Mapped[uuid_module.UUID] = uuid_column()
    naam: Mapped[str] = mapped_column(SafeString(200))
    soort_actor: Mapped[str] = mapped_column(choice("soort_actor", SoortActor))
    indicatie_actief: Mapped[bool] = mapped_column(Boolean, default=True)
    actoridentificator_object_id: Mapped[str] = mapped_column(SafeString(200), default="")
    actoridentificator_code_objecttype: Mapped[str] = mapped_column(SafeString(200), default="")
    actoridentificator_code_register: Mapped[str] = mapped_column(SafeString(200), default="")
    actoridentificator_code_soort_object_id: Mapped[str] = mapped_column(SafeString(200), default="")


class ActorKlantcontact(Base):
    __tablename__ = "actor_klantcontact"
    __table_args__ = (UniqueConstraint("actor_id", "klantcontact_id"),)

    id: Mapped[int] = id_column()
    uuid: Mapped[uuid_module.UUID] = uuid_column()
    actor_id: Mapped[int] = mapped_column(Key, ForeignKey("actor.id"))
    klantcontact_id: Mapped[int] = mapped_column(Key, ForeignKey("klantcontact.id"), index=True)

    actor: Mapped[Actor] = relationship()


class Klantcontact(Base):
    """One contact between customer and municipality; it has no status of its own, so it is born decided."""

    __tablename__ = "klantcontact"

    id: Mapped[int] = id_column()
    uuid: Mapped[uuid_module.UUID] = uuid_column()
    referentienummer: Mapped[str] = mapped_column(SafeString(10), unique=True)
    kanaal: Mapped[str] = mapped_column(SafeString(50))
    onderwerp: Mapped[str] = mapped_column(SafeString(200))
    inhoud: Mapped[str] = mapped_column(SafeString(1000), default="")
    indicatie_contact_gelukt: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    taal: Mapped[str] = mapped_column(SafeString(3))
    vertrouwelijk: Mapped[bool] = mapped_column(Boolean, default=False)
    plaatsgevonden_op: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = created_column()

    betrokkenen: Mapped[list[Betrokkene]] = relationship(back_populates="klantcontact")
    bijlagen: Mapped[list[Bijlage]] = relationship(back_populates="klantcontact")
    actoren: Mapped[list[ActorKlantcontact]] = relationship()
    interne_taken: Mapped[list[InterneTaak]] = relationship(back_populates="aanleidinggevend_klantcontact")


class Betrokkene(Base):
    """The customer in a klantcontact; not identified as a partij, so `was_partij` stays empty."""

    __tablename__ = "betrokkene"

    id: Mapped[int] = id_column()
    uuid: Mapped[uuid_module.UUID] = uuid_column()
    klantcontact_id: Mapped[int] = mapped_column(Key, ForeignKey("klantcontact.id"), index=True)
    was_partij_uuid: Mapped[uuid_module.UUID | None] = mapped_column(Uuid(), nullable=True)
    rol: Mapped[str] = mapped_column(choice("rol", Rol))
    initiator: Mapped[bool] = mapped_column(Boolean)
    organisatienaam: Mapped[str] = mapped_column(SafeString(200), default="")
    contactnaam_voorletters: Mapped[str] = mapped_column(SafeString(10), default="")
    contactnaam_voornaam: Mapped[str] = mapped_column(SafeString(200), default="")
    contactnaam_voorvoegsel_achternaam: Mapped[str] = mapped_column(SafeString(10), default="")
    contactnaam_achternaam: Mapped[str] = mapped_column(SafeString(200), default="")

    klantcontact: Mapped[Klantcontact] = relationship(back_populates="betrokkenen")
    digitale_adressen: Mapped[list[DigitaalAdres]] = relationship(back_populates="betrokkene")


class DigitaalAdres(Base):
    __tablename__ = "digitaal_adres"

    id: Mapped[int] = id_column()
    uuid: Mapped[uuid_module.UUID] = uuid_column()
    betrokkene_id: Mapped[int] = mapped_column(Key, ForeignKey("betrokkene.id"), index=True)
    soort_digitaal_adres: Mapped[str] = mapped_column(choice("soort_digitaal_adres", SoortDigitaalAdres))
    adres: Mapped[str] = mapped_column(SafeString(80))
    omschrijving: Mapped[str] = mapped_column(SafeString(40), default="")

    betrokkene: Mapped[Betrokkene] = relationship(back_populates="digitale_adressen")


class Informatieobject(Base):
    """A document after the Documenten API's EnkelvoudigInformatieObject; its bytes are a shared blob."""

    __tablename__ = "informatieobject"

    id: Mapped[int] = id_column()
    uuid: Mapped[uuid_module.UUID] = uuid_column()
    titel: Mapped[str] = mapped_column(SafeString(200))
    bestandsnaam: Mapped[str] = mapped_column(SafeString(255))
    formaat: Mapped[str] = mapped_column(SafeString(255))
    bestandsomvang: Mapped[int] = mapped_column(BigInteger)
    blob_sha256: Mapped[str] = mapped_column(SafeString(64), ForeignKey("blob.sha256"), index=True)
    creatiedatum: Mapped[date] = mapped_column(Date)
    taal: Mapped[str] = mapped_column(SafeString(3))
    vertrouwelijkheidaanduiding: Mapped[str] = mapped_column(
        choice("vertrouwelijkheidaanduiding", Vertrouwelijkheidaanduiding)
    )
    auteur: Mapped[str] = mapped_column(SafeString(200))
    integriteit_algoritme: Mapped[str] = mapped_column(SafeString(20), default="sha_256")
    integriteit_waarde: Mapped[str] = mapped_column(SafeString(128))


class Bijlage(Base):
    """Links a klantcontact to a document through the 4-part bijlageidentificator (and, here, a foreign key)."""

    __tablename__ = "bijlage"

    id: Mapped[int] = id_column()
    uuid: Mapped[uuid_module.UUID] = uuid_column()
    klantcontact_id: Mapped[int] = mapped_column(Key, ForeignKey("klantcontact.id"), index=True)
    informatieobject_id: Mapped[int] = mapped_column(Key, ForeignKey("informatieobject.id"), index=True)
    bijlageidentificator_object_id: Mapped[str] = mapped_column(SafeString(200))
    bijlageidentificator_code_objecttype: Mapped[str] = mapped_column(SafeString(200))
    bijlageidentificator_code_register: Mapped[str] = mapped_column(SafeString(200))
    bijlageidentificator_code_soort_object_id: Mapped[str] = mapped_column(SafeString(200))

    klantcontact: Mapped[Klantcontact] = relationship(back_populates="bijlagen")
    informatieobject: Mapped[Informatieobject] = relationship()


class Onderwerpobject(Base):
    """What a klantcontact was about: here, the earlier klantcontact it answers or follows up."""

    __tablename__ = "onderwerpobject"

    id: Mapped[int] = id_column()
    uuid: Mapped[uuid_module.UUID] = uuid_column()
    klantcontact_id: Mapped[int | None] = mapped_column(Key, ForeignKey("klantcontact.id"), index=True)
    was_klantcontact_id: Mapped[int | None] = mapped_column(Key, ForeignKey("klantcontact.id"), index=True)
    onderwerpobjectidentificator_object_id: Mapped[str] = mapped_column(SafeString(200), default="")
    onderwerpobjectidentificator_code_objecttype: Mapped[str] = mapped_column(SafeString(200), default="")
    onderwerpobjectidentificator_code_register: Mapped[str] = mapped_column(SafeString(200), default="")
    onderwerpobjectidentificator_code_soort_object_id: Mapped[str] = mapped_column(SafeString(200), default="")

    klantcontact: Mapped[Klantcontact | None] = relationship(foreign_keys=[klantcontact_id])
    was_klantcontact: Mapped[Klantcontact | None] = relationship(foreign_keys=[was_klantcontact_id])


class InterneTaak(Base):
    """A request to a colleague; its status is only te_verwerken or verwerkt, and afgehandeld_op follows it."""

    __tablename__ = "interne_taak"
    __table_args__ = (
        CheckConstraint(
            "(status = 'verwerkt' AND afgehandeld_op IS NOT NULL)"
            " OR (status = 'te_verwerken' AND afgehandeld_op IS NULL)",
            name="afgehandeld_op_volgt_status",
        ),
    )

    id: Mapped[int] = id_column()
    uuid: Mapped[uuid_module.UUID] = uuid_column()
    aanleidinggevend_klantcontact_id: Mapped[int] = mapped_column(Key, ForeignKey("klantcontact.id"), index=True)
    gevraagde_handeling: Mapped[str] = mapped_column(SafeString(200))
    toelichting: Mapped[str] = mapped_column(SafeString(1000), default="")
    status: Mapped[str] = mapped_column(choice("status", TaakStatus), default=TaakStatus.TE_VERWERKEN)
    toegewezen_op: Mapped[datetime] = mapped_column(UTCDateTime())
    afgehandeld_op: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    vervangt_taak_id: Mapped[int | None] = mapped_column(Key, ForeignKey("interne_taak.id"), nullable=True)

    aanleidinggevend_klantcontact: Mapped[Klantcontact] = relationship(back_populates="interne_taken")
    toewijzingen: Mapped[list[InterneTaakActor]] = relationship(back_populates="interne_taak")

    def set_status(self, status: TaakStatus, moment: datetime) -> None:
        """Change the status the way the standard wants: afgehandeldOp set on verwerkt, cleared on reopening."""
        self.status = status
        self.afgehandeld_op = moment if status == TaakStatus.VERWERKT else None


class InterneTaakActor(Base):
    """One of the actors a task is assigned to (toegewezenAanActoren, 1..n)."""

    __tablename__ = "interne_taak_actor"
    __table_args__ = (UniqueConstraint("interne_taak_id", "actor_id"),)

    id: Mapped[int] = id_column()
    interne_taak_id: Mapped[int] = mapped_column(Key, ForeignKey("interne_taak.id"), index=True)
    actor_id: Mapped[int] = mapped_column(Key, ForeignKey("actor.id"), index=True)

    interne_taak: Mapped[InterneTaak] = relationship(back_populates="toewijzingen")
    actor: Mapped[Actor] = relationship()


class Referentieteller(Base):
    """Hands out referentienummers: one row, incremented inside the registering transaction."""

    __tablename__ = "referentieteller"

    naam: Mapped[str] = mapped_column(SafeString(50), primary_key=True)
    waarde: Mapped[int] = mapped_column(BigInteger, default=0)
