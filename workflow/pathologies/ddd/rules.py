"""Inputs, parameters and targets of the DDD rules (workflow/rules/ddd.smk), per experiment.

Kept out of the rule file so that it holds rules only and this logic is testable without Snakemake.
Every method takes the experiment name (the ``experiment`` wildcard). ``ANALYSES`` declares the tables and
figures whose rules, targets and docs rows are derived (:mod:`pathologies.analysis`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ..analysis import Analysis, Stage, outputs
from ..errors import UserError
from .grid import Experiment, experiments

RESULTS = "results/ddd"
STAGE = Stage("ddd", f"{RESULTS}/{{experiment}}", "results/logs/ddd/{experiment}", "experiment",
              "Dichotomous data difficulty", r"[A-Za-z0-9][A-Za-z0-9_]*")
# Tables of every experiment from the hand-written rules of ddd.smk, after the description they are
# computed from; rsa.csv (rsa_images > 0) and the human-experiment tables join them.
TABLES = ("experiment.json", "members.csv", "kappa.csv", "conditions.csv", "epoch_kappa.csv", "difficulty.csv",
          "difficulty_excluded.csv", "fractions.csv", "histogram.csv", "difficulty_profiles.csv",
          "difficulty_histograms.csv", "class_accuracy.csv", "decision_changes.csv")


def _figure(name: str, paper: str, when: str | None = None, switch: str | None = None, **inputs: str) -> Analysis:
    """A figure of pathologies.ddd.figures drawn from tables of the experiment's folder."""
    return Analysis(name, "ddd.figures", {"out": f"figures/{name}.png"}, f"ddd_{name}.rst", inputs, function=name,
                    when=when, switch=switch, paper=paper)


