"""Overinterpretation experiments (Carter et al. 2021): the ``overinterpretation`` config -> jobs.

An experiment names a *source* model run whose backward-selection (BS) orders, extracted by the
``sis`` stage on the test split (and the train split when retraining), define its pixel subsets::

    overinterpretation:
      digits:
        source: {model: digits_cnn, seed: 0}
        fractions: [0.05, 0.1]          # subset sizes the pretrained models are evaluated on
        random_draws: 3                 # random subsets per fraction
        retrain: {fraction: 0.05, replicates: 3, augment: [false, true], archs: [small_cnn, mlp]}
        shifted: [cifar10c]             # more test sets every model is evaluated on (full images, and
                                        # pixel subsets where the source has an SIS run on them)
        ensembles: {cnn2: {members: [{model: digits_cnn}]}}

Expansion adds, after validation:

- ``datasets``: ``<exp>.bs<pct>`` and ``<exp>.random<pct>.d<draw>`` of kind ``pixel_subset`` with
  their ``path`` (``results/overinterp/<exp>/subsets/bs<pct>.h5``, ``random<pct>_d<draw>.h5``),
  written by :mod:`pathologies.overinterp.subsets`; ``<pct>`` is the percentage with ``p`` for a decimal
  point (0.05 -> ``5``, 0.125 -> ``12p5``). For a ``shifted`` test set on which ``sis.runs`` extracts
  the source's SIS, likewise ``<exp>.<shifted>.bs<pct>`` and ``<exp>.<shifted>.random<pct>.d<draw>``
  (``subsets/<shifted>/...``) of the splits extracted: the pretrained and retrained models are
  evaluated on them as on the source's test subsets (Table S4's BS rows on CIFAR-10.1).
- ``models``: ``<exp>.<arch>.bs<pct>[.aug]`` (seeds 0..replicates-1, all on the BS subsets) and
  ``<exp>.<arch>.random<pct>.d<r>[.aug]`` (seed r on random draw r), ordinary training runs of
  rule ``train``. Without augmentation their recipe has ``crop_padding: 0, hflip: false``.
  With ``retrain.mask_control`` (default) and BS retraining, also ``<exp>.mask<pct>`` datasets (the BS
  keep-mask alone, no pixel values) and ``<exp>.<arch>.mask<pct>[.aug]`` models trained on them: the
  leakage floor reported beside every BS row.
- ``retrain.augment_mode``: what ``.aug`` means. ``aligned`` (default): the ``.aug`` models crop and flip
  image and mask together every epoch (recipe ``crop_padding``/``hflip`` of ``retrain.augmentation``).
  ``reference`` (Carter et al.'s code): each ``.aug`` replicate r trains, without per-epoch augmentation,
  on its own dataset ``<exp>.bs<pct>.d<r>.aug`` / ``<exp>.random<pct>.d<r>.aug`` (``subsets/bs<pct>_d<r>_aug.h5``,
  ...) whose train images were cropped and flipped once (draw r) and masked with the un-augmented image's
  mask; BS ``.aug`` models are then ``<exp>.<arch>.bs<pct>.d<r>.aug`` (seed r). Its test split is the
  un-augmented subset's, on which the ``.aug`` models are evaluated. The kept positions are the
  un-augmented ones, so the mask-only control is trained once, without augmentation, and stands beside
  both the BS and the BS (+) rows.

:func:`expand` lists every evaluation (model x seed x dataset), SIS file and table row of an
experiment for :mod:`pathologies.overinterp.rules`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import check_recipe, run_specs
from ..errors import UserError
from ..sis.jobs import SisJob, sis_jobs

RESULTS = "results/overinterp"
SUBSET_KIND = "pixel_subset"


def protocol_args(options: Mapping[str, Any]) -> list[str]:
    """The ``--rounding``/``--random-draw`` options (argv tokens) of :mod:`pathologies.overinterp.subsets` an
    experiment's ``options`` ask for (``subset_rounding``, ``random_draw``); none for the defaults. Kept
    here, not beside the subset code, so that building the DAG does not import torch."""
    args = []
    if options.get("subset_rounding", "half_up") != "half_up":
        args += ["--rounding", options["subset_rounding"]]
    if options.get("random_draw", "project") != "project":
        args += ["--random-draw", options["random_draw"]]
    return args


def percent_name(fraction: float) -> str:
    """``0.05`` -> ``"5"``, ``0.125`` -> ``"12p5"``: a fraction as a name-safe percentage."""
    return f"{fraction * 100:g}".replace(".", "p")


class ExperimentSis(Mapping):
    """The SIS jobs an experiment reads, keyed by (model, seed, dataset, split).

    Only runs named in ``source.sis_runs`` count (all when null). A key that several of those runs
    extract is ambiguous: reading it raises UserError asking to name the run, so runs the experiment
    does not need (e.g. a random tie-breaking repeat of the source) never stop it.
    """

    def __init__(self, name: str, spec: Mapping, jobs: Mapping[tuple, SisJob]):
        allowed = spec["source"].get("sis_runs")
        self.where = f"overinterpretation.{name}.source.sis_runs"
        if allowed is not None:
            known = {job.group for job in jobs.values()} | {job.run for job in jobs.values()}
            for i, run in enumerate(allowed):
                if run not in known:
                    raise UserError(f"config key {self.where}.{i}: {run!r} is not a run under `sis.runs` "
                                    f"with any model (have: {', '.join(sorted(known)) or 'none'})")
        self.found: dict[tuple, list[SisJob]] = {}
        for job in jobs.values():
            if allowed is None or job.run in allowed or job.group in allowed:
                self.found.setdefault((job.model, job.seed, job.dataset, job.split), []).append(job)

    def __getitem__(self, key: tuple) -> SisJob:
        found = self.found[key]
        if len(found) > 1:
            model, seed, dataset, split = key
            raise UserError(f"config key {self.where}: SIS runs {', '.join(j.run for j in found)} all extract "
                            f"{model} seed {seed} on {dataset}/{split}; list the one this experiment reads")
        return found[0]

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.found)

    def __len__(self) -> int:
        return len(self.found)

    def path(self, model: str, seed: int, dataset: str, split: str) -> str:
        """The merged SIS file of (model, seed) on dataset/split (written by the sis stage)."""
        return self[(model, seed, dataset, split)].path


def evaluation_path(experiment: str, model: str, seed: int) -> str:
    """The evaluation file of one run in an experiment: every dataset it is evaluated on."""
    return f"{RESULTS}/{experiment}/eval/{model}/seed{seed}.h5"


@dataclass(frozen=True)
class Subset:
    """One pixel-subset dataset of an experiment (``draw`` -1 for BS subsets, but the augmentation draw of an
    ``augmented`` one), cut from ``source``."""

    name: str
    kind: str
    fraction: float
    draw: int
    path: str
    splits: tuple[str, ...]
    source: str
    augmented: bool = False  # train images cropped and flipped once (augmentation draw ``draw``)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation file and what it means for the tables.

    ``path``: the run's evaluation file, holding group ``eval_dataset``.
    ``role``: pretrained (trained on full images) or retrained (on pixel subsets). ``condition``:
    the row label of its training (a model name, or ``<arch>.<kind><pct>[.aug]``). ``eval_on``:
    full, bs or random; ``test_set``: the dataset whose images are evaluated (that of a subset
    for bs and random).
    """

    model: str
    seed: int
    role: str
    condition: str
    arch: str
    train_on: str
    train_fraction: float | None
    augment: bool
    eval_dataset: str
    eval_on: str
    eval_fraction: float | None
    draw: int
    path: str
    test_set: str


