"""`snakemake --archive`: the archive of the committed workflow holds everything a dry run needs.

Snakemake archives the files under git version control, the workflow's own sources, and for every
conda environment of the rules the conda packages it resolved. The last part needs conda and its
channels, which this machine does not reach, so a small conda stand-in answers the few conda calls
the archive makes (an environment without conda packages; the pip part of envs/*.yaml is fetched
from PyPI when an environment is built) and records which environment files Snakemake asked for.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT
from test_workflow import snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

CONDA_STAND_IN = '''\
#!{python}
"""Offline stand-in for the conda calls of `snakemake --archive`; anything else fails loudly."""
import json, pathlib, sys

args = sys.argv[1:]

def value(option):
    return args[args.index(option) + 1].strip("'\\"")

if args == ["info", "--json"]:
    print(json.dumps({{"conda_prefix": "{prefix}", "platform": "linux-64"}}))
elif args == ["--version"]:
    print("conda 24.7.1")
elif args[:2] == ["config", "--get"]:
    print(json.dumps({{"get": {{"channel_priority": "strict"}}}}))
elif args[:2] == ["env", "create"]:
    pathlib.Path(value("--prefix"), "bin").mkdir(parents=True)
elif args[:1] == ["clean"]:
    pass
elif args[:2] == ["list", "--explicit"]:
    print("@EXPLICIT")
else:
    sys.exit(f"conda stand-in: unexpected call conda {{' '.join(args)}}")
'''


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=60).stdout


@pytest.fixture(scope="module")
def committed_copy(tmp_path_factory) -> Path:
    """A git repository holding what this checkout would commit: tracked and new unignored files."""
    if shutil.which("git") is None or subprocess.run(["git", "rev-parse"], cwd=ROOT, capture_output=True).returncode:
        pytest.skip("needs git and a git checkout of the project")
    copy = tmp_path_factory.mktemp("committed")
    for name in git("ls-files", "--cached", "--others", "--exclude-standard", "-z", cwd=ROOT).split("\0"):
        if name and (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    git("init", "--quiet", cwd=copy)
    git("add", "--all", cwd=copy)
    git("-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "commit.gpgsign=false",
        "commit", "--quiet", "--message", "snapshot", cwd=copy)
    return copy


@pytest.fixture(scope="module")
def archive(committed_copy, tmp_path_factory) -> tuple[Path, str]:
    """(archive path, snakemake output) of `snakemake --archive` with the conda stand-in on PATH."""
    tools = tmp_path_factory.mktemp("tools")
    conda = tools / "conda"
    conda.write_text(CONDA_STAND_IN.format(python=sys.executable, prefix=tools / "conda-prefix"))
    conda.chmod(0o755)
    path = tmp_path_factory.mktemp("archive") / "workflow.tar.gz"
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{tools}{os.pathsep}{old_path}"
    try:
        done = snakemake("--archive", str(path), cwd=committed_copy)
    finally:
        os.environ["PATH"] = old_path
    return path, done.stdout + done.stderr


def test_archive_holds_the_workflow_code_configs_and_environments(archive):
    path, _ = archive
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
    expected = {"Snakefile", "envs/pathologies.yaml", "profiles/default/config.yaml",
                "profiles/slurm/config.yaml", "requirements.txt", "workflow/schemas/config.schema.yaml",
                "workflow/pathologies/training/train.py"}
    expected |= {str(p.relative_to(ROOT)) for p in (ROOT / "workflow" / "rules").glob("*.smk")}
    expected |= {str(p.relative_to(ROOT)) for p in (ROOT / "config").glob("*.yaml")}
    assert expected <= names, f"missing from the archive: {sorted(expected - names)}"
    outputs = [name for name in names if name.startswith(".venv/") or name.endswith((".h5", ".pt", ".png"))]
    assert not outputs, f"the archive holds outputs or a virtual environment: {outputs[:5]}"


def test_archive_asks_for_every_rule_environment_and_only_pinned_files(archive):
    _, output = archive
    envs = set(re.findall(r"Creating conda environment (\S+)\.\.\.", output))
    assert envs, "the archive built no conda environment: do the rules name `conda:` files?"
    assert all(Path(env).parent.as_posix() == "envs" and (ROOT / env).is_file() for env in envs), envs


def test_extracted_archive_dry_runs_every_config(archive, tmp_path):
    path, _ = archive
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path, filter="data")
    snakemake("-n", cwd=tmp_path)
    for configfile in sorted((tmp_path / "config").glob("*.yaml")):
        done = snakemake("-n", "--quiet", "rules", "--configfile", str(configfile), cwd=tmp_path)
        assert "train" in done.stdout, textwrap.shorten(done.stdout, 300)
