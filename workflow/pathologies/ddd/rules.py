"""Inputs, parameters and targets of the DDD rules (workflow/rules/ddd.smk), per experiment.

Kept out of the rule file so that it holds rules only and this logic is testable without Snakemake.
Every method takes the experiment name (the ``experiment`` wildcard).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import UserError
from .grid import Experiment, experiments

RESULTS = "results/ddd"
# Tables of every experiment, after the description they are computed from; kl_accuracy.csv
# (gaussian datasets) and rsa.csv (rsa_images > 0) join them.
TABLES = ("experiment.json", "members.csv", "kappa.csv", "conditions.csv", "epoch_kappa.csv", "difficulty.csv",
          "fractions.csv", "histogram.csv", "difficulty_profiles.csv", "difficulty_histograms.csv",
          "class_accuracy.csv", "decision_changes.csv", "class_extremes.csv")
# Figures drawn from tables alone: figure -> {option of pathologies.ddd.figures: table}.
TABLE_FIGURES = {
    "fig02_histogram": {"histogram": "histogram.csv", "spec": "experiment.json"},
    "fig03_conditions": {"conditions": "conditions.csv"},
    "fig04_decisions": {"difficulty": "difficulty.csv"},
    "fig05_kappa_heatmaps": {"kappa": "kappa.csv"},
    "fig07_rsa": {"rsa": "rsa.csv", "members": "members.csv"},
    "fig09_kl_accuracy": {"kl": "kl_accuracy.csv"},
    "fig10_difficulty_models": {"profiles": "difficulty_profiles.csv", "histograms": "difficulty_histograms.csv"},
    "fig13_accuracy": {"members": "members.csv"},
    "fig11_superclasses": {"superclasses": "superclasses.csv"},
    "fig12_superclass_categories": {"superclasses": "superclasses.csv"},
    "a13_label_ambiguity": {"ambiguity": "label_ambiguity.csv"},
    "table1_class_extremes": {"extremes": "class_extremes.csv"},
    "fig06_human_questions": {"questions": "human_questions.csv"},
    "fig25_human_answers": {"questions": "human_questions.csv"},
    "fig27_human_observers": {"questions": "human_questions.csv"},
    "human_pairs": {"scores": "human_pairs.csv"},
    "fig18_pairs": {"human": "human"},
    "fig17_decision_changes": {"changes": "decision_changes.csv"},
    "fig20_class_accuracy": {"class_accuracy": "class_accuracy.csv"},
}


# Figures that need a trained base run (left out of an experiment of external models only).
TRAINED_ONLY = ("fig03_conditions", "fig07_rsa", "fig08_base_epochs", "fig09_kl_accuracy", "fig17_decision_changes")
# Figures that need decisions of single models (left out of an experiment of published per-image results).
SINGLE_MODELS_ONLY = ("fig04_decisions", "fig05_kappa_heatmaps")


class DddRules:
    """The DDD experiments of a validated config, with the paths their rules need.

    ``model_dir(model, seed)`` and ``dataset_file(name)`` are the workflow's path helpers.
    """

    def __init__(self, config: Mapping[str, Any], model_dir: Callable[[str, int], str],
                 dataset_file: Callable[[str], str]):
        self.experiments = experiments(config)
        self.kinds = {name: spec["kind"] for name, spec in config["datasets"].items()}
        self.model_dir = model_dir
        self.dataset_file = dataset_file
        self._needs_dataset: dict[tuple, bool] = {}  # (exclude_ids file, format) -> names or mask

    def experiment(self, name: str) -> Experiment:
        if name not in self.experiments:
            raise UserError(f"{RESULTS}/{name} is not a ddd experiment of the config "
                            f"(have: {', '.join(self.experiments) or 'none'})")
        return self.experiments[name]

    def spec(self, name: str) -> str:
        """The experiment as JSON for the analysis modules (``--spec``), with its prepared dataset's path
        (``dataset_file``: it converts the file names of ``exclude_ids`` to image ids)."""
        return json.dumps({**self.experiment(name).as_dict(self.model_dir), "dataset_file": self.dataset(name)},
                          sort_keys=True)

    def predictions(self, name: str) -> list[str]:
        return [f"{self.model_dir(model, seed)}/predictions.h5" for model, seed in self.experiment(name).runs()]

    def condition_order(self, name: str) -> list[str]:
        """[conditions.csv of the experiment named by ``condition_order``] (Figures 15 / 16), else []."""
        reference = self.experiment(name).options["condition_order"]
        return [f"{RESULTS}/{reference}/conditions.csv"] if reference else []

    def trained(self, name: str) -> bool:
        """Whether the experiment trains models (False: only external ``predictions_csv`` models)."""
        return bool(self.experiment(name).members)

    def exclude(self, name: str) -> list[str]:
        """[the exclude_ids file] when the experiment sets one, else []; when it lists file names or is a mask,
        the prepared dataset too (it converts them to image ids)."""
        options = self.experiment(name).options
        path, key = options["exclude_ids"], (options["exclude_ids"], options["exclude_format"])
        if not path:
            return []
        if key not in self._needs_dataset:
            from .exclusion import needs_dataset  # reads the file with numpy/pandas: only when it is set

            self._needs_dataset[key] = needs_dataset(*key)
        return [path, self.dataset(name)] if self._needs_dataset[key] else [path]

    def base_predictions(self, name: str) -> str:
        base = self.experiment(name).members[0]
        return f"{self.model_dir(base.model, base.seed)}/predictions.h5"

    def checkpoints(self, name: str) -> list[str]:
        """model.pt of every run whose members enter the RSA (the base run's once, for all its epochs)."""
        return list(dict.fromkeys(f"{self.model_dir(m.model, m.seed)}/model.pt"
                                  for m in self.experiment(name).rsa_members()))

    def external(self, name: str) -> list[str]:
        """predictions_csv files; the per_image_results file and the prepared dataset (its ids and labels)."""
        options = self.experiment(name).options
        per_image = [options["per_image_results"]["file"], self.dataset(name)] if options["per_image_results"] else []
        return [*options["predictions_csv"], *per_image]

    def dataset(self, name: str) -> str:
        return self.dataset_file(self.experiment(name).dataset)

    def rsa_table(self, name: str) -> list[str]:
        """[rsa.csv] when the experiment computes RSA, else []."""
        return [f"{RESULTS}/{name}/rsa.csv"] if self._rsa(name) else []

    def _rsa(self, name: str) -> bool:
        return bool(self.experiment(name).options["rsa_images"]) and self.trained(name)

    def _kl(self, name: str) -> bool:
        return self.kinds[self.experiment(name).dataset] == "gaussian" and self.trained(name)

    def superclass_map(self, name: str) -> list[str]:
        """[the superclass CSV] when the experiment names one (not for the built-in ``cifar100``), else []."""
        source = self.experiment(name).options["superclasses"]
        return [source] if source and source.endswith(".csv") else []

    def ambiguity(self, name: str) -> list[str]:
        path = self.experiment(name).options["label_ambiguity"]
        return [path] if path else []

    def human_answers(self, name: str, experiment: str) -> list[str]:
        """The observers' answer files of human experiment ``pairs`` or ``questions`` (config order)."""
        human = self.experiment(name).options["human"] or {}
        return list(human.get(f"{'pair' if experiment == 'pairs' else 'question'}_answers", []))

    def _human_scored(self, name: str) -> bool:
        return bool(self.human_answers(name, "pairs") or self.human_answers(name, "questions"))

    def tables(self, name: str) -> list[str]:
        options = self.experiment(name).options
        extra = ["kl_accuracy.csv"] if self._kl(name) else []
        extra += ["rsa.csv"] if self._rsa(name) else []
        extra += ["superclasses.csv", "superclass_kappa.csv"] if options["superclasses"] else []
        extra += ["label_ambiguity.csv"] if options["label_ambiguity"] else []
        extra += ["human"] if options["human"] else []  # the folder of the static pages
        extra += (["human_pairs.csv", "human_questions.csv", "human_agreement.csv", "human_model_accuracy.csv"]
                  if self._human_scored(name) else [])
        return [f"{RESULTS}/{name}/{table}" for table in (*TABLES, *extra)]

    def figures(self, name: str) -> list[str]:
        skip = set() if self._kl(name) else {"fig09_kl_accuracy"}
        skip |= set() if self._rsa(name) else {"fig07_rsa"}
        options = self.experiment(name).options
        skip |= set() if options["superclasses"] else {"fig11_superclasses", "fig12_superclass_categories"}
        skip |= set() if options["label_ambiguity"] else {"a13_label_ambiguity"}
        skip |= set() if options["human"] else {"fig18_pairs"}
        skip |= set() if self.human_answers(name, "pairs") else {"human_pairs"}
        skip |= set() if self.human_answers(name, "questions") else {
            "fig06_human_questions", "fig25_human_answers", "fig27_human_observers"}
        if not self.trained(name):  # external models only: no base, no epochs
            skip |= set(TRAINED_ONLY)
        if options["per_image_results"]:
            skip |= set(SINGLE_MODELS_ONLY)
        names = sorted({*TABLE_FIGURES, "fig08_base_epochs"} - skip)
        return [f"{RESULTS}/{name}/figures/{figure}.png" for figure in names]

    def targets(self) -> list[str]:
        """Every table, summary and figure of every experiment (for rule all)."""
        return [path for name in self.experiments
                for path in (*self.tables(name), f"{RESULTS}/{name}/summary.txt", *self.figures(name))]


def input_options(input: Mapping[str, Any]) -> list[str]:
    """Command-line options (argv tokens, ``--key path...``) from a rule's named inputs; empty ones left out."""
    tokens = []
    for key, value in input.items():
        paths = [value] if isinstance(value, str) else list(value)
        if paths:
            tokens += [f"--{key.replace('_', '-')}", *paths]
    return tokens
