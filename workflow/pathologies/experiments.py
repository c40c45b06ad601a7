"""The workflow config with every experiment expanded: what the Snakefile and the tools read.

Validation runs in one place, in this order: the JSON schema with defaults (:mod:`pathologies.config`),
the DDD variant grids become ordinary ``models`` entries (:mod:`pathologies.ddd.grid`), every model's
references are checked, then overinterpretation experiments add their pixel-subset datasets and the
models trained on them (:mod:`pathologies.overinterp.grid`, which reads the SIS jobs of
:mod:`pathologies.sis.jobs`). Every problem becomes one :class:`~pathologies.errors.UserError` line
that names the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from .config import check_models, load_schema, validate_schema
from .ddd.grid import add_experiment_models
from .errors import UserError
from .overinterp.grid import add_overinterp_models


def validate(config: Mapping[str, Any], schema: dict | None = None) -> dict:
    """Return a validated deep copy of ``config``: schema defaults filled in, experiments expanded.

    Raises UserError with one line naming the first offending key.
    """
    schema = load_schema() if schema is None else schema
    config = validate_schema(config, schema)
    add_experiment_models(config, schema)  # the DDD variant grid becomes ordinary `models` entries
    check_models(config, schema)
    add_overinterp_models(config, schema)  # pixel-subset datasets and the models trained on them
    return config


def load(path: str | Path) -> dict:
    """Read a YAML config file and validate it (used by tests and tools outside Snakemake)."""
    path = Path(path)
    try:
        with open(path) as handle:
            raw = yaml.safe_load(handle) or {}
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    try:
        return validate(raw)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
