# Config validation, experiment expansion and path helpers shared by every rule file.
import json
import os
import sys

PACKAGE_DIR = os.path.join(workflow.basedir, "workflow")
# Jobs run `python -m pathologies.<module>`: make the package importable without installing it
# (conda environments, SLURM jobs re-reading this file).
shell.prefix(f'export PYTHONPATH="{PACKAGE_DIR}${{{{PYTHONPATH:+:$PYTHONPATH}}}}"; ')
sys.path.insert(0, PACKAGE_DIR)

from pathologies.config import run_specs
from pathologies.experiments import check_configfiles, validate
from pathologies.errors import UserError
from pathologies.jobplan import plan as plan_training_jobs
from pathologies.models.weights import weights_file

try:
    check_configfiles(workflow.overwrite_configfiles or ["config/config.yaml"])
    config = validate(config)
    RUNS = run_specs(config)
    TRAIN_PLANS, TRAIN_ATTEMPTS = plan_training_jobs(config)
except UserError as err:
    # One line naming the key, no traceback: the message says everything the user needs.
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)
ENV = "../../envs/pathologies.yaml"
# (stage, declared analyses, Rules object) of every stage: analyses.smk makes their rules
ANALYSIS_STAGES = []


wildcard_constraints:
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.]*",
    model=r"[A-Za-z0-9][A-Za-z0-9_.]*",
    seed=r"\d+",


def run_spec(wildcards):
    """The RunSpec of a (model, seed) target, or a clear error for one not in the config."""
    key = (wildcards.model, int(wildcards.seed))
    if key not in RUNS:
        raise WorkflowError(
            f"models/{wildcards.model}/seed{wildcards.seed} is not in the config "
            f"(models: {', '.join(sorted(config['models']))})"
        )
    return RUNS[key]


_WARNED_PLACED = set()


def placed(paths, key, what="file"):
    """Files the user places (weights, published results): inputs of their jobs, so replacing one reruns them.
    A missing file stops a real run before any job starts (Snakemake names it); a dry run only warns, so a
    config whose files are not placed yet still shows its jobs."""
    kept = []
    for path in paths:
        if not workflow.dryrun or os.path.exists(path) or path.startswith("results/"):
            kept.append(path)
        elif path not in _WARNED_PLACED:
            _WARNED_PLACED.add(path)
            print(
                f"warning: {what} {path} ({key}) does not exist yet; a real run stops until it is placed",
                file=sys.stderr,
            )
    return kept


def weights_input(wildcards):
    """The run's `weights` file as an input of its training (none for torchvision's own weights)."""
    weights = weights_file(run_spec(wildcards).weights)
    return placed([weights] if weights else [], f"models.{wildcards.model}.weights", "weights file")


def dataset_file(name):
    # pixel-subset datasets (overinterpretation.smk) carry their own path; the others are prepared
    return config["datasets"].get(name, {}).get("path", f"results/data/{name}.h5")


def model_dir(model, seed):
    return f"results/models/{model}/seed{seed}"


def all_model_outputs(filename):
    return [f"{model_dir(m, s)}/{filename}" for (m, s) in RUNS]


def uses_gpu():
    return 1 if config["device"] == "cuda" else 0


def all_targets():
    return [
        *[dataset_file(name) for name in sorted({spec.dataset for spec in RUNS.values()})],
        *all_model_outputs("predictions.h5"),
        *(["results/figures/learning_curves.png"] if RUNS else []),  # none when a DDD experiment only reads CSVs
        *SIS.targets(),  # sis.smk
        *DDD.targets(),  # ddd.smk
        *OVERINTERP.targets(),  # overinterpretation.smk
    ]


def train_gpus(wildcards):
    """GPUs of one training job: its recipe's gpus (data-parallel ranks), none when config device is cpu."""
    return 0 if config["device"] == "cpu" else run_spec(wildcards).recipe["gpus"]


def train_launcher(wildcards):
    """Arguments between `python` and `-m pathologies.training.train`: torchrun for several ranks."""
    ranks = run_spec(wildcards).recipe["gpus"]
    return [] if ranks == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]


def train_budget(wildcards):
    """`--time-budget SECONDS` when train_jobs.time_limit is set (pathologies.jobplan)."""
    budget = TRAIN_PLANS[(wildcards.model, int(wildcards.seed))].budget_s
    return [] if budget is None else ["--time-budget", f"{budget:.0f}"]


def train_runtime(wildcards, attempt):
    job = TRAIN_PLANS[(wildcards.model, int(wildcards.seed))]
    return job.runtime * attempt if job.scales_with_attempt else job.runtime
