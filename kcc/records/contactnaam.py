"""From a mail's display name to a Klantinteracties contactnaam, the way a Dutch KCC employee would read it."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Longest first, so "van der" wins over "van".
VOORVOEGSELS = sorted(
    {
        "van", "van de", "van der", "van den", "van het", "van 't", "de", "der", "den", "het", "'t", "ter", "ten",
        "te", "in de", "in het", "in 't", "op de", "op den", "op het", "uit de", "uit den", "von", "von der", "la",
        "le", "du", "da", "di", "del", "della", "dos", "el", "al", "bin", "ben", "op ten", "aan de", "aan den",
        "bij de", "onder de", "over de", "uijt de", "vanden", "vander",
    },
    key=lambda v: -len(v.split()),
)
ORGANISATIE_WOORDEN = re.compile(
    r"\b(b\.?v\.?|n\.?v\.?|v\.?o\.?f\.?|stichting|vereniging|gemeente|provincie|holding|bureau|kantoor|"
    r"advocaten|notaris(?:sen)?|makelaar(?:s|dij)?|woningcorporatie|klantenservice|service ?desk|support|"
    r"administratie|afdeling|team|info|noreply|no-reply|postmaster|mailer-daemon|school|ziekenhuis|"
    r"ggd|uwv|belastingdienst|politie|ltd|gmbh|inc|llc|bv|nv)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Contactnaam:
    voorletters: str = ""
    voornaam: str = ""
    voorvoegsel_achternaam: str = ""
    achternaam: str = ""
    organisatienaam: str = ""


def contactnaam_from(display_name: str) -> Contactnaam:
    """Split "Karel van der Wittewiek" into voornaam, voorvoegsel and achternaam; an organisation stays whole."""
    name = " ".join(display_name.replace('"', " ").split())
    if not name or "@" in name:
        return Contactnaam()
    if ORGANISATIE_WOORDEN.search(name):
        return Contactnaam(organisatienaam=name[:200])
    if "," in name:  # "Wittewiek, Karel van der" as address books write it
        achter, _, voor = name.partition(",")
        words = voor.split()
        prefix_words = _trailing_prefix(words)
        voor_words = words[: len(words) - len(prefix_words)]
        return _build(" ".join(voor_words), " ".join(prefix_words), achter.strip())
    words = name.split()
    if len(words) == 1:
        return _build(words[0], "", "")
    for index in range(1, len(words)):
        prefix = _prefix_at(words, index)
        if prefix and index + len(prefix) < len(words):
            return _build(" ".join(words[:index]), " ".join(prefix), " ".join(words[index + len(prefix):]))
    return _build(" ".join(words[:-1]), "", words[-1])


def _prefix_at(words: list[str], index: int) -> list[str]:
    for voorvoegsel in VOORVOEGSELS:
        parts = voorvoegsel.split()
        if [w.lower() for w in words[index:index + len(parts)]] == parts:
            return words[index:index + len(parts)]
    return []


def _trailing_prefix(words: list[str]) -> list[str]:
    for voorvoegsel in VOORVOEGSELS:
        parts = voorvoegsel.split()
        if len(parts) < len(words) and [w.lower() for w in words[-len(parts):]] == parts:
            return words[-len(parts):]
    return []


def _build(voornaam_deel: str, voorvoegsel: str, achternaam: str) -> Contactnaam:
    """Initials like "K." or "K.J." are voorletters; a written-out first name also gives its voorletter.

    The voorvoegsel keeps the case the customer wrote: "van der" in a Dutch name, but "El" in Fatima El Amrani.
    """
    if re.fullmatch(r"(?:[A-Za-zÀ-ÿ]\.\s?)+", voornaam_deel):
        voorletters, voornaam = voornaam_deel.replace(" ", ""), ""
    else:
        voornaam = voornaam_deel
        voorletters = "".join(f"{w[0].upper()}." for w in voornaam.split() if w[0].isalpha())
    return Contactnaam(
        voorletters=voorletters[:10], voornaam=voornaam[:200],
        voorvoegsel_achternaam=voorvoegsel[:10], achternaam=achternaam[:200],
    )