@dataclass(frozen=True)
class SisFile:
    """One SIS file entering the SIS-size analyses; ``variant``: original, calibrated or ensemble."""

    path: str
    model: str
    seed: int
    dataset: str
    split: str
    variant: str


@dataclass
class OverinterpExperiment:
    """An expanded ``overinterpretation`` experiment."""

    name: str
    dataset: str
    source_model: str
    source_seed: int
    source_arch: str
    threshold: float
    shifted: tuple[str, ...]
    subsets: dict[str, Subset]
    evaluations: list[Evaluation]
    sis_files: list[SisFile]
    calibrations: list[tuple[str, int]]
    calibrated_sis: list[tuple[str, int]]
    ensembles: dict[str, list[tuple[str, int]]]
    ensemble_sis: dict[str, str]
    options: dict[str, Any] = field(default_factory=dict)
    sis: ExperimentSis | None = None

    @property
    def folder(self) -> str:
        return f"{RESULTS}/{self.name}"

    def source_sis(self, split: str) -> str:
        return self.sis.path(self.source_model, self.source_seed, self.dataset, split)

    def as_dict(self) -> dict:
        """JSON-ready description for the table and figure modules."""
        return {"name": self.name, "dataset": self.dataset, "source_model": self.source_model,
                "source_seed": self.source_seed, "source_arch": self.source_arch, "threshold": self.threshold,
                "subsets": {name: asdict(s) for name, s in self.subsets.items()},
                "evaluations": [asdict(e) for e in self.evaluations],
                "sis_files": [asdict(s) for s in self.sis_files],
                "calibrations": [{"model": m, "seed": s, "path": self.calibration_path(m, s)}
                                 for m, s in self.calibrations],
                "ensembles": {name: {"members": [list(m) for m in members], "sis": self.ensemble_sis.get(name)}
                              for name, members in self.ensembles.items()},
                "options": self.options}

    def calibration_path(self, model: str, seed: int) -> str:
        return f"{self.folder}/calibration/{model}/seed{seed}.json"

    def calibrated_sis_path(self, model: str, seed: int) -> str:
        return f"{self.folder}/calibrated_sis/{model}/seed{seed}.h5"


