"""config/README.md's per-key tables, rendered from the descriptions and defaults of the config schema.

The schema (``workflow/schemas/config.schema.yaml``) is the one place a key's meaning and default live.
config/README.md keeps its prose by hand; each table sits between two marker comments::

    <!-- config-table: recipe -->
    | key | default | meaning |
    ...
    <!-- /config-table -->

and is rewritten by ``python -m pathologies.config_docs --write config/README.md`` (``--check`` only
compares). A schema property without a ``description`` is an error: every key gets a meaning.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cliargs import CommandParser
from .config import SCHEMA_PATH, load_schema
from .errors import UserError, cli
from .io import atomic_output

COMMAND = "python -m pathologies.config_docs --write config/README.md"
BEGIN, END = "<!-- config-table: {} -->", "<!-- /config-table -->"
MARKED = re.compile(r"(<!-- config-table: (?P<name>[\w.]+) -->\n)(?P<body>.*?)(<!-- /config-table -->)", re.S)


@dataclass(frozen=True)
class Section:
    """One table: the object schema at ``path`` (keys into the schema), rows for its properties.

    ``expand``: nested inline objects become dotted rows (``base.arch``); ``own_table``: properties
    documented by a table of their own (their row stays, their children do not)."""

    path: tuple[str, ...]
    expand: bool = True
    own_table: frozenset[str] = frozenset()


SECTIONS: dict[str, Section] = {
    "top": Section((), expand=False),
    "datasets": Section(("$defs", "dataset")),
    "recipe": Section(("$defs", "recipe")),
    "model": Section(("$defs", "model")),
    "train_jobs": Section(("properties", "train_jobs")),
    "sis": Section(("properties", "sis"), own_table=frozenset({"runs"})),
    "sis.runs": Section(("properties", "sis", "properties", "runs", "additionalProperties")),
    "ddd": Section(("$defs", "ddd_experiment"), own_table=frozenset({"conditions"})),
    "ddd.conditions": Section(("$defs", "ddd_condition")),
    "overinterpretation": Section(("$defs", "overinterp_experiment"), own_table=frozenset({"retrain"})),
    "overinterpretation.retrain": Section(("$defs", "overinterp_experiment", "properties", "retrain")),
}


def literal(value: Any) -> str:
    """``value`` as it would be written in a YAML config (flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value if re.fullmatch(r"[A-Za-z_][\w.\-]*", value) and value not in ("null", "true", "false") \
            else json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(literal(item) for item in value) + "]"
    return "{" + ", ".join(f"{key}: {literal(item)}" for key, item in value.items()) + "}"


def _object(schema: dict) -> dict | None:
    """The inline object schema of a property (also the object branch of ``oneOf: [null, object]``)."""
    if "properties" in schema:
        return schema
    for branch in schema.get("oneOf", []):
        if isinstance(branch, dict) and "properties" in branch:
            return branch
    return None


def _at(schema: dict, path: tuple[str, ...]) -> dict:
    node = schema
    for key in path:
        node = node[key]
    return _object(node) or node


def _row(where: str, key: str, spec: dict, required: bool) -> tuple[str, str, str]:
    if "description" not in spec:
        raise UserError(f"{SCHEMA_PATH}: property {where} has no description; add one (it is the meaning column "
                        f"of config/README.md), then run {COMMAND}")
    if "default" in spec:
        default = f"`{literal(spec['default'])}`"
    else:
        default = "required" if required else "—"
    meaning = " ".join(str(spec["description"]).split()).replace("|", "\\|")
    return f"`{key}`", default, meaning


def _rows(node: dict, section: Section, where: str, prefix: str = "") -> Iterator[tuple[str, str, str]]:
    required = set(node.get("required", []))
    for key, spec in node.get("properties", {}).items():
        name, here = prefix + key, f"{where}/properties/{key}".lstrip("/")
        inner = _object(spec) if section.expand and key not in section.own_table and "$ref" not in spec else None
        if inner is None or "description" in spec:
            yield _row(here, name, spec, key in required)
        if inner is not None:
            yield from _rows(inner, section, here, name + ".")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _datasets(node: dict, where: str) -> str:
    """One block of rows per dataset kind (the schema's ``allOf`` of ``if kind ... then options``)."""
    rows = []
    for i, branch in enumerate(node["allOf"]):
        kind = branch["if"]["properties"]["kind"]
        kinds = [kind["const"]] if "const" in kind else kind["enum"]
        options = {key: spec for key, spec in branch["then"]["properties"].items() if key != "kind"}
        first = ", ".join(f"`{name}`" for name in kinds)
        for j, row in enumerate(_rows({"properties": options}, SECTIONS["datasets"], f"{where}/allOf/{i}/then")):
            rows.append((first if j == 0 else "",) + row)
    return _table(("kind", "option", "default", "meaning"), rows)


def render(name: str, schema: dict) -> str:
    """The markdown table of section ``name``."""
    if name not in SECTIONS:
        raise UserError(f"config/README.md: unknown table {name!r} in a config-table marker; "
                        f"known: {', '.join(SECTIONS)}")
    section = SECTIONS[name]
    node, where = _at(schema, section.path), "/".join(section.path)
    if name == "datasets":
        return _datasets(node, where)
    return _table(("key", "default", "meaning"), list(_rows(node, section, where)))


def update(text: str, schema: dict, source: str = "config/README.md") -> str:
    """``text`` with every marked table rendered anew; each section must be marked exactly once."""
    found = [match["name"] for match in MARKED.finditer(text)]
    for name in SECTIONS:
        if found.count(name) != 1:
            raise UserError(f"{source}: table {name!r} is marked {found.count(name)} times; keep exactly one "
                            f"{BEGIN.format(name)} ... {END} pair")
    return MARKED.sub(lambda match: match[1] + render(match["name"], schema) + match[4], text)


@cli
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(__spec__.name, description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", type=Path, metavar="README", help="rewrite the marked tables of this file")
    action.add_argument("--check", type=Path, metavar="README", help="exit 1 when the tables are out of date")
    args = parser.parse_args(argv)
    path = args.write or args.check
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"cannot read {path} ({err.strerror}); pass config/README.md") from None
    new = update(text, load_schema(), str(path))
    if args.check:
        if new != text:
            print(f"{path}: its config tables differ from the schema's descriptions; run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    if new != text:
        with atomic_output(path) as tmp:
            tmp.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
