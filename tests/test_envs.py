"""Software environments: the conda files of the rules (envs/*.yaml) and the pip pins (requirements.txt)
pin the same versions, cover every package the code imports, and the pip path installed exactly them."""

from __future__ import annotations

import ast
import importlib.metadata
import platform
import re
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))
REQUIREMENTS = ROOT / "requirements.txt"
PACKAGE = ROOT / "workflow" / "pathologies"
CONDA_BASE = {"python", "pip"}  # the interpreter and installer of a conda env, not Python packages


def normalise(name: str) -> str:
    """PEP 503 name: case and -_. do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
            assert match, f"{REQUIREMENTS.name}: '{line}' is not pinned as name==version"
            pins[normalise(match[1])] = match[2]
    return pins


def env_pins(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(conda pins, pip pins) of a conda environment file; every entry must pin an exact version."""
    conda, pip = {}, {}
    for entry in yaml.safe_load(path.read_text())["dependencies"]:
        if isinstance(entry, dict):
            for line in entry["pip"]:
                match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line)
                assert match, f"{path.name}: pip entry '{line}' is not pinned as name==version"
                pip[normalise(match[1])] = match[2]
        else:
            match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==?([0-9][^\s=]*)(=\S+)?", entry)
            assert match, f"{path.name}: conda entry '{entry}' is not pinned as name=version"
            conda[normalise(match[1])] = match[2]
    return conda, pip


def imported_distributions(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Distribution -> a file importing it, for every third-party top-level import under ``folder``."""
    providers = importlib.metadata.packages_distributions()
    found = {}
    for source in sorted(folder.rglob("*.py")):
        if any(part in skip for part in source.relative_to(folder).parts):
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules = [node.module]
            else:
                continue
            for top in {module.split(".")[0] for module in modules}:
                if top in sys.stdlib_module_names or top in ("__future__", "pathologies"):
                    continue
                assert top in providers, f"{source.name} imports '{top}', which no installed distribution provides"
                for dist in providers[top]:
                    found.setdefault(normalise(dist), str(source.relative_to(folder)))
    return found


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_conda_env_pins_agree_with_the_pip_pins(env_file):
    conda, pip = env_pins(env_file)
    pins = requirement_pins()
    for name, version in {**{k: v for k, v in conda.items() if k not in CONDA_BASE}, **pip}.items():
        assert name in pins, f"{env_file.name} pins {name}=={version}; add it to {REQUIREMENTS.name}"
        assert pins[name] == version, f"{name}: {env_file.name} pins {version}, {REQUIREMENTS.name} {pins[name]}"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_conda_env_python_satisfies_the_project(env_file):
    from packaging.specifiers import SpecifierSet

    python = env_pins(env_file)[0]["python"]
    requires = re.search(r'requires-python\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text())[1]
    assert SpecifierSet(requires).contains(python), f"{env_file.name}: python {python} is not {requires}"


def test_rule_environment_pins_every_package_the_rules_import():
    rules_env = ROOT / "envs" / "pathologies.yaml"
    _, pip = env_pins(rules_env)
    # benchmarks run from the development environment, never inside a rule
    missing = {d: f for d, f in imported_distributions(PACKAGE, skip=("bench",)).items() if d not in pip}
    assert not missing, f"{rules_env.name} lacks packages the code imports (distribution: file): {missing}"


def test_requirements_pin_every_package_the_code_imports():
    pins = requirement_pins()
    missing = {d: f for d, f in imported_distributions(PACKAGE).items() if d not in pins}
    assert not missing, f"{REQUIREMENTS.name} lacks packages the code imports (distribution: file): {missing}"


def test_pip_path_installed_exactly_the_pinned_versions():
    wrong = {}
    for name, version in requirement_pins().items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or installed.split("+")[0] != version:
            wrong[name] = f"pinned {version}, installed {installed}"
    assert not wrong, f"reinstall with `make setup` (pip install -r {REQUIREMENTS.name}): {wrong}"


def test_pytorch_pin_is_a_cuda_build():
    rules_env = ROOT / "envs" / "pathologies.yaml"
    text = rules_env.read_text()
    assert not re.search(r"whl/cpu|\+cpu|cpuonly", text), f"{rules_env.name} selects a CPU-only PyTorch"
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("PyPI's PyTorch wheels are CUDA builds on Linux x86_64 only")
    import torch

    assert torch.__version__.split("+")[0] == env_pins(rules_env)[1]["torch"]
    assert torch.version.cuda, "the pinned PyTorch from PyPI is not a CUDA build"
