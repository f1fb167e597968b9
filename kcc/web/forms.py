"""The forms of the screens (WTForms): every one carries a CSRF token bound to the session, and says in Dutch
what is missing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from starlette.requests import Request
from wtforms import BooleanField, Form, SelectField, StringField, TextAreaField
from wtforms.csrf.session import SessionCSRF
from wtforms.fields.choices import SelectChoice  # type: ignore[attr-defined]  # stubs 3.2 predate it (3.3)
from wtforms.validators import DataRequired, Length, Optional

from store.states import DismissReason


class KccForm(Form):
    """A form of this application: CSRF through the signed session cookie, valid for the session's lifetime."""

    class Meta:
        csrf = True
        csrf_class = SessionCSRF
        csrf_field_name = "csrf_token"
        csrf_secret: bytes | None = None
        csrf_time_limit = timedelta(hours=10)

    @classmethod
    def bound(cls, request: Request, formdata: Any = None, **data: Any) -> Any:
        """The form for this request (its session and secret); `formdata` is what was posted."""
        session = request.session
        session.setdefault("csrf", fresh_csrf_secret())  # validation needs one, also for a forged first request
        meta = {"csrf_context": session, "csrf_secret": request.app.state.csrf_secret,
                "csrf_time_limit": request.app.state.csrf_time_limit}
        return cls(formdata=formdata, meta=meta, **data)


def fresh_csrf_secret() -> str:
    import secrets

    return secrets.token_hex(32)


class CsrfOnly(KccForm):
    """A button that changes something (take over, sign out, complete a task): only the token."""


class DevSignIn(KccForm):
    naam = StringField("Naam", [DataRequired("Vul een naam in."), Length(max=200)])
    email = StringField("E-mailadres", [DataRequired("Vul een e-mailadres in."), Length(max=200)])
    kcc = BooleanField("KCC-medewerker")
    beheer = BooleanField("Functioneel beheerder")
    afdelingen = StringField("Afdelingen (gescheiden door komma's)", [Optional(), Length(max=1000)])


class Doorzetten(KccForm):
    """An interne taak for a colleague (C0534, C9167)."""

    handeling = SelectField("Gevraagde handeling", choices=[])
    andere_handeling = StringField("Of een andere handeling", [Optional(), Length(max=200)])
    toelichting = TextAreaField("Toelichting", [Optional(), Length(max=1000)])
    toewijzen = SelectField("Toewijzen aan", choices=[], validate_choice=False)
    andere_afdeling = StringField("Of een andere afdeling", [Optional(), Length(max=200)])


class Afwijzen(KccForm):
    reden = SelectField("Reden", choices=[SelectChoice(r.value, r.value.replace("_", " ")) for r in DismissReason])


class Doorsturen(KccForm):
    """Reroute a task (C6114): to another actor, keeping the request unless it is changed."""

    toewijzen = SelectField("Doorsturen naar", choices=[], validate_choice=False)
    andere_afdeling = StringField("Of een andere afdeling", [Optional(), Length(max=200)])
    handeling = StringField("Gevraagde handeling", [Optional(), Length(max=200)])
    toelichting = TextAreaField("Toelichting", [Optional(), Length(max=1000)])


class Zoeken(Form):
    """The werkvoorraad's filters (a GET form: nothing changes, so no token)."""

    zoek = StringField("Zoeken", [Optional(), Length(max=200)])


def actor_choices(actors: list[dict[str, Any]]) -> list[SelectChoice]:
    """The people and afdelingen a taak can go to, each labelled with what it is."""
    return [SelectChoice("", "Kies…")] + [
        SelectChoice(a["ref"], f"{a['naam']} ({'afdeling' if a['ref'].startswith('afdeling:') else 'medewerker'})")
        for a in actors
    ]


def handeling_choices(handelingen: tuple[str, ...]) -> list[SelectChoice]:
    """The configured gevraagde handelingen, and a way to type another."""
    return [SelectChoice(h) for h in handelingen] + [SelectChoice("", "Andere handeling (hieronder)")]
