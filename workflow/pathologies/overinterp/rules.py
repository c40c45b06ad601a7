"""Inputs, parameters and targets of the overinterpretation rules (workflow/rules/overinterpretation.smk).

Kept out of the rule file so that it holds rules only and this logic is testable without Snakemake.
Methods take wildcard values (experiment name, model, seed, ensemble).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ..analysis import Analysis, Stage, outputs
from ..config import RunSpec
from ..errors import UserError
from ..sis.jobs import sis_jobs
from .derived_sis import DerivedSisJob, derived_sis_jobs
from .grid import RESULTS, OverinterpExperiment, evaluation_path, experiments, protocol_args

STAGE = Stage("overinterp", f"{RESULTS}/{{experiment}}", "results/logs/overinterp/{experiment}", "experiment",
              "Overinterpretation", r"[A-Za-z0-9][A-Za-z0-9_]*")


def _figure(name: str, stem: str, function: str, paper: str, caption: str | None = None, **fields: Any) -> Analysis:
    """A figure of pathologies.overinterp.figures (``function``) at figures/<stem>.png."""
    return Analysis(name, "overinterp.figures", {"out": f"figures/{stem}.png"}, caption or f"overinterp_{stem}.rst",
                    function=function, paper=paper, log=f"figures/{stem}.log", **fields)


EXAMPLES = {"args": "examples_args", "deps": {"dataset": "@dataset"}}
# Every table and figure with a declared rule (workflow/rules/analyses.smk makes one rule each,
# overinterp_<name>). ``when`` names an OverinterpRules predicate, ``switch`` a key of the experiment's options.
TABLE_CAPTIONS = {key: f"overinterp_{key}.rst" for key in ("accuracy", "ensembles", "calibration", "sis_summary",
                                                          "leakage")}
ANALYSES = (
    Analysis("tables", "overinterp.tables", {"accuracy": "tables/accuracy.csv",
             "by_split": "tables/accuracy_by_split.csv", **{key: f"tables/{key}.csv" for key in TABLE_CAPTIONS
                                                            if key != "accuracy"}, "markdown": "tables/tables.md"},
             TABLE_CAPTIONS, {"experiment": "experiment.json", "sis_summary": "sis_sizes/summary.csv"},
             deps={"evaluations": "@evaluations", "calibrations": "@calibration_files"}, out_dir=True,
             report=tuple(TABLE_CAPTIONS), paper="Table 1 and the supplement's tables", runtime=30),
    Analysis("sis_sizes", "overinterp.sis_sizes", {f"{k}": f"sis_sizes/{k}.csv" for k in
             ("correctness", "increase", "by_class", "summary")}, "", {"experiment": "experiment.json"},
             deps={"sis": "@sis_files", "datasets": "@sis_datasets"}, paper="Figures 5, S3, S4, S16", report=(),
             runtime=30),
    _figure("fig_heatmaps", "heatmaps", "heatmaps", "Figures 3, S14",
            inputs={"sis": "@source_test_sis", "subsets": "@bs_subsets"}, args="threshold_args"),
    _figure("fig_examples", "sis_examples", "examples", "Figure S1", inputs={"sis": "@source_test_sis"}, **EXAMPLES),
    _figure("fig_curves", "confidence_curves", "curves", "Figures S8, S15", inputs={"sis": "@source_test_sis"},
            args="curves_args"),
    _figure("fig_sizes", "sis_size_correctness", "sizes", "Figures 5, S3, S4, S16",
            inputs={k: f"sis_sizes/{k}.csv" for k in ("correctness", "increase", "by_class")}, args="threshold_args"),
    _figure("fig_accuracy", "accuracy", "accuracy", "Table 1", "overinterp_accuracy_figure.rst",
            inputs={"accuracy": "tables/accuracy.csv"}, args="dataset_args"),
    _figure("fig_shifted", "shifted_accuracy", "shifted", "Figure S5",
            inputs={"by_split": "tables/accuracy_by_split.csv"},
            when="shifted"),
    Analysis("fig_leakage", "overinterp.leakage", {"out": "figures/leakage.png"}, "overinterp_leakage.rst",
             {"leakage": "tables/leakage.csv"}, when="bs_retrained", paper="Pixels or pattern (ROAD)",
             log="figures/leakage.log", mem_mb=2000),
    _figure("fig_ensemble", "ensemble_{ensemble}", "ensemble", "Figure S2", "overinterp_ensemble.rst",
            inputs={"ensemble_sis": "ensembles/{ensemble}/sis_test.h5", "member_sis": "@member_sis"},
            deps={"dataset": "@ensemble_dataset"}, args="ensemble_args", expand=True),
    _figure("fig_calibrated_examples", "calibrated_sis_examples", "examples", "Figure S6",
            inputs={"sis": "@calibrated_source_sis"}, when="calibrated", **EXAMPLES),
    Analysis("human_benchmark", "overinterp.human_benchmark", {"html": "human_benchmark/index.html",
             "key": "human_benchmark/key.csv"}, "overinterp_human_benchmark.rst", args="human_benchmark_args",
             deps={"sis": "@human_benchmark_sis", "dataset": "@dataset"}, switch="human_benchmark",
             paper="Supplement S5", report=("html",)),
    Analysis("human_scores", "overinterp.human_benchmark", {"scores": "tables/human_scores.csv",
             "table": "tables/human_accuracy.csv", "figure": "figures/human_accuracy.png"},
             "overinterp_human_accuracy.rst", {"score": "@human_answers", "key_out": "human_benchmark/key.csv"},
             when="human_scored", paper="Table S6, Figure S11", report=("table", "figure"), mem_mb=2000),
)


class OverinterpRules:
    """The overinterpretation experiments of a validated config, with the paths their rules need.

    ``trainings``: the training runs (model, seed) (:func:`pathologies.config.run_specs`); ``model_dir(model, seed)``
    and ``dataset_file(name)`` are the workflow's path helpers.
    """

    def __init__(self, config: Mapping[str, Any], trainings: Mapping[tuple[str, int], RunSpec],
                 model_dir: Callable[[str, int], str], dataset_file: Callable[[str], str]):
        self.trainings = trainings
        self.jobs = sis_jobs(config, trainings)
        self.experiments = experiments(config, self.jobs)
        self.entries = config.get("overinterpretation", {})
        self.model_dir = model_dir
        self.dataset_file = dataset_file
        self.derived = {name: derived_sis_jobs(e) for name, e in self.experiments.items()}  # by merged file

    def experiment(self, name: str) -> OverinterpExperiment:
        if name not in self.experiments:
            raise UserError(f"{RESULTS}/{name} is not an overinterpretation experiment of the config "
                            f"(have: {', '.join(self.experiments) or 'none'})")
        return self.experiments[name]

    def spec(self, name: str) -> str:
        """The expanded experiment as JSON (written to ``experiment.json`` for the table and figure modules)."""
        return json.dumps(self.experiment(name).as_dict(), sort_keys=True, indent=1)

    def options(self, name: str) -> Mapping[str, Any]:
        """The experiment's config entry, defaults filled in (the ``switch`` keys of its declared analyses)."""
        self.experiment(name)
        return self.entries[name]

    def source_test_sis(self, name: str) -> str:
        return self.experiment(name).source_sis("test")

    def threshold_args(self, name: str) -> list[str]:
        return ["--threshold", str(self.experiment(name).threshold)]

    def examples_args(self, name: str) -> list[str]:
        """Options of ``figures examples``: threshold, images per class, classes shown, seed."""
        figures = self.experiment(name).options["figures"]
        return [*self.threshold_args(name), "--per-class", str(figures["examples_per_class"]),
                "--max-classes", str(figures["classes"]), "--seed", str(figures["seed"])]

    def curves_args(self, name: str) -> list[str]:
        figures = self.experiment(name).options["figures"]
        return ["--images", str(figures["curves"]), "--seed", str(figures["seed"])]

    def dataset_args(self, name: str) -> list[str]:
        return ["--dataset", self.experiment(name).dataset]

    def ensemble_args(self, name: str, ensemble: str) -> list[str]:
        return self.threshold_args(name)

    def ensemble_dataset(self, name: str, ensemble: str) -> str:
        return self.dataset(name)

    def expand(self, analysis: Analysis, name: str) -> list[dict[str, str]]:
        """Values of an analysis' further wildcards: one figure per ensemble."""
        return [{"ensemble": ensemble} for ensemble in self.experiment(name).ensembles]

    def shifted(self, name: str) -> bool:
        return bool(self.experiment(name).shifted)

    def bs_retrained(self, name: str) -> bool:
        """Whether models are retrained on BS subsets (the leakage figure compares them with the mask alone)."""
        return any(e.train_on == "bs" for e in self.experiment(name).evaluations)

    def calibrated(self, name: str) -> bool:
        return bool(self.experiment(name).calibrated_sis)

    def human_scored(self, name: str) -> bool:
        options = self.experiment(name).options["human_benchmark"]
        return bool(options and options["answers"])

    def checkpoint(self, model: str, seed: int | str) -> str:
        """model.pt of a training run of the config (UserError for one that is not)."""
        if (model, int(seed)) not in self.trainings:
            raise UserError(f"models/{model}/seed{seed} is not a training run of the config")
        return f"{self.model_dir(model, seed)}/model.pt"

    # -- pixel subsets (one job per experiment and source dataset writes them all: each job would
    #    mostly load torch). ``origin``: the dataset the subsets are cut from, the experiment's by default.

    def subset_origins(self, name: str) -> list[str]:
        """The datasets an experiment cuts subsets from: its own, then shifted test sets with SIS."""
        return list(dict.fromkeys(s.source for s in self.experiment(name).subsets.values()))

    def _subsets(self, name: str, origin: str | None):
        experiment = self.experiment(name)
        origin = experiment.dataset if origin is None else origin
        return [s for s in experiment.subsets.values() if s.source == origin]

    def subset_files(self, name: str, origin: str | None = None) -> list[str]:
        return [subset.path for subset in self._subsets(name, origin)]

    def subset_sis(self, name: str, origin: str | None = None) -> dict[str, str]:
        """{split: SIS file} the subset datasets are cut from."""
        subset = self._subsets(name, origin)[0]
        experiment = self.experiment(name)
        return {split: experiment.sis.path(experiment.source_model, experiment.source_seed, subset.source, split)
                for split in subset.splits}

    def subset_args(self, name: str, origin: str | None = None) -> list[str]:
        """Command-line arguments (argv tokens) of :mod:`pathologies.overinterp.subsets` for every subset cut
        from ``origin``."""
        experiment = self.experiment(name)
        sis = self.subset_sis(name, origin)
        args = [token for split, path in sis.items() for token in ("--sis", f"{split}={path}")]
        args += ["--seed", str(experiment.options["random_seed"])]
        # a shifted test set's random subsets draw from their own streams, not from the source's test split's
        if origin not in (None, experiment.dataset):
            args += ["--stream", origin]
        if experiment.options["masking"] != "mean":
            args += ["--masking", experiment.options["masking"]]
        args += protocol_args(experiment.options)  # subset rounding and random draw
        subsets = self._subsets(name, origin)
        for s in subsets:
            args += ["--augmented-subset" if s.augmented else "--subset", s.kind, repr(s.fraction), str(s.draw),
                     s.name, s.path]
        if any(s.augmented for s in subsets):  # the one crop and flip of retrain.augment_mode 'reference'
            augmentation = experiment.options["augmentation"]
            args += ["--crop-padding", str(augmentation["crop_padding"]),
                     "--hflip" if augmentation["hflip"] else "--no-hflip"]
        return args

    # -- calibration, SIS of calibrated models and ensembles

    def calibrated_source_sis(self, name: str) -> str:
        """The SIS file of the calibrated source run (Figure S6); UserError when it is not extracted."""
        experiment = self.experiment(name)
        if not experiment.calibrated_sis:
            raise UserError(f"experiment {name!r} extracts no SIS of a calibrated model; set calibration.sis: true")
        return experiment.calibrated_sis_path(*experiment.calibrated_sis[0])

    def calibration_args(self, name: str) -> list[str]:
        """Options of :mod:`pathologies.overinterp.calibration`: the dataset, its test split, seed and bins."""
        experiment = self.experiment(name)
        calibration = experiment.options["calibration"]
        return ["--dataset", experiment.dataset, "--split", "test", "--seed", str(calibration["seed"]),
                "--bins", str(calibration["bins"])]

    def calibration_input(self, name: str, model: str, seed: int | str) -> str:
        experiment = self.experiment(name)
        if (model, int(seed)) not in experiment.calibrations:
            raise UserError(f"{model} seed {seed} is not calibrated in experiment {name!r}")
        return evaluation_path(name, model, int(seed))

    def calibrated_job(self, name: str, model: str, seed: int | str,
                       shards: int | str | None = None) -> DerivedSisJob:
        """The SIS job of the calibrated run (model, seed); UserError for one not configured (or asked
        for with another shard count)."""
        path = self.experiment(name).calibrated_sis_path(model, int(seed))
        return self._derived(name, path, shards, f"{model} seed {seed} has no calibrated SIS in experiment "
                             f"{name!r} (calibration.sis extracts the source run's)")

    def ensemble_members(self, name: str, ensemble: str) -> list[tuple[str, int]]:
        experiment = self.experiment(name)
        if ensemble not in experiment.ensembles:
            raise UserError(f"{ensemble!r} is not an ensemble of experiment {name!r} "
                            f"(have: {', '.join(experiment.ensembles) or 'none'})")
        return experiment.ensembles[ensemble]

    def ensemble_job(self, name: str, ensemble: str, shards: int | str | None = None) -> DerivedSisJob:
        """The SIS job of an ensemble (mean logits of its members)."""
        self.ensemble_members(name, ensemble)  # UserError naming the ensembles there are
        return self._derived(name, self.experiment(name).ensemble_sis[ensemble], shards, "")

    def _derived(self, name: str, path: str, shards: int | str | None, missing: str) -> DerivedSisJob:
        job = self.derived[name].get(path)
        if job is None:
            raise UserError(missing)
        if shards is not None and int(shards) != job.shards:
            raise UserError(f"{path} is cut into {job.shards} shards, not {shards}")
        return job

    def ensemble_checkpoints(self, name: str, ensemble: str) -> list[str]:
        return [self.checkpoint(m, s) for m, s in self.ensemble_members(name, ensemble)]

    def member_sis(self, name: str, ensemble: str) -> list[str]:
        """Test SIS files of the ensemble's members that have one (for the ensemble-vs-members figure)."""
        experiment = self.experiment(name)
        return [experiment.sis.path(m, s, experiment.dataset, "test") for m, s in self.ensemble_members(name, ensemble)
                if (m, s, experiment.dataset, "test") in experiment.sis]

    # -- evaluations and analyses

    def eval_datasets(self, name: str, model: str, seed: int | str) -> dict[str, str]:
        """{dataset name: file} a run is evaluated on in the experiment."""
        names = [e.eval_dataset for e in self.experiment(name).evaluations if (e.model, e.seed) == (model, int(seed))]
        if not names:
            raise UserError(f"{model} seed {seed} is not evaluated in overinterpretation experiment {name!r}")
        return {dataset: self.dataset_file(dataset) for dataset in dict.fromkeys(names)}

    def eval_args(self, name: str, model: str, seed: int | str) -> list[str]:
        """``--dataset name=file`` argv tokens of :mod:`pathologies.overinterp.evaluate`."""
        datasets = self.eval_datasets(name, model, seed)
        return [token for d, path in datasets.items() for token in ("--dataset", f"{d}={path}")]

    def evaluations(self, name: str) -> list[str]:
        return sorted({e.path for e in self.experiment(name).evaluations})

    def sis_files(self, name: str) -> list[str]:
        return [s.path for s in self.experiment(name).sis_files]

    def sis_datasets(self, name: str) -> list[str]:
        """The dataset files of the experiment's SIS files (the SIS-size tables name their classes)."""
        return list(dict.fromkeys(self.dataset_file(s.dataset) for s in self.experiment(name).sis_files))

    def calibration_files(self, name: str) -> list[str]:
        experiment = self.experiment(name)
        return [experiment.calibration_path(m, s) for m, s in experiment.calibrations]

    def bs_subsets(self, name: str) -> list[str]:
        """The BS subsets of the experiment's own test images (not those of shifted test sets)."""
        return [s.path for s in self._subsets(name, None) if s.kind == "bs" and not s.augmented]

    def dataset(self, name: str, origin: str | None = None) -> str:
        return self.dataset_file(self.experiment(name).dataset if origin is None else origin)

    def human_benchmark_args(self, name: str) -> list[str]:
        """Argv tokens of :mod:`pathologies.overinterp.human_benchmark` (export)."""
        options = self.experiment(name).options["human_benchmark"]
        if options is None:
            raise UserError(f"experiment {name!r} exports no human benchmark; set its `human_benchmark`")
        args = [token for path in self.human_benchmark_sis(name) for token in ("--sis", path)]
        if options["shares"]:
            args += ["--shares", *(repr(float(s)) for s in options["shares"])]
        return [*args, "--fractions", *(repr(float(f)) for f in options["fractions"]),
                "--images", str(options["images"]), "--seed", str(options["seed"])]

    def human_benchmark_sis(self, name: str) -> list[str]:
        """Test SIS files of the models the stimuli mix (the source alone by default)."""
        experiment = self.experiment(name)
        options = experiment.options["human_benchmark"]
        if options is None:
            raise UserError(f"experiment {name!r} exports no human benchmark; set its `human_benchmark`")
        models = options["models"] or [experiment.source_model]
        return [experiment.sis.path(m, experiment.source_seed, experiment.dataset, "test") for m in models]

    def human_answers(self, name: str) -> list[str]:
        """Participants' answer files to score (Table S6, Figure S11); UserError when none are configured."""
        options = self.experiment(name).options["human_benchmark"]
        if not options or not options["answers"]:
            raise UserError(f"experiment {name!r} lists no human_benchmark.answers to score")
        return list(options["answers"])

    def targets(self) -> list[str]:
        """Every table and figure of every experiment (for rule all)."""
        paths = []
        for name in self.experiments:
            paths += outputs(STAGE, ANALYSES, self, name)
        return paths
