# Overinterpretation (Carter et al. 2021): for every experiment under `overinterpretation`, pixel subsets
# of a source model's backward selection, evaluations of pretrained and retrained models, calibration,
# ensembles, SIS-size analyses, tables and figures under results/overinterp/<experiment>/. Models trained
# on subsets are ordinary `models` entries (pathologies.overinterp.grid) trained by rule `train`. The tables
# and figures declared in pathologies.overinterp.rules (ANALYSES) get their rules from analyses.smk.
from pathologies.overinterp.rules import ANALYSES, STAGE, OverinterpRules

OVERINTERP = OverinterpRules(config, RUNS, model_dir, dataset_file)
ANALYSIS_STAGES.append((STAGE, ANALYSES, OVERINTERP))  # their rules: analyses.smk


wildcard_constraints:
    experiment=r"[A-Za-z0-9][A-Za-z0-9_]*",
    ensemble=r"[A-Za-z0-9][A-Za-z0-9_]*",


rule overinterp_experiment:
    """The expanded experiment (every evaluation, SIS file and table row) for the analysis modules."""
    output:
        "results/overinterp/{experiment}/experiment.json",
    log:
        "results/logs/overinterp/{experiment}/experiment.log",
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        spec=lambda wildcards: OVERINTERP.spec(wildcards.experiment),
    run:
        # written here, not on a command line: the spec of a paper-scale experiment exceeds its length limit
        from pathologies.io import atomic_output

        with atomic_output(output[0]) as tmp:
            tmp.write_text(f"{params.spec}\n")


# One job per experiment and source dataset writes all its pixel-subset datasets (BS and random draws of
# every fraction): the source split and SIS files are read once, and a job per file would mostly spend its
# time importing. Shifted test sets the source has SIS of get their own job (overinterp_subsets_<exp>_<set>).
for _experiment in OVERINTERP.experiments:
    for _origin in OVERINTERP.subset_origins(_experiment):
        _own = _origin == OVERINTERP.experiment(_experiment).dataset

        rule:
            name:
                f"overinterp_subsets_{_experiment}" if _own else f"overinterp_subsets_{_experiment}_{_origin}"
            input:
                dataset=OVERINTERP.dataset(_experiment, _origin),
                sis=list(OVERINTERP.subset_sis(_experiment, _origin).values()),
            output:
                OVERINTERP.subset_files(_experiment, _origin),
            log:
                f"results/logs/overinterp/{_experiment}/subsets_{_origin}.log",
            conda:
                ENV
            resources:
                mem_mb=lambda wildcards, attempt: 8000 * attempt,
                runtime=lambda wildcards, attempt: 60 * attempt,
            params:
                args=OVERINTERP.subset_args(_experiment, _origin),
            shell:
                "python -m pathologies.overinterp.subsets --dataset {input.dataset:q} {params.args:q} > {log:q} 2>&1"


rule overinterp_evaluate:
    """Logits of one trained run on every dataset the experiment evaluates it on (pixel subsets masked exactly)."""
    input:
        model=lambda wildcards: OVERINTERP.checkpoint(wildcards.model, wildcards.seed),
        datasets=lambda wildcards: list(
            OVERINTERP.eval_datasets(wildcards.experiment, wildcards.model, wildcards.seed).values()
        ),
    output:
        "results/overinterp/{experiment}/eval/{model}/seed{seed}.h5",
    log:
        "results/logs/overinterp/{experiment}/eval/{model}/seed{seed}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=uses_gpu(),
    params:
        datasets=lambda wildcards: OVERINTERP.eval_args(wildcards.experiment, wildcards.model, wildcards.seed),
        device=config["device"],
    shell:
        "python -m pathologies.overinterp.evaluate --model {input.model:q} {params.datasets:q} --out {output:q} "
        "--device {params.device:q} --threads {threads:q} > {log:q} 2>&1"


rule overinterp_calibrate:
    """Temperature scaling fitted on one half of the test split, ECE before/after on the other (S4.7)."""
    input:
        lambda wildcards: OVERINTERP.calibration_input(wildcards.experiment, wildcards.model, wildcards.seed),
    output:
        "results/overinterp/{experiment}/calibration/{model}/seed{seed}.json",
    log:
        "results/logs/overinterp/{experiment}/calibration/{model}/seed{seed}.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        args=lambda wildcards: OVERINTERP.calibration_args(wildcards.experiment),
    shell:
        "python -m pathologies.overinterp.calibration --evaluation {input:q} {params.args:q} --out {output:q} > {log:q} 2>&1"