def add_overinterp_models(config: dict, schema: dict) -> None:
    """Check every ``overinterpretation`` experiment and add its datasets and models (in place).

    Call after the ``models`` references are checked. Raises UserError naming the key; a declared
    entry with a generated name is kept when equal to the generated one, otherwise it is a clash.
    """
    experiments = config.get("overinterpretation", {})
    if not experiments:
        return
    jobs = sis_jobs(config, run_specs(config))
    for name, spec in experiments.items():
        _check(name, spec, config, ExperimentSis(name, spec, jobs))
    for name, spec in experiments.items():
        datasets, models = _generated(name, spec, config, ExperimentSis(name, spec, jobs))
        for section, entries in (("datasets", datasets), ("models", models)):
            for entry_name, entry in entries.items():
                existing = config[section].get(entry_name)
                if existing is not None and existing != entry:
                    raise UserError(f"config key {section}.{entry_name}: the name is also generated by "
                                    f"overinterpretation experiment {name!r}; rename one of them")
                config[section][entry_name] = entry
        for entry in models.values():
            recipe = {**config["recipes"][entry["recipe"]], **entry["overrides"]}
            check_recipe(recipe, f"overinterpretation.{name}.retrain", schema)


def _check(name: str, spec: Mapping, config: Mapping, jobs: Mapping) -> None:
    key = f"overinterpretation.{name}"
    if "." in name:
        raise UserError(f"config key {key}: experiment names may not contain '.' (they prefix model names)")
    models = config["models"]
    dataset = _check_source(key, spec["source"], config)
    _check_models(key, spec, models, dataset)
    _check_shifted(key, spec, config["datasets"])
    if _augmented_once(spec) and config["datasets"][dataset]["kind"] == "imagenet":
        raise UserError(f"config key {key}.retrain.augment_mode: 'reference' augments stored train images once, "
                        f"but {dataset!r} is an ImageNet index (no stored images); use augment_mode 'aligned'")
    _check_ensemble_members(key, spec, models, dataset)
    _check_fraction_names(key, spec)
    _check_source_sis(key, spec, dataset, jobs)
    _check_human_benchmark(key, spec, dataset, jobs)
    _check_ensemble_sis(key, spec, models, dataset, jobs)


def _check_source(key: str, source: Mapping, config: Mapping) -> str:
    """The source model and seed exist and train on full images; returns their dataset."""
    models = config["models"]
    if source["model"] not in models:
        raise UserError(f"config key {key}.source.model: {source['model']!r} is not a model; define it under "
                        f"`models` (have: {', '.join(sorted(models))})")
    if source["seed"] not in models[source["model"]]["seeds"]:
        raise UserError(f"config key {key}.source.seed: model {source['model']!r} has no seed {source['seed']} "
                        f"(its seeds: {models[source['model']]['seeds']})")
    dataset = models[source["model"]]["dataset"]
    if config["datasets"][dataset]["kind"] == SUBSET_KIND:
        raise UserError(f"config key {key}.source.model: its dataset {dataset!r} is already a pixel subset; "
                        "use a model trained on full images as the source")
    return dataset


def _check_models(key: str, spec: Mapping, models: Mapping, dataset: str) -> None:
    for i, model in enumerate(_listed_models(spec)):
        if model not in models:
            raise UserError(f"config key {key}.models.{i}: {model!r} is not a model; define it under `models`")
        if models[model]["dataset"] != dataset:
            raise UserError(f"config key {key}.models.{i}: {model!r} is trained on {models[model]['dataset']!r}, "
                            f"not on the source's dataset {dataset!r}")


