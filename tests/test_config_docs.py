"""config/README.md's key tables are rendered from the schema's descriptions (pathologies.config_docs)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from pathologies import config_docs
from pathologies.config import load_schema
from pathologies.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "config" / "README.md"


@pytest.fixture(scope="module")
def schema():
    return load_schema()


def test_config_readme_tables_are_the_schema_rendering(schema):
    text = README.read_text()
    assert config_docs.update(text, schema) == text, (
        f"config/README.md's tables differ from the schema's descriptions; run {config_docs.COMMAND}")


def _properties(node, path=()):
    """(path, schema) of every property, outside `if` conditions and the recipe_overrides key list."""
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key == "properties":
            for name, spec in value.items():
                yield path + (name,), spec
                yield from _properties(spec, path + (name,))
        elif key not in ("if", "recipe_overrides") and isinstance(value, dict):
            yield from _properties(value, path + (key,))
        elif isinstance(value, list):
            for item in value:
                yield from _properties(item, path + (key,))


def test_every_schema_key_has_a_meaning(schema):
    # an inline object is described through its keys (rows `calibration.bins`, ...)
    undescribed = [".".join(path) for path, spec in _properties(schema)
                   if isinstance(spec, dict) and "description" not in spec and "properties" not in spec]
    assert not undescribed


def test_every_described_key_of_a_section_is_a_row_with_its_schema_default(schema):
    recipe = config_docs.render("recipe", schema)
    for key, spec in schema["$defs"]["recipe"]["properties"].items():
        row = f"| `{key}` | `{config_docs.literal(spec['default'])}` | "
        assert row in recipe, key
    ddd = config_docs.render("ddd", schema)
    assert "| `human.pairs` | `149` | " in ddd and "| `base.arch` | required | " in ddd
    assert "| `conditions` | — | " in ddd and "conditions.overrides" not in ddd  # a table of its own
    datasets = config_docs.render("datasets", schema).splitlines()
    assert datasets[2].startswith("| `digits` | `test_fraction` | `0.25` | ")
    assert datasets[3].startswith("|  | `seed` | `0` | ")
    assert any(line.startswith("| `mnist`, `fashion_mnist` | `download` | `false` | ") for line in datasets)


def test_a_new_key_needs_a_description_and_then_appears(schema):
    schema = copy.deepcopy(schema)
    schema["$defs"]["recipe"]["properties"]["label_smoothing"] = {"type": "number", "default": 0.1}
    with pytest.raises(UserError, match=r"\$defs/recipe/properties/label_smoothing has no description"):
        config_docs.render("recipe", schema)
    schema["$defs"]["recipe"]["properties"]["label_smoothing"]["description"] = "Smoothing | of labels."
    assert config_docs.render("recipe", schema).splitlines()[-1] == \
        "| `label_smoothing` | `0.1` | Smoothing \\| of labels. |"


@pytest.mark.parametrize("value, text", [
    (5e-4, "0.0005"), (None, "null"), (True, "true"), ([1, 10], "[1, 10]"), ({"default": {}}, "{default: {}}"),
    ("sgd", "sgd"), ("null", '"null"'), ("a: b", '"a: b"'), ([0.05, 0.3], "[0.05, 0.3]"),
])
def test_defaults_are_written_as_yaml(value, text):
    assert config_docs.literal(value) == text


def test_prose_outside_the_markers_stays_and_markers_must_be_complete(schema):
    text = README.read_text()
    row = "| `momentum` | `0.9` | SGD momentum. |"
    assert row in text
    stale = text.replace(row, "| `momentum` | `0.5` | old |")
    stale = stale.replace("# Configuration", "# Configuration (hand-written)")
    fixed = config_docs.update(stale, schema)
    assert row in fixed and "| `momentum` | `0.5` |" not in fixed and "# Configuration (hand-written)" in fixed
    without = text.replace("<!-- config-table: sis.runs -->", "<!-- no table -->")
    with pytest.raises(UserError, match="table 'sis.runs' is marked 0 times"):
        config_docs.update(without, schema)
    unknown = text + "\n<!-- config-table: nope -->\n<!-- /config-table -->\n"
    with pytest.raises(UserError, match="unknown table 'nope'"):
        config_docs.update(unknown, schema)


def test_check_fails_on_a_stale_copy_and_write_fixes_it(tmp_path, capsys):
    copy_ = tmp_path / "README.md"
    assert "SGD momentum." in README.read_text()
    copy_.write_text(README.read_text().replace("SGD momentum.", "Momentum of SGD."))
    assert config_docs.main(["--check", str(copy_)]) == 1
    assert config_docs.COMMAND in capsys.readouterr().err
    assert config_docs.main(["--write", str(copy_)]) == 0
    assert copy_.read_text() == README.read_text()
    assert config_docs.main(["--check", str(copy_)]) == 0
    with pytest.raises(SystemExit) as exit_:
        config_docs.main(["--check", str(tmp_path / "missing.md")])
    assert exit_.value.code == 2 and "error: cannot read" in capsys.readouterr().err
