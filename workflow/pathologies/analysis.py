"""One declaration per table and figure: what a stage's rules, targets and docs table are derived from.

A stage lists its analyses as :class:`Analysis` records (``ANALYSES`` in ``<stage>/rules.py``). Its rule
file turns each into one rule (``workflow/rules/<stage>.smk``, the loop at its end), its Rules class
lists the enabled ones' outputs in ``targets()``, and :func:`outputs_table` renders the table of
outputs in ``docs/outputs.md``. ``docs/adding_an_analysis.md`` walks through adding one.

Paths are relative to the stage's folder of one experiment (``results/<stage>/{<wildcard>}``) and may
hold further wildcards; an input may instead name a method of the stage's Rules class (``"@method"``),
called with the rule's wildcard values in the order they appear in its outputs (as ``args`` is).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Analysis:
    """One table or figure of a stage.

    ``name``: the rule is ``<stage>_<name>``. ``module`` runs as ``python -m pathologies.<module>
    [<function>] --<input> path... [<args>] --<output> path``. ``inputs``: command-line option ->
    path or ``"@method"``; ``deps``: inputs the module reads through another file (not passed);
    ``outputs``: option -> path (``out`` for a single file). ``args``: a Rules method returning extra
    argv tokens. ``switch``: the experiment's config key that enables it (truthy); ``when``: a Rules
    predicate for conditions that are not one key. ``caption``: ``workflow/report/<caption>``;
    ``paper``: the figure or table of the paper it reproduces.
    """

    name: str
    module: str
    outputs: Mapping[str, str]
    caption: str | Mapping[str, str]  # one for all outputs, or output -> caption
    inputs: Mapping[str, str] = field(default_factory=dict)
    function: str | None = None
    deps: Mapping[str, str] = field(default_factory=dict)
    args: str | None = None
    switch: str | None = None
    when: str | None = None
    paper: str = ""
    log: str | None = None
    report: tuple[str, ...] | None = None  # outputs registered in the report (default: all)
    mem_mb: int = 4000  # first attempt; a retried job (profile `retries`) asks for attempt x this
    runtime: int = 10  # minutes, first attempt, scaled like mem_mb
    out_dir: bool = False  # the module takes the outputs' folder (--out-dir), not one option per output
    expand: bool = False  # outputs hold further wildcards: ``rules.expand(analysis, value)`` lists their values

    def caption_of(self, output: str) -> str:
        return self.caption if isinstance(self.caption, str) else self.caption[output]

    def reported(self) -> tuple[str, ...]:
        return tuple(self.outputs) if self.report is None else self.report

    def command(self) -> list[str]:
        """``python -m`` arguments before the options: the module and its subcommand."""
        return [f"pathologies.{self.module}", *([self.function] if self.function else [])]


@dataclass(frozen=True)
class Stage:
    """Where a stage's analyses live: ``folder`` holds the ``{wildcard}`` placeholder."""

    name: str
    folder: str
    logs: str
    wildcard: str
    report: str  # the report's category
    pattern: str  # the wildcard's values


def enabled(analysis: Analysis, rules: Any, value: str) -> bool:
    """Whether the analysis runs for one experiment (``rules.options(value)`` holds its ``switch``)."""
    if analysis.switch and not rules.options(value).get(analysis.switch):
        return False
    return not analysis.when or bool(getattr(rules, analysis.when)(value))


def outputs(stage: Stage, analyses: Iterable[Analysis], rules: Any, value: str) -> list[str]:
    """Output paths of the enabled analyses for one experiment (for ``targets()``); an analysis with
    further wildcards gets one set of outputs per value of ``rules.expand(analysis, value)``."""
    folder = stage.folder.replace(f"{{{stage.wildcard}}}", value)
    paths = []
    for analysis in analyses:
        if enabled(analysis, rules, value):
            for fields in (rules.expand(analysis, value) if analysis.expand else [{}]):
                fields = {stage.wildcard: value, **fields}
                paths += [f"{folder}/{path}".format(**fields) for path in analysis.outputs.values()]
    return paths


def rule_inputs(stage: Stage, analysis: Analysis, rules: Any) -> dict[str, Any]:
    """Named inputs of the analysis' rule: folder paths, or input functions for ``"@method"`` entries."""
    return {key: _source(stage, source, rules) for key, source in {**analysis.inputs, **analysis.deps}.items()}


