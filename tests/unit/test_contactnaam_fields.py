"""Display names become a Dutch contactnaam; long texts fit the standard's fields at a word boundary."""

from __future__ import annotations

import pytest

from kcc.records.contactnaam import Contactnaam, contactnaam_from
from kcc.records.fields import INGEKORT, fit_inhoud, fit_onderwerp


@pytest.mark.parametrize(
    ("display", "expected"),
    [
        ("Karel van der Wittewiek", Contactnaam("K.", "Karel", "van der", "Wittewiek")),
        ("Wittewiek, Karel van der", Contactnaam("K.", "Karel", "van der", "Wittewiek")),
        ("Anna Maria van den Berg", Contactnaam("A.M.", "Anna Maria", "van den", "Berg")),
        ("K.J. de Vries", Contactnaam("K.J.", "", "de", "Vries")),
        ("Marie 't Hart", Contactnaam("M.", "Marie", "'t", "Hart")),
        ("Peter de Jong-van Dijk", Contactnaam("P.", "Peter", "de", "Jong-van Dijk")),
        ("Jan Jansen", Contactnaam("J.", "Jan", "", "Jansen")),
        ("Fatima El Amrani", Contactnaam("F.", "Fatima", "El", "Amrani")),  # as she writes it
        ("Jan Van Dijk", Contactnaam("J.", "Jan", "Van", "Dijk")),
        ("Jan", Contactnaam("J.", "Jan", "", "")),
        ("Bakkerij De Graaf B.V.", Contactnaam(organisatienaam="Bakkerij De Graaf B.V.")),
        ("Stichting Wonen Wittewiek", Contactnaam(organisatienaam="Stichting Wonen Wittewiek")),
        ("", Contactnaam()),
        ("karel@example.nl", Contactnaam()),
    ],
)
def test_contactnaam(display: str, expected: Contactnaam) -> None:
    assert contactnaam_from(display) == expected


def test_contactnaam_fits_the_standard_lengths() -> None:
    naam = contactnaam_from("A" * 300 + " van " + "B" * 300)
    assert len(naam.voornaam) <= 200 and len(naam.achternaam) <= 200 and len(naam.voorletters) <= 10


def test_onderwerp() -> None:
    assert fit_onderwerp("") == "(geen onderwerp)"
    assert fit_onderwerp("  Vraag\r\n over  afval ") == "Vraag over afval"
    long = fit_onderwerp("parkeren " * 50)
    assert len(long) <= 200 and long.endswith(" …") and long[:-2].endswith("parkeren")


def test_inhoud_keeps_short_text_and_cuts_long_text_at_a_word() -> None:
    assert fit_inhoud("Beste gemeente,\r\n\r\n\r\n\r\nGroet") == "Beste gemeente,\n\nGroet"
    text = "woord " * 300
    cut = fit_inhoud(text)
    assert len(cut) <= 1000 and cut.endswith(INGEKORT)
    assert cut[: -len(INGEKORT)].endswith("woord")
    assert fit_inhoud("x" * 2000).endswith(INGEKORT)  # one endless word is cut hard
