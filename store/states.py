"""Every state and code a row can hold, as StrEnums: one spelling, checked by the type checker and the database.

Members are strings, so they compare equal to the values the database returns and serialise as themselves in
JSON. The columns take their allowed values from these classes (`store.base.choice`), so a CHECK constraint and the
code can never disagree.
"""

from __future__ import annotations

from enum import StrEnum


class MailState(StrEnum):
    """Where a stored mail stands: waiting for an employee, a klantcontact, dismissed, or kept in quarantine."""

    TE_BEOORDELEN = "te_beoordelen"
    GEREGISTREERD = "geregistreerd"
    AFGEWEZEN = "afgewezen"
    QUARANTAINE = "quarantaine"


class QuarantineReason(StrEnum):
    """Why a mail was kept in quarantine instead of the review queue."""

    UNPARSEABLE = "unparseable"
    TOO_LARGE = "too_large"
    LIMITS = "limits"
    INTERNAL_ERROR = "internal_error"


class DismissReason(StrEnum):
    """Why a mail is not a customer contact."""

    SPAM = "spam"
    AUTO_REPLY = "auto_reply"
    BOUNCE = "bounce"
    DUPLICATE = "duplicate"
    GEEN_KLANTCONTACT = "geen_klantcontact"


class OutboxStatus(StrEnum):
    """A reply on its way: due (pending, retry), in a relay's hands (sending), or done one way or another."""

    PENDING = "pending"
    SENDING = "sending"
    RETRY = "retry"
    SENT = "sent"
    FAILED = "failed"
    UNCERTAIN = "uncertain"
    BOUNCED = "bounced"


class TaakStatus(StrEnum):
    """An interne taak's status: the standard knows only these two."""

    TE_VERWERKEN = "te_verwerken"
    VERWERKT = "verwerkt"


class SoortActor(StrEnum):
    MEDEWERKER = "medewerker"
    ORGANISATORISCHE_EENHEID = "organisatorische_eenheid"
    GEAUTOMATISEERDE_ACTOR = "geautomatiseerde_actor"


class Rol(StrEnum):
    KLANT = "klant"
    VERTEGENWOORDIGER = "vertegenwoordiger"


class SoortDigitaalAdres(StrEnum):
    EMAIL = "email"
    TELEFOONNUMMER = "telefoonnummer"
    OVERIG = "overig"


class Vertrouwelijkheidaanduiding(StrEnum):
    """The Documenten API's confidentiality levels of an informatieobject."""

    OPENBAAR = "openbaar"
    BEPERKT_OPENBAAR = "beperkt_openbaar"
    INTERN = "intern"
    ZAAKVERTROUWELIJK = "zaakvertrouwelijk"
    VERTROUWELIJK = "vertrouwelijk"
    CONFIDENTIEEL = "confidentieel"
    GEHEIM = "geheim"
    ZEER_GEHEIM = "zeer_geheim"


class ExportStatus(StrEnum):
    """An export job on its way to the registers: due (pending, retry), in an exporter's hands, or settled."""

    PENDING = "pending"
    SENDING = "sending"
    RETRY = "retry"
    DONE = "done"
    FAILED = "failed"
