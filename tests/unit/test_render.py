"""replies.render: the shipped templates, sidecars, the sandbox, escaping and the error messages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from replies.render import STANDARD_CONTEXT, RenderedReply, TemplateError, alineas
from replies.templates import ReplyTemplates

SHIPPED = Path(__file__).resolve().parents[2] / "templates" / "replies"

CONTEXT: dict[str, object] = {
    "organisatie": "Gemeente Voorbeeld",
    "handtekening": "",
    "klant_naam": "Fatima el Amrani",
    "onderwerp": "Afval niet opgehaald in de Lindenstraat",
    "referentienummer": "2024000123",
    "ontvangen_op": "7 mei 2024 om 08:12",
    "tekst": "De groene container wordt morgen geleegd.\n\nOnze excuses voor het ongemak.",
}


@pytest.fixture
def shipped() -> ReplyTemplates:
    return ReplyTemplates(SHIPPED)


def make_templates(directory: Path, files: dict[str, str]) -> ReplyTemplates:
    for name, content in files.items():
        (directory / name).write_text(content, encoding="utf-8")
    return ReplyTemplates(directory)


def render(templates: ReplyTemplates, name: str, **values: object) -> RenderedReply:
    return templates.render(name, {**CONTEXT, **values})


# --- the shipped templates ------------------------------------------------------------------------------------


def test_the_shipped_reply_templates_are_listed_without_the_layout(shipped: ReplyTemplates) -> None:
    infos = {info.name: info for info in shipped.list()}

    assert sorted(infos) == ["antwoord", "doorverwezen", "ontvangstbevestiging"]
    assert infos["antwoord"].variables == ("tekst",)
    assert infos["antwoord"].has_html
    assert infos["doorverwezen"].required == ("afdeling",)
    assert dict(infos["ontvangstbevestiging"].defaults) == {"termijn_werkdagen": "5"}
    assert all(info.description for info in infos.values())


def test_every_shipped_template_compiles(shipped: ReplyTemplates) -> None:
    for info in shipped.list():
        assert shipped.check(info.name) == info


def test_antwoord_puts_the_employees_text_between_greeting_and_signature(shipped: ReplyTemplates) -> None:
    reply = render(shipped, "antwoord")

    assert reply.subject is None
    text = reply.text
    assert text.startswith("Beste Fatima el Amrani,\n\n")
    assert "De groene container wordt morgen geleegd.\n\nOnze excuses voor het ongemak.\n" in text
    assert "referentienummer 2024000123" in text
    assert text.endswith("Met vriendelijke groet,\n\nKlantcontactcentrum Gemeente Voorbeeld\n")
    assert text.index("Beste") < text.index("De groene container") < text.index("Met vriendelijke groet")
    assert "\n\n\n" not in text


def test_antwoord_html_shows_the_same_letter_with_paragraphs(shipped: ReplyTemplates) -> None:
    html = render(shipped, "antwoord").html

    assert html is not None
    assert "<p>Beste Fatima el Amrani,</p>" in html
    assert "<p>De groene container wordt morgen geleegd.</p>\n<p>Onze excuses voor het ongemak.</p>" in html
    assert "<strong>2024000123</strong>" in html
    assert "Klantcontactcentrum Gemeente Voorbeeld" in html
    assert html.rstrip().endswith("</html>")


def test_without_a_name_the_greeting_is_formal(shipped: ReplyTemplates) -> None:
    reply = render(shipped, "antwoord", klant_naam="")

    assert reply.text.startswith("Beste heer/mevrouw,\n")
    assert reply.html is not None and "<p>Beste heer/mevrouw,</p>" in reply.html


def test_a_configured_signature_replaces_the_default_one(shipped: ReplyTemplates) -> None:
    signature = "Met vriendelijke groet,\n\nJan de Vries\nKlantcontactcentrum Gemeente Voorbeeld\n14 0123"
    reply = render(shipped, "antwoord", handtekening=signature)

    assert reply.text.endswith(signature + "\n")
    assert reply.html is not None
    assert "Jan de Vries<br>\nKlantcontactcentrum Gemeente Voorbeeld<br>\n14 0123" in reply.html


def test_ontvangstbevestiging_names_date_number_and_default_term(shipped: ReplyTemplates) -> None:
    reply = render(shipped, "ontvangstbevestiging", tekst="")

    assert reply.subject == "Ontvangstbevestiging: Afval niet opgehaald in de Lindenstraat"
    assert reply.text.startswith("Beste Fatima el Amrani,\n")
    assert "Wij hebben uw e-mail van 7 mei 2024 om 08:12" in reply.text
    assert "onder referentienummer 2024000123" in reply.text
    assert "binnen 5 werkdagen" in reply.text
    assert reply.text.count("2024000123") == 1  # the layout's reference line is left out here
    assert "Klantcontactcentrum Gemeente Voorbeeld" in reply.text
    assert reply.html is None


def test_ontvangstbevestiging_term_can_be_given(shipped: ReplyTemplates) -> None:
    reply = render(shipped, "ontvangstbevestiging", termijn_werkdagen="10")

    assert "binnen 10 werkdagen" in reply.text


def test_ontvangstbevestiging_without_a_subject_still_reads_well(shipped: ReplyTemplates) -> None:
    reply = render(shipped, "ontvangstbevestiging", onderwerp="")

    assert reply.subject == "Ontvangstbevestiging: (geen onderwerp)"
    assert 'over ""' not in reply.text


def test_doorverwezen_names_the_department(shipped: ReplyTemplates) -> None:
    reply = render(shipped, "doorverwezen", afdeling="Vergunningen", tekst="")

    assert reply.subject is None
    assert "afdeling Vergunningen" in reply.text
    assert "2024000123" in reply.text
    assert reply.text.startswith("Beste Fatima el Amrani,")
    assert reply.text.endswith("Klantcontactcentrum Gemeente Voorbeeld\n")


def test_doorverwezen_adds_the_optional_explanation(shipped: ReplyTemplates) -> None:
    without = render(shipped, "doorverwezen", afdeling="Belastingen")
    with_note = render(shipped, "doorverwezen", afdeling="Belastingen", toelichting="Zij bellen u donderdag.")

    assert "Zij bellen u donderdag.\n" in with_note.text
    assert "\n\n\n" not in without.text


@pytest.mark.parametrize("value", [None, "", "   "])
def test_a_missing_variable_is_named_before_rendering(shipped: ReplyTemplates, value: str | None) -> None:
    context = {**CONTEXT}
    if value is not None:
        context["afdeling"] = value

    with pytest.raises(TemplateError, match=r"'doorverwezen' needs afdeling: pass --var afdeling="):
        shipped.render("doorverwezen", context)


def test_antwoord_without_text_is_refused(shipped: ReplyTemplates) -> None:
    with pytest.raises(TemplateError, match="'antwoord' needs tekst"):
        render(shipped, "antwoord", tekst="  \n")


def test_html_values_are_escaped_and_text_values_are_not(shipped: ReplyTemplates) -> None:
    reply = render(shipped, "antwoord", tekst="Zie <script>alert('x')</script> & meer", klant_naam="<b>Jan</b>")

    assert "<script>alert('x')</script> & meer" in reply.text
    assert "Beste <b>Jan</b>," in reply.text
    assert reply.html is not None
    assert "<script>" not in reply.html and "<b>Jan</b>" not in reply.html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; meer" in reply.html
    assert "Beste &lt;b&gt;Jan&lt;/b&gt;," in reply.html


def test_the_standard_context_is_documented_in_the_module() -> None:
    import replies.render as module

    assert module.__doc__ is not None
    assert all(f"``{name}``" in module.__doc__ for name in STANDARD_CONTEXT)


# --- names are data -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../etc/passwd", "antwoord/../base", "Antwoord", "a b", "", "x" * 65, "base.txt"])
def test_a_name_that_is_not_a_template_name_is_refused(shipped: ReplyTemplates, name: str) -> None:
    with pytest.raises(TemplateError, match="is not a template name.*available templates: antwoord, doorverwezen"):
        shipped.render(name, CONTEXT)


def test_an_unknown_template_lists_the_available_ones(shipped: ReplyTemplates) -> None:
    with pytest.raises(TemplateError, match=r"no template 'bedankt'.*antwoord, doorverwezen, ontvangstbevestiging"):
        shipped.info("bedankt")


def test_the_layout_cannot_be_sent(shipped: ReplyTemplates) -> None:
    with pytest.raises(TemplateError, match="'base' .* is a layout, not a reply template"):
        shipped.render("base", CONTEXT)


def test_a_missing_template_folder_says_which_setting_to_fix(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"does not exist; set \[replies\] templates_dir"):
        ReplyTemplates(tmp_path / "nergens").list()


def test_an_include_outside_the_folder_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "geheim.txt").write_text("geheim", encoding="utf-8")
    folder = tmp_path / "sjablonen"
    folder.mkdir()
    templates = make_templates(folder, {"lek.toml": "", "lek.txt.j2": '{% include "../geheim.txt" %}\n'})

    with pytest.raises(TemplateError, match="is not in"):
        templates.render("lek", CONTEXT)


# --- the sandbox ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "''.__class__.__mro__",
        "cycler.__init__.__globals__",
        "lipsum.__globals__['os']",
        "organisatie.__class__.__subclasses__()",
    ],
)
def test_the_sandbox_refuses_python_internals_in_the_body(tmp_path: Path, expression: str) -> None:
    templates = make_templates(tmp_path, {"kwaad.toml": "", "kwaad.txt.j2": f"Hallo {{{{ {expression} }}}}\n"})

    with pytest.raises(TemplateError, match=r"'kwaad' \(kwaad.txt.j2\) does something the sandbox forbids"):
        templates.render("kwaad", CONTEXT)


def test_the_sandbox_also_guards_the_subject_pattern(tmp_path: Path) -> None:
    sidecar = "subject = \"{{ ''.__class__.__mro__ }}\"\n"
    templates = make_templates(tmp_path, {"kwaad.toml": sidecar, "kwaad.txt.j2": "Hallo\n"})

    with pytest.raises(TemplateError, match="sandbox forbids"):
        templates.render("kwaad", CONTEXT)


def test_a_template_cannot_change_the_values_it_is_given(tmp_path: Path) -> None:
    templates = make_templates(tmp_path, {"kwaad.toml": "", "kwaad.txt.j2": "{{ lijst.append(1) }}\n"})

    with pytest.raises(TemplateError, match="sandbox forbids"):
        templates.render("kwaad", {**CONTEXT, "lijst": []})


# --- template errors say what to do ---------------------------------------------------------------------------


def test_an_undeclared_variable_names_the_variable_and_the_template(tmp_path: Path) -> None:
    templates = make_templates(tmp_path, {"los.toml": "", "los.txt.j2": "Zaak {{ zaaknummer }}\n"})

    with pytest.raises(TemplateError, match=r"template 'los' \(los.txt.j2\) .*'zaaknummer' is undefined.*los.toml"):
        templates.render("los", CONTEXT)


def test_a_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    templates = make_templates(tmp_path, {"kapot.toml": "", "kapot.txt.j2": "Beste,\n{% if klant_naam %}\nHoi\n"})

    with pytest.raises(TemplateError, match=r"kapot.txt.j2, line \d+: .*fix the template") as caught:
        templates.render("kapot", CONTEXT)
    assert str(tmp_path) in str(caught.value)


def test_check_finds_a_syntax_error_in_the_html_part(tmp_path: Path) -> None:
    files = {"half.toml": "", "half.txt.j2": "Hallo\n", "half.html.j2": "<p>\n{{ klant_naam }\n</p>\n"}
    templates = make_templates(tmp_path, files)

    with pytest.raises(TemplateError, match=r"half.html.j2, line 2"):
        templates.check("half")


def test_a_broken_subject_pattern_names_the_sidecar(tmp_path: Path) -> None:
    templates = make_templates(tmp_path, {"kop.toml": 'subject = "Re: {{ onderwerp "\n', "kop.txt.j2": "x\n"})

    with pytest.raises(TemplateError, match=r"kop.toml: the subject pattern .* is not valid Jinja"):
        templates.render("kop", CONTEXT)


@pytest.mark.parametrize(
    ("sidecar", "message"),
    [
        ('onderwerp = "x"\n', r"unknown setting\(s\) onderwerp; allowed: description, subject, variables, defaults"),
        ('subject = "x\n', "is not valid TOML"),
        ("subject = 3\n", "subject must be text"),
        ('variables = "afdeling"\n', "variables must be a list of names"),
        ('variables = ["Afdeling!"]\n', "cannot be a variable name"),
        ('variables = ["a", "a"]\n', "listed twice"),
        ('defaults = { termijn = "5" }\n', "defaults names 'termijn', which is not listed in variables"),
        ('variables = ["termijn"]\ndefaults = { termijn = true }\n', "the default of termijn must be text"),
    ],
)
def test_a_bad_sidecar_is_explained_with_its_file(tmp_path: Path, sidecar: str, message: str) -> None:
    templates = make_templates(tmp_path, {"fout.toml": sidecar, "fout.txt.j2": "x\n"})

    with pytest.raises(TemplateError, match=message) as caught:
        templates.info("fout")
    assert "fout.toml" in str(caught.value)


def test_a_sidecar_without_its_text_template_says_what_to_create(tmp_path: Path) -> None:
    templates = make_templates(tmp_path, {"leeg.toml": 'description = "x"\n'})

    with pytest.raises(TemplateError, match=r"create leeg.txt.j2"):
        templates.list()


def test_a_number_default_is_accepted_as_text(tmp_path: Path) -> None:
    sidecar = 'variables = ["dagen"]\ndefaults = { dagen = 3 }\n'
    templates = make_templates(tmp_path, {"t.toml": sidecar, "t.txt.j2": "Binnen {{ dagen }} dagen.\n"})

    assert templates.render("t", CONTEXT).text == "Binnen 3 dagen.\n"


def test_check_vars_refuses_an_undeclared_var(shipped: ReplyTemplates) -> None:
    shipped.check_vars("doorverwezen", ["afdeling", "toelichting"])

    with pytest.raises(TemplateError, match=r"'doorverwezen' has no variable afdleing; it declares: afdeling"):
        shipped.check_vars("doorverwezen", ["afdleing"])


# --- subjects -------------------------------------------------------------------------------------------------


def test_a_variable_in_the_subject_cannot_break_the_line(tmp_path: Path) -> None:
    sidecar = 'subject = "Uw zaak {{ zaaknummer }}"\nvariables = ["zaaknummer"]\n'
    templates = make_templates(tmp_path, {"zaak.toml": sidecar, "zaak.txt.j2": "Zaak {{ zaaknummer }}\n"})

    reply = templates.render("zaak", {**CONTEXT, "zaaknummer": "Z-1\r\nBcc: kwaad@example.org"})

    assert reply.subject == "Uw zaak Z-1 Bcc: kwaad@example.org"


def test_an_empty_subject_pattern_means_the_caller_chooses(tmp_path: Path) -> None:
    templates = make_templates(tmp_path, {"t.toml": 'subject = "  "\n', "t.txt.j2": "x\n"})

    assert templates.render("t", CONTEXT).subject is None


def test_alineas_escapes_and_keeps_line_breaks() -> None:
    assert alineas("a <b>\nc\n\n\nd") == "<p>a &lt;b&gt;<br>\nc</p>\n<p>d</p>"
    assert alineas("") == ""


def test_an_administrators_edit_applies_to_the_next_reply_without_a_restart(tmp_path: Path) -> None:
    from replies.templates import reply_templates

    make_templates(tmp_path, {
        "kort.toml": 'subject = "Uw vraag over {{ onderwerp }}"\nvariables = []\n',
        "kort.txt.j2": "Wij kijken ernaar.\n",
    })
    templates = reply_templates(tmp_path)
    before = render(templates, "kort")
    edited = tmp_path / "kort.txt.j2"
    edited.write_text("Wij kijken er vandaag nog naar.\n", encoding="utf-8")
    later = edited.stat().st_mtime + 2  # as an edit a moment later; some file systems keep whole seconds only
    os.utime(edited, (later, later))
    (tmp_path / "kort.toml").write_text('subject = "Re: {{ onderwerp }}"\nvariables = []\n', encoding="utf-8")
    after = render(reply_templates(tmp_path), "kort")

    assert reply_templates(tmp_path) is templates, "one set of compiled templates per folder and process"
    assert (before.subject, before.text) == (
        "Uw vraag over Afval niet opgehaald in de Lindenstraat", "Wij kijken ernaar.\n"
    )
    assert (after.subject, after.text) == ("Re: Afval niet opgehaald in de Lindenstraat",
                                           "Wij kijken er vandaag nog naar.\n")


# --- the budget: a template is code that can run away ----------------------------------------------------------


@pytest.mark.parametrize(("body", "reason"), [
    ("{{ 'a' * 300000000 }}", "300000000 characters is more than"),
    ("{{ ['x'] * 99999999 }}", "more than"),
    ("{{ 10 ** 100000000 }}", "digits"),
    ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "more than 2000000 characters"),
])
def test_a_template_that_grows_without_bound_is_stopped(tmp_path: Path, body: str, reason: str) -> None:
    templates = make_templates(tmp_path, {"groot.toml": "", "groot.txt.j2": body})
    with pytest.raises(TemplateError, match=reason):
        render(templates, "groot")


def test_a_template_that_never_ends_is_stopped_in_its_process_and_the_next_one_renders(tmp_path: Path) -> None:
    from replies.render_worker import RenderWorker

    make_templates(tmp_path, {
        "eindeloos.toml": "", "eindeloos.txt.j2": "{% for i in 'x' * 100000 %}{% for j in 'y' * 100000 %}"
                                                "{% endfor %}{% endfor %}klaar",
        "kort.toml": "", "kort.txt.j2": "Dank, {{ klant_naam }}.",
    })
    worker = RenderWorker(seconds=2.0)
    try:
        with pytest.raises(TemplateError, match="took longer than 2 s to render and was stopped"):
            worker.render(tmp_path, "eindeloos", {"klant_naam": "Karel"})
        assert worker.render(tmp_path, "kort", {"klant_naam": "Karel"}).text == "Dank, Karel.\n"
    finally:
        worker.close()


def test_the_first_reply_is_not_refused_for_the_time_its_render_process_takes_to_start(tmp_path: Path) -> None:
    from replies.render_worker import RenderWorker

    make_templates(tmp_path, {"kort.toml": "", "kort.txt.j2": "Dank, {{ klant_naam }}."})
    worker = RenderWorker(seconds=0.25)  # less than a fresh interpreter takes to start and import Jinja2
    try:
        assert worker.render(tmp_path, "kort", {"klant_naam": "Karel"}).text == "Dank, Karel.\n"
    finally:
        worker.close()


def test_nested_ranges_are_stopped_by_the_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import replies.templates

    monkeypatch.setattr(replies.templates, "RENDER_SECONDS", 1.0)
    templates = make_templates(tmp_path, {
        "lussen.toml": "", "lussen.txt.j2": "{% for i in range(100000) %}{% for j in range(100000) %}"
                                             "{% endfor %}{% endfor %}",
    })
    with pytest.raises(TemplateError, match="took longer than 1 s"):
        render(templates, "lussen")


def test_the_acknowledgement_subject_does_not_pile_re_on_re(shipped: ReplyTemplates) -> None:
    rendered = render(shipped, "ontvangstbevestiging", onderwerp="RE: Re: Vraag over de afvalkalender")
    assert rendered.subject == "Ontvangstbevestiging: Vraag over de afvalkalender"
    assert 'over "Vraag over de afvalkalender"' in rendered.text