def _check_shifted(key: str, spec: Mapping, datasets: Mapping) -> None:
    for i, shifted in enumerate(spec["shifted"]):
        if shifted not in datasets or datasets[shifted]["kind"] == SUBSET_KIND:
            raise UserError(f"config key {key}.shifted.{i}: {shifted!r} is not a dataset; define it under `datasets`")


def _check_ensemble_members(key: str, spec: Mapping, models: Mapping, dataset: str) -> None:
    for ensemble, entry in spec["ensembles"].items():
        for i, member in enumerate(entry["members"]):
            where = f"{key}.ensembles.{ensemble}.members.{i}"
            if member["model"] not in models:
                raise UserError(f"config key {where}.model: {member['model']!r} is not a model; define it "
                                "under `models`")
            if models[member["model"]]["dataset"] != dataset:
                raise UserError(f"config key {where}.model: {member['model']!r} is not trained on {dataset!r}")
            missing = sorted(set(member["seeds"] or []) - set(models[member["model"]]["seeds"]))
            if missing:
                raise UserError(f"config key {where}.seeds: model {member['model']!r} has no seed(s) {missing}")
        if len(_ensemble_members(entry, models)) < 2:
            raise UserError(f"config key {key}.ensembles.{ensemble}.members: an ensemble needs at least 2 "
                            "(model, seed) members")


def _check_fraction_names(key: str, spec: Mapping) -> None:
    names = [percent_name(f) for f in _fractions(spec)]
    if len(set(names)) != len(names):
        raise UserError(f"config key {key}.fractions: {_fractions(spec)} name two subsets alike; use fractions "
                        "that differ in the first 6 significant digits")


def _check_source_sis(key: str, spec: Mapping, dataset: str, jobs: Mapping) -> None:
    """The source's SIS runs the experiment reads are declared and hold its threshold."""
    source = spec["source"]
    splits = ["test"] + (["train"] if spec["retrain"] is not None else [])
    for split in splits:
        job = jobs.get((source["model"], source["seed"], dataset, split))
        if job is None:
            why = "for the test subsets" if split == "test" else "to train on its subsets (retrain)"
            raise UserError(f"config key {key}.source: no SIS of {source['model']} seed {source['seed']} on "
                            f"{dataset}/{split} is declared, but it is needed {why}; add a `sis.runs` entry "
                            f"with models [{source['model']}] and split {split}")
    test_job = jobs[(source["model"], source["seed"], dataset, "test")]
    if spec["threshold"] not in test_job.settings["thresholds"]:
        raise UserError(f"config key {key}.threshold: {spec['threshold']} is not among the thresholds "
                        f"{test_job.settings['thresholds']} of SIS run {test_job.run!r}; add it there or change it")


def _check_human_benchmark(key: str, spec: Mapping, dataset: str, jobs: Mapping) -> None:
    human, source = spec["human_benchmark"], spec["source"]
    if human is None:
        return
    for i, model in enumerate(human["models"]):
        if (model, source["seed"], dataset, "test") not in jobs:
            raise UserError(f"config key {key}.human_benchmark.models.{i}: {model!r} seed {source['seed']} has "
                            f"no SIS on {dataset}/test; add it to a `sis.runs` entry the experiment reads")
    if human["shares"] and len(human["shares"]) != len(human["models"] or [source["model"]]):
        raise UserError(f"config key {key}.human_benchmark.shares: {len(human['shares'])} shares for "
                        f"{len(human['models']) or 1} model(s); give one per model")


def _check_ensemble_sis(key: str, spec: Mapping, models: Mapping, dataset: str, jobs: Mapping) -> None:
    for ensemble, entry in spec["ensembles"].items():
        first = _ensemble_members(entry, models)[0]
        if (first[0], first[1], dataset, "test") not in jobs:
            raise UserError(f"config key {key}.ensembles.{ensemble}: its SIS uses the settings of the first "
                            f"member's test SIS, but {first[0]} seed {first[1]} has none on {dataset}/test; "
                            "add a `sis.runs` entry for it")


def _listed_models(spec: Mapping) -> list[str]:
    return list(spec["models"]) or [spec["source"]["model"]]