# Every table and figure with a declared rule (workflow/rules/ddd.smk makes one rule each, ddd_<name>).
# ``when`` names a DddRules predicate, ``switch`` a key of the experiment's config entry.
ANALYSES = (
    Analysis("kl", "ddd.kl", {"out": "kl_accuracy.csv"}, "", {"class_accuracy": "class_accuracy.csv",
             "dataset": "@dataset"}, when="kl", paper="A.7", report=(), mem_mb=2000),
    Analysis("superclasses", "ddd.superclasses", {"out": "superclasses.csv", "kappa": "superclass_kappa.csv"}, "",
             {"experiment": "experiment.json", "difficulty": "difficulty.csv"},
             deps={"superclass_map": "@superclass_map"},
             switch="superclasses", paper="A.12", report=()),
    Analysis("label_ambiguity", "ddd.ambiguity", {"out": "label_ambiguity.csv"}, "",
             {"experiment": "experiment.json", "difficulty": "difficulty.csv"}, deps={"ambiguity": "@ambiguity"},
             switch="label_ambiguity", paper="A.13", report=(), mem_mb=2000),
    Analysis("class_extremes", "ddd.class_extremes", {"out": "class_extremes.csv"},
             "ddd_table1_class_extremes_csv.rst", {"class_accuracy": "class_accuracy.csv"}, paper="Table 1",
             mem_mb=2000),
    _figure("fig02_histogram", "Figure 2", histogram="histogram.csv", experiment="experiment.json"),
    # Figure 3 may follow another experiment's order of conditions (Figures 15 / 16)
    _figure("fig03_conditions", "Figures 3, 15, 16", "trained", conditions="conditions.csv", order="@condition_order"),
    _figure("fig04_decisions", "Figure 4", "single_models", difficulty="difficulty.csv"),
    _figure("fig05_kappa_heatmaps", "Figure 5", "single_models", kappa="kappa.csv"),
    _figure("fig07_rsa", "Figure 7", "rsa", rsa="rsa.csv", members="members.csv"),
    Analysis("fig08_base_epochs", "ddd.figures", {"out": "figures/fig08_base_epochs.png"}, "ddd_fig08_base_epochs.rst",
             {"predictions": "@base_predictions", "epoch_kappa": "epoch_kappa.csv", "experiment": "experiment.json"},
             function="fig08_base_epochs", deps={"exclude": "@exclude"}, when="trained", paper="Figure 8"),
    _figure("fig09_kl_accuracy", "Figure 9", "kl", kl="kl_accuracy.csv"),
    _figure("fig10_difficulty_models", "Figure 10", profiles="difficulty_profiles.csv",
            histograms="difficulty_histograms.csv"),
    _figure("fig13_accuracy", "Figures 13, 14", members="members.csv"),
    _figure("fig11_superclasses", "Figure 11", switch="superclasses", superclasses="superclasses.csv"),
    _figure("fig12_superclass_categories", "Figure 12", switch="superclasses", superclasses="superclasses.csv"),
    _figure("a13_label_ambiguity", "A.13", switch="label_ambiguity", ambiguity="label_ambiguity.csv"),
    _figure("table1_class_extremes", "Table 1", extremes="class_extremes.csv"),
    # human experiment 2: label errors removed (Figures 6, 26, 28) or kept (25, 27), from one set of answers
    _figure("fig06_human_questions", "Figure 6", "question_answers", questions="human_questions.csv"),
    _figure("fig25_human_answers", "Figure 25", "question_answers", questions="human_questions.csv"),
    _figure("fig26_human_answers", "Figure 26", "question_answers", questions="human_questions.csv"),
    _figure("fig27_human_observers", "Figure 27", "question_answers", questions="human_questions.csv"),
    _figure("fig28_human_observers", "Figure 28", "question_answers", questions="human_questions.csv"),
    _figure("human_pairs", "A.10", "pair_answers", scores="human_pairs.csv"),
    _figure("fig18_pairs", "Figures 18, 19", switch="human", human="human"),
    _figure("fig17_decision_changes", "Figure 17", "trained", changes="decision_changes.csv"),
    _figure("fig20_class_accuracy", "Figure 20", class_accuracy="class_accuracy.csv"),
)


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
        """The experiment as JSON (``--spec`` of pathologies.ddd.experiment, which writes experiment.json),
        with its prepared dataset's path (``dataset_file``: it converts the file names of ``exclude_ids`` to ids)."""
        return json.dumps({**self.experiment(name).as_dict(self.model_dir), "dataset_file": self.dataset(name)},
                          sort_keys=True)

    def predictions(self, name: str) -> list[str]:
        return [f"{self.model_dir(model, seed)}/predictions.h5" for model, seed in self.experiment(name).runs()]

    def condition_order(self, name: str) -> list[str]:
        """[conditions.csv of the experiment named by ``condition_order``] (Figures 15 / 16), else []."""
        reference = self.experiment(name).options["condition_order"]
        return [f"{RESULTS}/{reference}/conditions.csv"] if reference else []

    def options(self, name: str) -> Mapping[str, Any]:
        """The experiment's analysis options (the ``switch`` keys of its declared analyses)."""
        return self.experiment(name).options

    def single_models(self, name: str) -> bool:
        """Whether the experiment has decisions of single models (not only published per-image results)."""
        return not self.experiment(name).options["per_image_results"]

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
        return [f"{RESULTS}/{name}/rsa.csv"] if self.rsa(name) else []

    def rsa(self, name: str) -> bool:
        return bool(self.experiment(name).options["rsa_images"]) and self.trained(name)

    def kl(self, name: str) -> bool:
        """Gaussian datasets with trained models: KL divergence between neighbouring classes (A.7)."""
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

    def pair_answers(self, name: str) -> bool:
        return bool(self.human_answers(name, "pairs"))

    def question_answers(self, name: str) -> bool:
        return bool(self.human_answers(name, "questions"))

    def tables(self, name: str) -> list[str]:
        """Tables of the hand-written rules (the declared analyses' outputs: :meth:`analyses`)."""
        options = self.experiment(name).options
        extra = ["rsa.csv"] if self.rsa(name) else []
        extra += ["human"] if options["human"] else []  # the folder of the static pages
        scored = self.pair_answers(name) or self.question_answers(name)
        extra += (["human_pairs.csv", "human_questions.csv", "human_agreement.csv", "human_model_accuracy.csv"]
                  if scored else [])
        return [f"{RESULTS}/{name}/{table}" for table in (*TABLES, *extra)]

    def analyses(self, name: str) -> list[str]:
        """Outputs of the declared analyses (``ANALYSES``) the experiment enables."""
        return outputs(STAGE, ANALYSES, self, name)

    def targets(self) -> list[str]:
        """Every table, summary and figure of every experiment (for rule all)."""
        return [path for name in self.experiments
                for path in (*self.tables(name), f"{RESULTS}/{name}/summary.txt", *self.analyses(name))]