def _source(stage: Stage, source: str, rules: Any) -> Any:
    if source.startswith("@"):
        method = getattr(rules, source[1:])
        return lambda wildcards: method(*wildcards)
    return f"{stage.folder}/{source}"


def rule_outputs(stage: Stage, analysis: Analysis, report: Callable[..., Any]) -> dict[str, Any]:
    """Named outputs of the analysis' rule; ``report`` (Snakemake's) registers those it reports."""
    def output(key: str, path: str) -> Any:
        if key not in analysis.reported():
            return path
        return report(path, caption=f"../report/{analysis.caption_of(key)}", category=stage.report,
                      subcategory=f"{{{stage.wildcard}}}")
    return {key: output(key, f"{stage.folder}/{path}") for key, path in analysis.outputs.items()}


def rule_resources(analysis: Analysis) -> dict[str, Callable[..., int]]:
    """``resources`` of the analysis's rule: memory and runtime grow with the attempt, so a retry on a
    cluster (profile ``retries``) gets more than the attempt that ran out."""
    return {"mem_mb": lambda wildcards, attempt: analysis.mem_mb * attempt,
            "runtime": lambda wildcards, attempt: analysis.runtime * attempt}


def rule_log(stage: Stage, analysis: Analysis) -> str:
    return f"{stage.logs}/{analysis.log or analysis.name + '.log'}"


def rule_options(stage: Stage, analysis: Analysis, rules: Any) -> Callable[..., list[str]]:
    """The params function giving the module's argv: inputs, ``args`` tokens, outputs."""
    def options(wildcards, input, output) -> list[str]:
        tokens = input_options({key: input[key] for key in analysis.inputs})
        if analysis.args:
            tokens += list(getattr(rules, analysis.args)(*wildcards))
        if analysis.out_dir:
            return [*tokens, "--out-dir", os.path.dirname(output[0])]
        return tokens + input_options({_out_option(key): output[key] for key in analysis.outputs})
    return options


def _out_option(key: str) -> str:
    return "out" if key == "out" else f"{key}_out"


def input_options(input: Mapping[str, Any]) -> list[str]:
    """Command-line options (argv tokens, ``--key path...``) from named inputs; empty ones left out."""
    tokens = []
    for key, value in input.items():
        paths = [value] if isinstance(value, str) else list(value)
        if paths:
            tokens += [f"--{key.replace('_', '-')}", *paths]
    return tokens


def add_parsers(parser: argparse.ArgumentParser, analyses: Sequence[Analysis], module: str,
                optional: Mapping[str, Sequence[str]] | None = None) -> None:
    """One subcommand per declared analysis of ``module``, with the options its rule passes (CLI dispatch);
    ``optional``: function -> inputs that may be left out (an input function returning [])."""
    commands = parser.add_subparsers(dest="function", required=True)
    added: set[str] = set()
    for analysis in analyses:  # declarations that share a function (one drawing, two outputs) share its options
        if analysis.module == module and analysis.function not in added:
            added.add(analysis.function)
            sub = commands.add_parser(analysis.function)
            left_out = (optional or {}).get(analysis.function, ())
            for key in analysis.inputs:
                sub.add_argument(f"--{key.replace('_', '-')}", required=key not in left_out)
            for key in analysis.outputs:
                sub.add_argument(f"--{_out_option(key).replace('_', '-')}", required=True)


def outputs_table(stage: Stage, analyses: Iterable[Analysis]) -> str:
    """Markdown table of a stage's outputs (docs/outputs.md is these tables, one per stage)."""
    rows = [f"### {stage.report} (`{stage.folder}/`)", "",
            "| output | rule | module | enabled by | paper |", "|---|---|---|---|---|"]
    for analysis in analyses:
        function = f" {analysis.function}" if analysis.function else ""
        switch = " and ".join(filter(None, [f"`{analysis.switch}`" if analysis.switch else "",
                                            f"{analysis.when}" if analysis.when else ""])) or "always"
        for path in analysis.outputs.values():
            rows.append(f"| `{path}` | `{stage.name}_{analysis.name}` | `{analysis.module}{function}` | {switch} "
                        f"| {analysis.paper} |")
    return "\n".join(rows) + "\n"
