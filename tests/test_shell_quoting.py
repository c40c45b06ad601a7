"""Hostile file names from a config never reach the shell as code: every rule quotes what it puts on a shell
line, and a name with ``$(...)``, backticks, ``;``, quotes and spaces arrives at the module as one unchanged
argument."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from test_workflow import copy_workflow, snakemake

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)(:[^}]*)?\}")
# a name a person could give an answer file: command substitution, backticks, a separator, quotes, spaces
HOSTILE = "p $(touch PWNED) `touch PWNED2`; x'y\"z"


def shell_strings(text: str) -> list[tuple[int, str]]:
    """(line number, string literal) of every line inside a rule's ``shell:`` section."""
    found, in_shell = [], False
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if re.fullmatch(r"shell:", stripped):
            in_shell = True
        elif in_shell and stripped.startswith(('"', "f\"", "'")):
            found.append((number, stripped))
        else:
            in_shell = False
    return found


def test_every_placeholder_on_a_shell_line_is_quoted():
    unquoted = []
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for number, literal in shell_strings(path.read_text()):
            for match in PLACEHOLDER.finditer(literal.replace("{{", "").replace("}}", "")):
                if not (match.group(2) or "").endswith("q"):
                    unquoted.append(f"{path.name}:{number}: {match.group(0)}")
    assert not unquoted, "placeholders on shell lines without :q:\n" + "\n".join(unquoted)


def test_the_walker_finds_shell_lines_and_unquoted_placeholders():
    rule = 'rule a:\n    shell:\n        "python -m x --in {input.answers} "\n        "--out {output:q}"\n    log:\n'
    literals = shell_strings(rule)
    assert [number for number, _ in literals] == [3, 4]
    marks = [m.group(2) for _, lit in literals for m in PLACEHOLDER.finditer(lit)]
    assert marks == [None, ":q"]


@pytest.fixture(scope="module")
def hostile_workflow(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A copy of the workflow whose default config names user files with hostile names (all of them exist)."""
    work = copy_workflow(tmp_path_factory.mktemp("hostile"))
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    files = {kind: f"user files/{kind} {HOSTILE}.{suffix}" for kind, suffix in
             [("answers", "json"), ("pairs", "json"), ("questions", "json"), ("exclude", "txt"), ("weights", "pt")]}
    (work / "user files").mkdir()
    for path in files.values():
        (work / path).write_text("0\n" if path.endswith(".txt") else "{}\n")
    config["overinterpretation"]["digits"]["human_benchmark"]["answers"] = [files["answers"]]
    experiment = config["ddd"]["gaussian_variants"]
    experiment["exclude_ids"] = files["exclude"]
    experiment["human"] = {"pair_answers": [files["pairs"]], "question_answers": [files["questions"]]}
    config["models"]["digits_cnn"]["weights"] = files["weights"]
    (work / "hostile.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return work, files


def shell_commands(stdout: str) -> dict[str, list[list[str]]]:
    """{module: its command lines} of ``snakemake -n -p``, each split as the shell splits it (the module is
    the ``pathologies.*`` one, also behind a launcher such as ``torch.distributed.run``)."""
    commands: dict[str, list[list[str]]] = {}
    for line in stdout.splitlines():
        if line.strip().startswith("Shell command: python "):
            argv = shlex.split(line.strip().removeprefix("Shell command: "))
            module = next(b for a, b in zip(argv, argv[1:], strict=False) if a == "-m" and b.startswith("pathologies."))
            commands.setdefault(module, []).append(argv)
    return commands


def test_hostile_file_names_reach_every_module_as_one_unchanged_argument(hostile_workflow):
    work, files = hostile_workflow
    done = snakemake("-n", "-p", "--forceall", "--configfile", "hostile.yaml", cwd=work)
    by_module = shell_commands(done.stdout)
    assert sum(map(len, by_module.values())) > 50, done.stdout[-2000:]

    [score] = [a for a in by_module["pathologies.overinterp.human_benchmark"] if "--score" in a]
    assert score[score.index("--score") + 1] == files["answers"]
    [human] = by_module["pathologies.ddd.human_scores"]
    assert human[human.index("--pair-answers") + 1] == files["pairs"]
    assert human[human.index("--question-answers") + 1] == files["questions"]
    # files named inside a JSON spec: the spec is one argument and holds the name unchanged
    trainings = [json.loads(a[a.index("--spec") + 1]) for a in by_module["pathologies.training.train"]]
    assert files["weights"] in [spec.get("weights") for spec in trainings]
    [experiment] = by_module["pathologies.ddd.experiment"]
    assert json.loads(experiment[experiment.index("--spec") + 1])["exclude_ids"] == files["exclude"]
    assert not (work / "PWNED").exists() and not (work / "PWNED2").exists()


def test_a_quoted_command_runs_the_module_with_the_name_and_nothing_else(hostile_workflow, tmp_path):
    """The command Snakemake formats, run by a real shell: the module gets the name; nothing it hides runs."""
    work, files = hostile_workflow
    done = snakemake("-n", "-p", "--forceall", "--configfile", "hostile.yaml", cwd=work)
    [line] = [line.strip().removeprefix("Shell command: ") for line in done.stdout.splitlines()
              if line.strip().startswith("Shell command: python -m pathologies.overinterp.human_benchmark --score")]
    fake = tmp_path / "bin" / "python"  # records its argv instead of running the module
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open('argv.json', 'w'))\n")
    fake.chmod(0o755)
    (tmp_path / "results" / "logs").mkdir(parents=True)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", "-c", line.split(" > ")[0]], cwd=tmp_path, env=env, check=True, timeout=60)
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[argv.index("--score") + 1] == files["answers"]
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "PWNED2").exists()