def _fractions(spec: Mapping) -> list[float]:
    fractions = list(spec["fractions"])
    if spec["retrain"] is not None and spec["retrain"]["fraction"] not in fractions:
        fractions.append(spec["retrain"]["fraction"])
    return fractions


def _ensemble_members(entry: Mapping, models: Mapping) -> list[tuple[str, int]]:
    members = []
    for member in entry["members"]:
        seeds = member["seeds"] if member["seeds"] is not None else models[member["model"]]["seeds"]
        members += [(member["model"], seed) for seed in seeds]
    return list(dict.fromkeys(members))


def _draws(spec: Mapping) -> int:
    retrain = spec["retrain"]
    replicates = retrain["replicates"] if retrain is not None and "random" in retrain["subsets"] else 0
    return max(spec["random_draws"], replicates)


def _mask_control(spec: Mapping) -> bool:
    """Whether the experiment trains mask-only controls beside its BS retraining."""
    retrain = spec["retrain"]
    return retrain is not None and retrain["mask_control"] and "bs" in retrain["subsets"]


def _augmented_once(spec: Mapping) -> bool:
    """Whether the ``.aug`` retrainings train on once-augmented subsets (``augment_mode: reference``)."""
    retrain = spec["retrain"]
    return retrain is not None and True in retrain["augment"] and retrain["augment_mode"] == "reference"


def _subsets(name: str, spec: Mapping, config: Mapping, jobs: Mapping) -> dict[str, Subset]:
    """The source's subsets, then those of each shifted test set it has SIS of."""
    source = spec["source"]
    dataset = config["models"][source["model"]]["dataset"]
    sources = {dataset: ("train", "test") if spec["retrain"] is not None else ("test",)}
    for shifted in spec["shifted"]:
        splits = tuple(split for (m, s, d, split) in jobs if (m, s, d) == (source["model"], source["seed"], shifted))
        if splits:
            sources[shifted] = splits
    subsets = {}
    for origin, splits in sources.items():
        prefix, folder = (name, f"{RESULTS}/{name}/subsets") if origin == dataset else \
            (f"{name}.{origin}", f"{RESULTS}/{name}/subsets/{origin}")
        for fraction in _fractions(spec):
            pct = percent_name(fraction)
            bs = Subset(f"{prefix}.bs{pct}", "bs", fraction, -1, f"{folder}/bs{pct}.h5", splits, origin)
            subsets[bs.name] = bs
            for draw in range(_draws(spec)):
                rnd = Subset(f"{prefix}.random{pct}.d{draw}", "random", fraction, draw,
                             f"{folder}/random{pct}_d{draw}.h5", splits, origin)
                subsets[rnd.name] = rnd
        if _mask_control(spec):
            pct = percent_name(spec["retrain"]["fraction"])
            mask = Subset(f"{prefix}.mask{pct}", "mask", spec["retrain"]["fraction"], -1, f"{folder}/mask{pct}.h5",
                          splits, origin)
            subsets[mask.name] = mask
        if _augmented_once(spec) and origin == dataset:  # one train split per (+) replicate, as the authors
            retrain, pct = spec["retrain"], percent_name(spec["retrain"]["fraction"])
            for kind in retrain["subsets"]:
                for r in range(retrain["replicates"]):
                    aug = Subset(f"{prefix}.{kind}{pct}.d{r}.aug", kind, retrain["fraction"], r,
                                 f"{folder}/{kind}{pct}_d{r}_aug.h5", splits, origin, augmented=True)
                    subsets[aug.name] = aug
    return subsets


@dataclass(frozen=True)
class Retrained:
    """A generated model family trained on pixel subsets."""

    model: str
    condition: str
    seeds: tuple[int, ...]
    arch: str
    kind: str
    fraction: float
    augment: bool
    dataset: str
    draw: int


