"""manage.py assistants export|import: the file format, round trips, idempotency, --dry-run,
--keep-existing, every refusal, and the shipped examples."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management import CommandError

from assistant.management.commands.assistants import Command
from assistant.models import Assistant, AssistantVersion, Conversation
from assistant.personas.versions import version_clean, version_save
from tests.helpers.commands import run

EXAMPLES = Path(settings.BASE_DIR) / "assistant" / "personas" / "examples" / "assistants.yaml"
PHASES = [
    {
        "title": "Situation",
        "goal": "Die Lage ist klar.",
        "instructions": "Frag nach Beispielen.\nBewerte nicht.",
    },
    {"title": "Nächste Schritte", "goal": "Ein Plan steht.", "instructions": "Frag nach dem ersten Schritt."},
]


def assistant_with(slug: str, *, by: str = "setup", position: int = 0, active: bool = True, **version):
    values = {"name": slug.title(), "instructions": f"Du bist {slug}.", **version}
    assistant = Assistant.objects.create(slug=slug, position=position, active=active)
    version_save(assistant, values, by=by)
    return assistant


@pytest.fixture
def vertrieb(db) -> Group:
    return Group.objects.create(name="Vertrieb")


@pytest.fixture
def company(alice, bob, vertrieb) -> list[Assistant]:
    """Three assistants: a flow for a group and bob, a retired one, and one for everyone."""
    flow = assistant_with(
        "coaching",
        position=2,
        description="Vier Schritte – für Führungskräfte",
        icon="compass",
        instructions="Du bist ein Coach.\n\nDu duzt und fragst nach.",
        temperature=0.5,
        max_tokens=800,
        starters=["Ich möchte mich abgrenzen.", "Soll ich mich bewerben?"],
        phases=PHASES,
    )
    flow.everyone = False
    flow.save()
    flow.groups.add(vertrieb)
    flow.users.add(bob)
    retired = assistant_with("alt", position=1, active=False, model="demo")
    plain = assistant_with(
        "schreibhilfe", position=1, name="Schreibhilfe", instructions="Schreibhilfe: Grüße"
    )
    return [flow, retired, plain]


def state() -> list[tuple]:
    """Everything an import may change, to compare before and after."""
    return [
        (
            a.slug,
            a.active,
            a.position,
            a.everyone,
            sorted(a.groups.values_list("name", flat=True)),
            sorted(a.users.values_list("username", flat=True)),
            list(a.versions.order_by("number").values_list("number", "name", "instructions", "created_by")),
        )
        for a in Assistant.objects.order_by("slug")
    ]


def export_bytes(path: Path) -> bytes:
    run("assistants", "export", str(path))
    return path.read_bytes()


def write(path: Path, data: dict) -> Path:
    if path.suffix == ".json":
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def import_lines(*args: str) -> list[str]:
    out, _err = run("assistants", "import", *args)
    return out.splitlines()


# --- export --------------------------------------------------------------------------------


def test_export_yaml_holds_every_assistant_by_position_and_slug(company, tmp_path):
    text = export_bytes(tmp_path / "assistants.yaml").decode("utf-8")

    data = yaml.safe_load(text)
    assert [a["slug"] for a in data["assistants"]] == ["alt", "schreibhilfe", "coaching"]
    alt, schreibhilfe, coaching = data["assistants"]
    assert alt["active"] is False
    assert alt["model"] == "demo"
    assert list(coaching) == [
        "slug",
        "name",
        "description",
        "icon",
        "instructions",
        "model",
        "temperature",
        "max_tokens",
        "starters",
        "phases",
        "active",
        "position",
        "access",
    ]
    assert coaching["access"] == {"everyone": False, "groups": ["Vertrieb"], "users": ["bob"]}
    assert coaching["phases"] == PHASES
    assert (coaching["temperature"], coaching["max_tokens"]) == (0.5, 800)
    assert schreibhilfe["access"] == {"everyone": True, "groups": [], "users": []}
    # Readable: umlauts as they are, multi-line texts as blocks.
    assert "Vier Schritte – für Führungskräfte" in text
    assert "instructions: |-\n      Du bist ein Coach.\n\n      Du duzt und fragst nach." in text
    assert "\\u" not in text


def test_export_json_keeps_umlauts(company, tmp_path):
    text = export_bytes(tmp_path / "assistants.json").decode("utf-8")

    assert "Grüße" in text
    assert "\\u00fc" not in text
    assert json.loads(text)["assistants"][1]["instructions"] == "Schreibhilfe: Grüße"


def test_export_to_stdout_is_yaml_unless_told(company):
    out, err = run("assistants", "export", "-")
    assert yaml.safe_load(out)["assistants"][0]["slug"] == "alt"
    assert "Exported 3 assistants to stdout." in err

    out, _err = run("assistants", "export", "-", "--format", "json")
    assert json.loads(out)["assistants"][2]["slug"] == "coaching"


def test_export_writes_the_current_version_only(company, tmp_path):
    coaching = company[0]
    version_save(coaching, {"name": "Coaching 2", "instructions": "Neu."}, by="ada")

    data = yaml.safe_load(export_bytes(tmp_path / "a.yaml"))
    assert data["assistants"][2]["name"] == "Coaching 2"
    assert data["assistants"][2]["phases"] == []
    assert "Du bist ein Coach" not in (tmp_path / "a.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_round_trip_through_an_empty_database_gives_the_same_bytes(company, tmp_path, suffix):
    first = export_bytes(tmp_path / f"first{suffix}")
    Assistant.objects.all().delete()

    lines = import_lines(str(tmp_path / f"first{suffix}"))

    assert lines[:3] == [
        "alt: created (version 1)",
        "schreibhilfe: created (version 1)",
        "coaching: created (version 1)",
    ]
    assert export_bytes(tmp_path / f"second{suffix}") == first
    coaching = Assistant.objects.get(slug="coaching")
    assert coaching.current.phases == PHASES
    assert coaching.current.created_by  # who imported: the operating system user


def test_export_is_stable(company, tmp_path):
    assert export_bytes(tmp_path / "a.yaml") == export_bytes(tmp_path / "b.yaml")


def test_export_refuses_an_unknown_extension(company, tmp_path):
    with pytest.raises(CommandError, match=r"name it \.json, \.yaml or \.yml"):
        run("assistants", "export", str(tmp_path / "assistants.txt"))
    assert not (tmp_path / "assistants.txt").exists()


# --- import --------------------------------------------------------------------------------


def test_import_twice_changes_nothing_the_second_time(company, tmp_path):
    path = tmp_path / "a.yaml"
    export_bytes(path)
    before = state()

    lines = import_lines(str(path))

    assert lines == [
        "alt: unchanged",
        "schreibhilfe: unchanged",
        "coaching: unchanged",
        f"Imported 3 assistants from {path}: 0 created, 0 changed, 3 unchanged. "
        "Assistants not in the file were left alone.",
    ]
    assert state() == before


def test_import_adds_a_version_naming_the_changed_fields(company, alice, tmp_path):
    path = tmp_path / "a.json"
    export_bytes(path)
    v1 = company[0].current
    pinned = Conversation.objects.create(owner=alice, model="demo", assistant_version=v1)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["assistants"][2]["instructions"] = "Du bist ein strenger Coach."
    data["assistants"][2]["starters"] = []
    write(path, data)

    lines = import_lines(str(path), "--actor", "git-deploy")

    assert "coaching: new version 2 (changed: instructions, starters)" in lines
    coaching = Assistant.objects.get(slug="coaching")
    assert (coaching.current.number, coaching.current.created_by) == (2, "git-deploy")
    assert coaching.current.phases == PHASES
    pinned.refresh_from_db()
    assert pinned.assistant_version == v1
    assert v1.instructions == AssistantVersion.objects.get(pk=v1.pk).instructions


def test_import_sets_state_and_access_without_a_version(company, alice, vertrieb, tmp_path):
    path = tmp_path / "a.yaml"
    export_bytes(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["assistants"][0]["active"] = True
    data["assistants"][1]["position"] = 7
    data["assistants"][2]["access"] = {"everyone": False, "groups": [], "users": ["alice", "bob"]}
    write(path, data)

    lines = import_lines(str(path))

    assert lines[:3] == [
        "alt: active changed",
        "schreibhilfe: position changed",
        "coaching: access changed",
    ]
    assert "0 created, 3 changed, 0 unchanged" in lines[3]
    assert AssistantVersion.objects.count() == 3
    coaching = Assistant.objects.get(slug="coaching")
    assert sorted(coaching.users.values_list("username", flat=True)) == ["alice", "bob"]
    assert not coaching.groups.exists()
    assert Assistant.objects.get(slug="alt").active is True
    assert Assistant.objects.get(slug="schreibhilfe").position == 7


def test_import_reports_a_version_and_other_changes_on_one_line(company, tmp_path):
    path = tmp_path / "a.yaml"
    export_bytes(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["assistants"][1].update(name="Schreibhilfe Plus", active=False, position=0)
    write(path, data)

    assert "schreibhilfe: new version 2 (changed: name); active, position changed" in import_lines(str(path))


def test_import_leaves_assistants_not_in_the_file_alone(company, tmp_path):
    path = write(
        tmp_path / "one.yaml",
        {"assistants": [{"slug": "neu", "name": "Neu", "instructions": "Du bist neu."}]},
    )
    before = state()

    lines = import_lines(str(path))

    assert lines[0] == "neu: created (version 1)"
    assert [s for s in state() if s[0] != "neu"] == before
    neu = Assistant.objects.get(slug="neu")
    # Keys left out take the values of a new assistant.
    assert (neu.active, neu.position, neu.everyone, neu.current.icon, neu.current.model) == (
        True,
        0,
        True,
        "sparkles",
        "",
    )


def test_help_says_assistants_not_in_the_file_are_left_alone():
    text = Command().create_parser("manage.py", "assistants").format_help()
    assert "Assistants not in the file are left alone" in " ".join(text.split())


def test_dry_run_reports_the_same_and_changes_nothing(company, tmp_path):
    path = tmp_path / "a.yaml"
    export_bytes(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["assistants"][2]["description"] = "Geändert"
    data["assistants"][0]["access"]["users"] = ["alice"]
    data["assistants"].append({"slug": "neu", "name": "Neu", "instructions": "Du bist neu."})
    write(path, data)
    before = state()

    dry = import_lines(str(path), "--dry-run")

    assert state() == before
    assert dry[-1] == "Dry run: nothing was changed."
    assert dry[-2].startswith("Would import 4 assistants")
    real = import_lines(str(path))
    assert (
        dry[:4]
        == real[:4]
        == [
            "alt: access changed",
            "schreibhilfe: unchanged",
            "coaching: new version 2 (changed: description)",
            "neu: created (version 1)",
        ]
    )
    assert real[-1].startswith("Imported 4 assistants")
    assert state() != before


def test_keep_existing_creates_the_missing_and_leaves_the_rest(company, tmp_path):
    path = tmp_path / "a.yaml"
    export_bytes(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["assistants"][2]["instructions"] = "Anders."
    data["assistants"][0]["active"] = True
    data["assistants"].append({"slug": "neu", "name": "Neu", "instructions": "Du bist neu."})
    write(path, data)
    before = state()

    lines = import_lines(str(path), "--keep-existing")

    assert lines[:4] == [
        "alt: exists, left as it is (--keep-existing)",
        "schreibhilfe: exists, left as it is (--keep-existing)",
        "coaching: exists, left as it is (--keep-existing)",
        "neu: created (version 1)",
    ]
    assert "1 created, 0 changed, 0 unchanged, 3 left as they are (--keep-existing)" in lines[4]
    assert [s for s in state() if s[0] != "neu"] == before


def test_import_from_stdin(db, monkeypatch):
    text = "assistants:\n  - slug: neu\n    name: Grüß Gott\n    instructions: Servus.\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))

    assert import_lines("-")[0] == "neu: created (version 1)"
    assert Assistant.objects.get(slug="neu").current.name == "Grüß Gott"


# --- refusals --------------------------------------------------------------------------------


def entry(**changes) -> dict:
    return {"slug": "coaching", "name": "Coaching", "instructions": "Du bist ein Coach.", **changes}


@pytest.mark.parametrize(
    ("assistants", "problem"),
    [
        ([entry(colour="rot")], "Assistant 'coaching', colour: unknown key"),
        ([entry(access={"everyone": True, "teams": []})], "Assistant 'coaching', access.teams: unknown key"),
        ([entry(name=["Coaching"])], "Assistant 'coaching', name: must be a text"),
        ([entry(temperature="warm")], "Assistant 'coaching', temperature: must be a number or null"),
        ([entry(max_tokens=1.5)], "Assistant 'coaching', max_tokens: must be a whole number or null"),
        ([entry(active="yes please")], "Assistant 'coaching', active: must be true or false"),
        ([entry(position=-1)], "Assistant 'coaching', position: must be a whole number from 0 to 32767"),
        ([entry(starters="Hallo")], "Assistant 'coaching', starters: must be a list"),
        ([entry(access={"everyone": "ja"})], "Assistant 'coaching', access.everyone: must be true or false"),
        (
            [entry(access={"groups": "Vertrieb"})],
            "Assistant 'coaching', access.groups: must be a list of names",
        ),
        (
            [entry(access={"groups": ["Einkauf"]})],
            "Assistant 'coaching', access.groups: there is no group named",
        ),
        (
            [entry(access={"users": ["mallory"]})],
            "Assistant 'coaching', access.users: there is no user named",
        ),
        ([{"slug": "coaching", "name": "Coaching"}], "Assistant 'coaching', instructions: is required"),
        ([entry(slug="Mit Leerzeichen")], "Assistant 'Mit Leerzeichen', slug: must be 1 to 50 letters"),
        ([entry(), entry(name="Zwei")], "Assistant 'coaching', slug: is also the slug of assistant 1"),
        ([entry(), "coaching"], "Assistant 2: must be a mapping"),
        ({"slug": "coaching"}, '"assistants" must be a list'),
    ],
)
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_import_refuses_a_bad_file_and_changes_nothing(company, tmp_path, suffix, assistants, problem):
    path = write(tmp_path / f"bad{suffix}", {"assistants": assistants})
    before = state()

    with pytest.raises(CommandError) as refused:
        run("assistants", "import", str(path))

    assert problem in str(refused.value)
    assert state() == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "gpt-evil"),
        ("temperature", 2.5),
        ("max_tokens", 0),
        ("icon", "unicorn"),
        ("name", ""),
        ("instructions", "   "),
        ("description", "x" * 301),
        ("starters", [""]),
        ("phases", [{"title": "Ziel"}]),
    ],
)
def test_import_refuses_what_version_clean_refuses_naming_assistant_and_field(
    company, tmp_path, field, value
):
    with pytest.raises(ValidationError) as refused:
        version_clean(entry(**{field: value}))
    path = write(tmp_path / "bad.yaml", {"assistants": [entry(**{field: value})]})
    before = state()

    with pytest.raises(CommandError) as error:
        run("assistants", "import", str(path))

    assert f"Assistant 'coaching', {field}: {refused.value.message_dict[field][0]}" in str(error.value)
    assert state() == before


def test_import_lists_every_problem_of_the_file_at_once(company, tmp_path):
    path = write(
        tmp_path / "bad.yaml",
        {
            "assistants": [entry(model="gpt-evil", temperature=3), entry(slug="neu", colour="rot")],
            "version": 2,
        },
    )

    with pytest.raises(CommandError) as refused:
        run("assistants", "import", str(path), "--dry-run")

    message = str(refused.value)
    assert message.startswith("The file has 4 problems; nothing was changed:")
    assert "The file, version: unknown key" in message
    assert "Assistant 'coaching', model:" in message
    assert "Assistant 'coaching', temperature:" in message
    assert "Assistant 'neu', colour: unknown key" in message


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("bad.yaml", "assistants:\n  - slug: a\n    slug: b\n", "the key 'slug' is given twice (line 3"),
        ("bad.yaml", "assistants: [\n", "is not valid YAML"),
        ("bad.json", '{"assistants": [}', "is not valid JSON: Expecting value (line 1)"),
        ("bad.json", '{"assistants": [], "assistants": []}', "the key 'assistants' is given twice"),
        ("bad.yaml", "- slug: a\n", 'must hold a mapping with the key "assistants"'),
        ("bad.txt", "assistants: []\n", r"name it .json, .yaml or .yml"),
    ],
)
def test_import_refuses_what_is_not_an_assistants_file(db, tmp_path, name, text, problem):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")

    with pytest.raises(CommandError) as refused:
        run("assistants", "import", str(path))

    assert problem in str(refused.value)
    assert not Assistant.objects.exists()


def test_import_refuses_a_missing_or_non_utf8_file(db, tmp_path):
    with pytest.raises(CommandError, match="There is no file"):
        run("assistants", "import", str(tmp_path / "missing.yaml"))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("assistants:\n  - slug: grüße\n".encode("latin-1"))
    with pytest.raises(CommandError, match="is not UTF-8"):
        run("assistants", "import", str(latin))


# --- the shipped examples ----------------------------------------------------------------------


def test_shipped_examples_import_as_three_assistants_for_everyone(db, tmp_path):
    lines = import_lines(str(EXAMPLES), "--keep-existing")

    assert lines[:3] == [
        "lieblingskollege: created (version 1)",
        "coaching: created (version 1)",
        "schreibhilfe: created (version 1)",
    ]
    assistants = {a.slug: a for a in Assistant.objects.select_related("current")}
    assert {slug: a.current.name for slug, a in assistants.items()} == {
        "lieblingskollege": "Lieblingskollege",
        "coaching": "Coaching",
        "schreibhilfe": "Schreibhilfe",
    }
    assert all(a.everyone and a.active for a in assistants.values())
    assert all(a.current.starters and a.current.description for a in assistants.values())
    # The demo model keys on these words.
    assert "Lieblingskollege" in assistants["lieblingskollege"].current.instructions
    assert " du " in assistants["lieblingskollege"].current.instructions
    assert "Schreibhilfe" in assistants["schreibhilfe"].current.instructions
    phases = assistants["coaching"].current.phases
    assert [p["title"] for p in phases] == ["Situation", "Ziel", "Optionen", "Nächste Schritte"]
    assert all(len(p["goal"]) > 40 and len(p["instructions"]) > 200 for p in phases)
    assert not assistants["lieblingskollege"].current.phases
    assert not assistants["schreibhilfe"].current.phases
    # The file is in the export's own form, so an export after `make run` diffs clean.
    assert export_bytes(tmp_path / "assistants.yaml") == EXAMPLES.read_bytes()


def test_shipped_examples_leave_edited_assistants_alone_with_keep_existing(db):
    import_lines(str(EXAMPLES))
    coaching = Assistant.objects.get(slug="coaching")
    version_save(coaching, {"name": "Unser Coaching", "instructions": "Eigene Anweisungen."}, by="ada")
    coaching.active = False
    coaching.save()

    lines = import_lines(str(EXAMPLES), "--keep-existing")

    assert lines[1] == "coaching: exists, left as it is (--keep-existing)"
    coaching.refresh_from_db()
    assert (coaching.current.name, coaching.current.number, coaching.active) == ("Unser Coaching", 2, False)
