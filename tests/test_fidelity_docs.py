"""The fidelity tables (docs/fidelity_*.md) name only outputs that a declared analysis or a rule produces."""

from __future__ import annotations

import re

import pytest

from conftest import ROOT
from pathologies.ddd import rules as ddd
from pathologies.overinterp import rules as overinterp
from pathologies.sis import rules as sis

DOCS = ("docs/fidelity_ddd.md", "docs/fidelity_overinterpretation.md")
OUTPUT_SUFFIXES = (".png", ".pdf", ".csv", ".h5", ".html", ".txt", ".json", ".md")
# backquoted names under these folders are the authors' files, the user's inputs or the project's sources
NOT_OUTPUTS = ("data/", "resources/", "config/", "tests/", "scripts/", "docs/", "workflow/")


def output_patterns() -> tuple[list[str], list[str]]:
    """(file patterns, directory patterns) under results/: every declared analysis' outputs in its stage's
    folder and every ``"results/..."`` path of the rule files (outputs and the inputs other rules make)."""
    files = [f"{stage.folder}/{path}" for stage, analyses in
             ((sis.STAGE, sis.ANALYSES), (overinterp.STAGE, overinterp.ANALYSES), (ddd.STAGE, ddd.ANALYSES))
             for analysis in analyses for path in analysis.outputs.values()]
    text = "\n".join(path.read_text() for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")))
    directories = re.findall(r'directory\(\s*"(results/[^"]+)"', text)
    files += [path for path in re.findall(r'"(results/[^"]+)"', text)
              if path not in directories and not path.startswith(("results/logs/", "results/benchmarks/"))]
    return files, directories


def _regex(segments: list[str]) -> re.Pattern:
    """A path pattern's segments with each ``{wildcard}`` matching within one segment."""
    return re.compile("/".join(re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(s)) for s in segments))


def produced(name: str, files: list[str], directories: list[str]) -> bool:
    """Whether ``name`` (``histogram.csv``, ``figures/fig02_histogram.png``, ``human/``, ``human/pairs.csv``)
    is the end of a produced path: a file pattern's last segments, a directory output's last segments (or a
    file inside one), or, ending in ``/``, a folder that holds produced files. A wildcard matches within one
    segment, so ``sota_published/fractions.csv`` is ``{experiment}/fractions.csv``."""
    folder = name.endswith("/")
    name = name.rstrip("/")
    for pattern in files + directories:
        segments = pattern.split("/")
        for start in range(len(segments)):
            if folder:  # named by its own segments, not by a wildcard's value alone
                ends = range(start + 1, len(segments) + (pattern in directories))
                if any(_regex(segments[start:end]).fullmatch(name) and not any(
                        re.fullmatch(r"\{[^}]*\}", s) for s in segments[start:end]) for end in ends):
                    return True
            elif _regex(segments[start:]).fullmatch(name):
                return True
            elif pattern in directories and re.fullmatch(_regex(segments[start:]).pattern + "/[^/]+", name):
                return True
    return False


def named_outputs(text: str) -> list[str]:
    """Backquoted output names in the table rows of a Markdown text (``name`` or ``name` column`` forms)."""
    names = []
    for line in text.splitlines():
        if line.startswith("|"):
            for token in re.findall(r"`([^`\s]+)`", line):
                if token.startswith(NOT_OUTPUTS):
                    continue
                if token.endswith(OUTPUT_SUFFIXES) or (token.endswith("/") and "/" not in token[:-1]):
                    names.append(token)
    return names


def test_the_matcher_finds_produced_names_and_refuses_others():
    files, directories = output_patterns()
    for name in ("histogram.csv", "figures/fig02_histogram.png", "sota_published/fractions.csv", "human/",
                 "human/questions.csv", "tables/accuracy.csv", "figures/ensemble_resnet18_x5.png", "figures/"):
        assert produced(name, files, directories), name
    for name in ("figures/fig99_nothing.png", "accuracy_table.csv", "histogram.csv/", "humans/", "fig02_histogram.csv"):
        assert not produced(name, files, directories), name
    assert named_outputs("| a | `figures/x.png`, `data/label_errors.npy`, `kappa.csv` column `p_value` | `human/` |\n"
                         "`outside.csv` is not in a table") == ["figures/x.png", "kappa.csv", "human/"]


@pytest.mark.parametrize("doc", DOCS)
def test_every_output_a_fidelity_table_names_is_produced(doc):
    files, directories = output_patterns()
    names = named_outputs((ROOT / doc).read_text())
    stale = sorted({name for name in names if not produced(name, files, directories)})
    assert not stale, f"{doc} names outputs no analysis or rule produces: {stale}"