def _retrained(name: str, spec: Mapping, config: Mapping) -> list[Retrained]:
    retrain = spec["retrain"]
    if retrain is None:
        return []
    source = config["models"][spec["source"]["model"]]
    pct = percent_name(retrain["fraction"])
    once = _augmented_once(spec)
    runs = []
    for arch in retrain["archs"] or [source["arch"]]:
        for kind in retrain["subsets"]:
            for augment in retrain["augment"]:
                suffix = ".aug" if augment else ""
                condition = f"{arch}.{kind}{pct}{suffix}"
                if augment and once:  # replicate r on its own once-augmented train split (draw r)
                    runs += [Retrained(f"{name}.{arch}.{kind}{pct}.d{r}.aug", condition, (r,), arch, kind,
                                       retrain["fraction"], augment, f"{name}.{kind}{pct}.d{r}.aug",
                                       r if kind == "random" else -1)
                             for r in range(retrain["replicates"])]
                elif kind == "bs":
                    runs.append(Retrained(f"{name}.{condition}", condition, tuple(range(retrain["replicates"])),
                                          arch, kind, retrain["fraction"], augment, f"{name}.bs{pct}", -1))
                else:
                    runs += [Retrained(f"{name}.{arch}.random{pct}.d{r}{suffix}", condition, (r,), arch, kind,
                                       retrain["fraction"], augment, f"{name}.random{pct}.d{r}", r)
                             for r in range(retrain["replicates"])]
            if _mask_control(spec):  # the leakage floor beside every BS retraining
                # once-augmented (+) subsets keep the un-augmented positions: their floor is the plain control
                for augment in ([False] if once else retrain["augment"]):
                    condition = f"{arch}.mask{pct}{'.aug' if augment else ''}"
                    runs.append(Retrained(f"{name}.{condition}", condition, tuple(range(retrain["replicates"])),
                                          arch, "mask", retrain["fraction"], augment, f"{name}.mask{pct}", -1))
    return runs


def _generated(name: str, spec: Mapping, config: Mapping, jobs: Mapping) -> tuple[dict[str, dict], dict[str, dict]]:
    """(datasets, models) entries an experiment adds to the config."""
    datasets = {s.name: {"kind": SUBSET_KIND, "path": s.path, "experiment": name, "subset": s.kind,
                         "fraction": s.fraction, "draw": s.draw} for s in _subsets(name, spec, config, jobs).values()}
    models = {}
    retrain = spec["retrain"]
    source = config["models"][spec["source"]["model"]]
    for run in _retrained(name, spec, config):
        if retrain["recipe"] is None:
            recipe, overrides = source["recipe"], {**source["overrides"], **retrain["overrides"]}
        else:
            recipe, overrides = retrain["recipe"], dict(retrain["overrides"])
        augmentation = retrain["augmentation"]
        per_epoch = run.augment and retrain["augment_mode"] == "aligned"  # reference: augmented once, in the data
        overrides.update(crop_padding=augmentation["crop_padding"] if per_epoch else 0,
                         hflip=augmentation["hflip"] if per_epoch else False)
        models[run.model] = {"dataset": run.dataset, "arch": run.arch, "recipe": recipe,
                             "overrides": copy.deepcopy(overrides), "seeds": list(run.seeds), "dump_splits": ["test"]}
    if retrain is not None and retrain["recipe"] is not None and retrain["recipe"] not in config["recipes"]:
        raise UserError(f"config key overinterpretation.{name}.retrain.recipe: {retrain['recipe']!r} is not a "
                        f"recipe; define it under `recipes` (have: {', '.join(sorted(config['recipes']))})")
    return datasets, models


def _pretrained(spec: Mapping, models_cfg: Mapping, ensembles: Mapping) -> dict[tuple[str, int], None]:
    """(model, seed) of every run evaluated as trained on full images: the listed models, ensemble members."""
    pretrained: dict[tuple[str, int], None] = {}
    for model in _listed_models(spec):
        for seed in models_cfg[model]["seeds"]:
            pretrained[(model, seed)] = None
    for members in ensembles.values():
        pretrained.update(dict.fromkeys(members))
    return pretrained