rule overinterp_calibrated_sis:
    """SIS of the temperature-scaled model on one shard, with the settings and shards of its uncalibrated
    test SIS (Table S5)."""
    input:
        model=lambda w: OVERINTERP.checkpoint(w.model, w.seed),
        calibration="results/overinterp/{experiment}/calibration/{model}/seed{seed}.json",
        dataset=lambda w: OVERINTERP.dataset(w.experiment),
    output:
        "results/overinterp/{experiment}/calibrated_sis/{model}/seed{seed}/shard{shard}of{shards}.h5",
    log:
        "results/logs/overinterp/{experiment}/calibrated_sis/{model}/seed{seed}/shard{shard}of{shards}.log",
    benchmark:
        "results/benchmarks/overinterp/{experiment}/calibrated_sis/{model}/seed{seed}/shard{shard}of{shards}.tsv"
    wildcard_constraints:
        shard=r"\d+",
        shards=r"\d+",
    conda:
        ENV
    threads: config["sis"]["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda w, attempt: OVERINTERP.calibrated_job(w.experiment, w.model, w.seed).runtime * attempt,
        gpu=uses_gpu(),
    params:
        spec=lambda w: OVERINTERP.calibrated_job(w.experiment, w.model, w.seed, w.shards).spec(),
        state_dir=lambda w: OVERINTERP.calibrated_job(w.experiment, w.model, w.seed).state_dir(int(w.shard)),
        batch_size_cache=SIS_BATCH_CACHE,
        device=config["device"],
    shell:
        "python -m pathologies.overinterp.calibrated_sis --model {input.model:q} --calibration {input.calibration:q} "
        "--dataset {input.dataset:q} --spec {params.spec:q} --shard {wildcards.shard:q} --num-shards {wildcards.shards:q} "
        "--out {output:q} --device {params.device:q} --state-dir {params.state_dir:q} --threads {threads:q} "
        "{params.batch_size_cache:q} > {log:q} 2>&1"


rule overinterp_calibrated_sis_merge:
    """Join the shards of the calibrated model's SIS into one file (equal to an unsharded run)."""
    input:
        lambda w: OVERINTERP.calibrated_job(w.experiment, w.model, w.seed).shard_paths(),
    output:
        "results/overinterp/{experiment}/calibrated_sis/{model}/seed{seed}.h5",
    log:
        "results/logs/overinterp/{experiment}/calibrated_sis/{model}/seed{seed}_merge.log",
    conda:
        ENV
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    shell:
        "python -m pathologies.sis.merge --shards {input:q} --out {output:q} > {log:q} 2>&1"


rule overinterp_ensemble_sis:
    """SIS of an ensemble (mean logits) on one shard, with the settings of its first member's test SIS and
    (members x) its shards (Figure S2)."""
    input:
        models=lambda w: OVERINTERP.ensemble_checkpoints(w.experiment, w.ensemble),
        dataset=lambda w: OVERINTERP.dataset(w.experiment),
    output:
        "results/overinterp/{experiment}/ensembles/{ensemble}/sis_test/shard{shard}of{shards}.h5",
    log:
        "results/logs/overinterp/{experiment}/ensembles/{ensemble}/sis_test/shard{shard}of{shards}.log",
    benchmark:
        "results/benchmarks/overinterp/{experiment}/ensembles/{ensemble}/sis_test/shard{shard}of{shards}.tsv"
    wildcard_constraints:
        shard=r"\d+",
        shards=r"\d+",
    conda:
        ENV
    threads: config["sis"]["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda w, attempt: OVERINTERP.ensemble_job(w.experiment, w.ensemble).runtime * attempt,
        gpu=uses_gpu(),
    params:
        models=lambda w, input: [token for path in input.models for token in ("--model", path)],
        spec=lambda w: OVERINTERP.ensemble_job(w.experiment, w.ensemble, w.shards).spec(),
        state_dir=lambda w: OVERINTERP.ensemble_job(w.experiment, w.ensemble).state_dir(int(w.shard)),
        batch_size_cache=SIS_BATCH_CACHE,
        device=config["device"],
    shell:
        "python -m pathologies.sis.extract {params.models:q} --dataset {input.dataset:q} --spec {params.spec:q} "
        "--shard {wildcards.shard:q} --num-shards {wildcards.shards:q} --out {output:q} --device {params.device:q} "
        "--state-dir {params.state_dir:q} --threads {threads:q} {params.batch_size_cache:q} > {log:q} 2>&1"


rule overinterp_ensemble_sis_merge:
    """Join the shards of an ensemble's SIS into one file (equal to an unsharded run)."""
    input:
        lambda w: OVERINTERP.ensemble_job(w.experiment, w.ensemble).shard_paths(),
    output:
        "results/overinterp/{experiment}/ensembles/{ensemble}/sis_test.h5",
    log:
        "results/logs/overinterp/{experiment}/ensembles/{ensemble}/sis_test_merge.log",
    conda:
        ENV
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    shell:
        "python -m pathologies.sis.merge --shards {input:q} --out {output:q} > {log:q} 2>&1"
