"""Code style: ruff and snakefmt report nothing (`make lint` runs both and `snakemake --lint`, which
tests/test_workflow.py checks), so lint drift fails the suite even where pytest is called directly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT

BIN = Path(sys.executable).parent


def run(tool: str, *args: str) -> subprocess.CompletedProcess:
    executable = BIN / tool
    assert executable.exists(), f"{tool} is not installed next to {sys.executable}; run `make setup`"
    return subprocess.run([str(executable), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_reports_nothing():
    done = run("ruff", "check", "--no-cache", ".")
    assert done.returncode == 0, (f"`ruff check` found problems (`ruff check --fix` fixes the safe ones; "
                                  f"never `ruff format`):\n{done.stdout[-4000:]}{done.stderr[-2000:]}")


def test_snakefmt_reports_nothing():
    done = run("snakefmt", "--check", ".")
    assert done.returncode == 0, (f"`snakefmt --check` wants to reformat rule files (run `snakefmt .`):\n"
                                  f"{done.stdout[-2000:]}{done.stderr[-4000:]}")
