"""Declared analyses (pathologies.analysis): a declaration alone adds a rule, a target and a docs row.

The walkthrough in docs/adding_an_analysis.md promises that a table or figure is its module, one declaration,
a caption and a schema key; these tests register a test-only figure by a declaration and find it in each
place that is derived from the declarations.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from conftest import ROOT
from pathologies import outputs_doc
from pathologies.analysis import Analysis, input_options, outputs, rule_resources
from pathologies.ddd import rules as ddd_rules
from pathologies.ddd.measures import correct_histogram
from pathologies.experiments import validate
from test_workflow import copy_workflow, snakemake

DDD_TINY = ROOT / "tests" / "configs" / "ddd_tiny.yaml"
# A test-only figure: Figure 2's drawing under a new name, enabled by the experiment's rsa_images
TEST_ONLY = Analysis("test_only_histogram", "ddd.figures", {"out": "figures/test_only_histogram.png"},
                     "ddd_fig02_histogram.rst", {"histogram": "histogram.csv"}, function="fig02_histogram",
                     switch="rsa_images", paper="test only")
DECLARATION = repr(TEST_ONLY)  # the same record, as source for the workflow copy's ddd/rules.py
FIGURE = "results/ddd/tiny/figures/test_only_histogram.png"


def tiny_config(**options) -> dict:
    raw = yaml.safe_load(DDD_TINY.read_text())
    raw["ddd"]["tiny"].update(options)
    return validate(copy.deepcopy(raw))


def rules_of(config: dict) -> ddd_rules.DddRules:
    return ddd_rules.DddRules(config, lambda m, s: f"results/models/{m}/seed{s}", lambda n: f"results/data/{n}.h5")


def test_a_declared_analysis_is_a_target_where_its_switch_is_on(monkeypatch):
    before = rules_of(tiny_config()).targets()
    monkeypatch.setattr(ddd_rules, "ANALYSES", (*ddd_rules.ANALYSES, TEST_ONLY))
    assert sorted(rules_of(tiny_config()).targets()) == sorted([*before, FIGURE])
    assert FIGURE not in rules_of(tiny_config(rsa_images=0)).targets()


def test_a_declared_analysis_has_its_row_in_the_docs_table(monkeypatch):
    row = ("| `figures/test_only_histogram.png` | `ddd_test_only_histogram` | `ddd.figures fig02_histogram` "
           "| `rsa_images` | test only |")
    assert row not in outputs_doc.document()
    monkeypatch.setattr(ddd_rules, "ANALYSES", (*ddd_rules.ANALYSES, TEST_ONLY))
    assert row in outputs_doc.document()


def test_docs_outputs_table_is_generated_from_the_declarations():
    assert outputs_doc.main(["--check", str(ROOT / "docs" / "outputs.md")]) == 0


def test_every_declaration_names_a_caption_that_exists_and_unique_rules():
    for module in ("sis", "overinterp", "ddd"):
        rules = __import__(f"pathologies.{module}.rules", fromlist=["ANALYSES"])
        names = [a.name for a in rules.ANALYSES]
        assert len(names) == len(set(names)), module
        for analysis in rules.ANALYSES:
            for key in analysis.reported():
                assert (ROOT / "workflow" / "report" / analysis.caption_of(key)).is_file(), (module, analysis.name)


def test_a_retried_analysis_asks_for_more_memory_and_time():
    analysis = Analysis("t", "ddd.kappa", {"table": "t.csv"}, "", mem_mb=2000, runtime=30)
    resources = rule_resources(analysis)
    assert [resources["mem_mb"](None, attempt) for attempt in (1, 2)] == [2000, 4000]
    assert [resources["runtime"](None, attempt) for attempt in (1, 3)] == [30, 90]


def test_outputs_expand_further_wildcards_and_apply_switch_and_predicate():
    class Rules:
        def options(self, value):
            return {"on": True, "off": False}

        def always(self, value):
            return True

        def never(self, value):
            return False

        def expand(self, analysis, value):
            return [{"part": "a"}, {"part": "b"}]

    stage = ddd_rules.STAGE
    declared = [Analysis("one", "m", {"out": "x.csv"}, "", switch="on", when="always"),
                Analysis("two", "m", {"out": "y.csv"}, "", switch="off"),
                Analysis("three", "m", {"out": "z.csv"}, "", when="never"),
                Analysis("four", "m", {"out": "{part}/{experiment}.png"}, "", expand=True)]
    assert outputs(stage, declared, Rules(), "e") == ["results/ddd/e/x.csv", "results/ddd/e/a/e.png",
                                                      "results/ddd/e/b/e.png"]
    assert input_options({"a_b": ["p q", "r"], "c": [], "d": "s"}) == ["--a-b", "p q", "r", "--d", "s"]


@pytest.mark.workflow
def test_a_declaration_added_to_the_stage_file_becomes_a_rule_and_a_job(tmp_path):
    """The real thing: the declaration appended to a copy's ddd/rules.py gives Snakemake a rule, and rule all
    a job that runs the declared module with the declared options."""
    work = copy_workflow(tmp_path)
    declarations = work / "workflow" / "pathologies" / "ddd" / "rules.py"
    declarations.write_text(declarations.read_text() + f"\nANALYSES = (*ANALYSES, {DECLARATION})\n")
    assert "ddd_test_only_histogram" in snakemake("--list-rules", "--configfile", str(DDD_TINY), cwd=work).stdout
    dry = snakemake("-n", "-p", "--configfile", str(DDD_TINY), cwd=work).stdout
    assert ("Shell command: python -m pathologies.ddd.figures fig02_histogram --histogram "
            f"results/ddd/tiny/histogram.csv --out {FIGURE} > results/logs/ddd/tiny/test_only_histogram.log 2>&1"
            in dry)
    # and the job runs that command (a shell line evaluated late would run the last declaration's module)
    (work / "results/ddd/tiny").mkdir(parents=True)
    correct_histogram(np.array([0, 1, 2, 2]), 2).to_csv(work / "results/ddd/tiny/histogram.csv", index=False)
    snakemake(FIGURE, "--cores", "1", "--configfile", str(DDD_TINY), "--allowed-rules", "ddd_test_only_histogram",
              cwd=work)
    assert (work / FIGURE).read_bytes().startswith(b"\x89PNG")