def _evaluations(name: str, spec: Mapping, config: Mapping, subsets: Mapping,
                 pretrained: Mapping) -> list[Evaluation]:
    """Every evaluation row: pretrained runs on full test sets and their subsets, retrained runs likewise."""
    models_cfg = config["models"]
    source = spec["source"]
    test_sets = (models_cfg[source["model"]]["dataset"], *spec["shifted"])
    evaluations: list[Evaluation] = []

    def add(model, seed, eval_dataset, role, condition, arch, train_on, train_fraction, augment, eval_on,
            eval_fraction, draw):
        test_set = subsets[eval_dataset].source if eval_dataset in subsets else eval_dataset
        evaluations.append(Evaluation(model, seed, role, condition, arch, train_on, train_fraction, augment,
                                      eval_dataset, eval_on, eval_fraction, draw, evaluation_path(name, model, seed),
                                      test_set))

    subsets = {key: subset for key, subset in subsets.items() if not subset.augmented}  # train splits only
    for model, seed in pretrained:
        arch = models_cfg[model]["arch"]
        for eval_dataset in test_sets:
            add(model, seed, eval_dataset, "pretrained", model, arch, "full", None, False, "full", None, -1)
        for subset in subsets.values():
            if subset.kind == "random" and subset.draw < spec["random_draws"]:
                add(model, seed, subset.name, "pretrained", model, arch, "full", None, False, "random",
                    subset.fraction, subset.draw)
            elif subset.kind == "bs" and (model, seed) == (source["model"], source["seed"]):
                add(model, seed, subset.name, "pretrained", model, arch, "full", None, False, "bs",
                    subset.fraction, -1)
    for run in _retrained(name, spec, config):
        for seed in run.seeds:
            for eval_dataset in test_sets:
                add(run.model, seed, eval_dataset, "retrained", run.condition, run.arch, run.kind, run.fraction,
                    run.augment, "full", None, run.draw)
            for subset in subsets.values():  # its own kind, fraction and draw, on every test set cut so
                if (subset.kind, subset.fraction, subset.draw) == (run.kind, run.fraction, run.draw):
                    add(run.model, seed, subset.name, "retrained", run.condition, run.arch, run.kind, run.fraction,
                        run.augment, run.kind, run.fraction, run.draw)
    return evaluations


def expand(name: str, spec: Mapping, config: Mapping, jobs: Mapping) -> OverinterpExperiment:
    """Every job and table row of one checked experiment (``jobs``: :func:`pathologies.sis.jobs.sis_jobs`)."""
    jobs = ExperimentSis(name, spec, jobs)
    models_cfg = config["models"]
    source = spec["source"]
    dataset = models_cfg[source["model"]]["dataset"]
    subsets = _subsets(name, spec, config, jobs)
    ensembles = {ens: _ensemble_members(entry, models_cfg) for ens, entry in spec["ensembles"].items()}
    pretrained = _pretrained(spec, models_cfg, ensembles)
    evaluations = _evaluations(name, spec, config, subsets, pretrained)
    sis_files = [SisFile(jobs.path(m, s, d, split), m, s, d, split, "original")
                 for (m, s, d, split) in jobs if (m, s) in pretrained and d in (dataset, *spec["shifted"])]
    calibration = spec["calibration"]
    calibrations = list(pretrained) if calibration["enabled"] else []
    # as the paper (S4.7), the SIS of a calibrated model is extracted for one run: the source
    source_run = (source["model"], source["seed"])
    calibrated = [source_run] if calibration["enabled"] and calibration["sis"] else []
    experiment = OverinterpExperiment(
        name=name, dataset=dataset, source_model=source["model"], source_seed=source["seed"],
        source_arch=models_cfg[source["model"]]["arch"], threshold=spec["threshold"],
        shifted=tuple(spec["shifted"]), subsets=subsets,
        evaluations=evaluations, sis_files=sis_files,
        calibrations=calibrations, calibrated_sis=calibrated, ensembles=ensembles, ensemble_sis={},
        options={"calibration": dict(calibration), "figures": dict(spec["figures"]),
                 "human_benchmark": spec["human_benchmark"], "random_seed": spec["random_seed"],
                 "masking": spec["masking"], "subset_rounding": spec["subset_rounding"],
                 "random_draw": spec["random_draw"], "topk": list(spec["topk"]),
                 "augment_mode": spec["retrain"]["augment_mode"] if spec["retrain"] is not None else "aligned",
                 "augmentation": dict(spec["retrain"]["augmentation"]) if spec["retrain"] is not None else {}},
        sis=jobs)
    for m, s in calibrated:
        sis_files.append(SisFile(experiment.calibrated_sis_path(m, s), m, s, dataset, "test", "calibrated"))
    for ens in ensembles:
        experiment.ensemble_sis[ens] = f"{experiment.folder}/ensembles/{ens}/sis_test.h5"
        sis_files.append(SisFile(experiment.ensemble_sis[ens], ens, -1, dataset, "test", "ensemble"))
    return experiment


def experiments(config: Mapping[str, Any], jobs: Mapping) -> dict[str, OverinterpExperiment]:
    """Every ``overinterpretation`` experiment of a validated config, expanded."""
    return {name: expand(name, spec, config, jobs) for name, spec in config.get("overinterpretation", {}).items()}
