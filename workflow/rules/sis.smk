# Sufficient input subsets: for every run under `sis.runs`, one extraction job per model x seed x dataset
# split x shard (GPU work), a merge per split, and two figures per run. Layout: pathologies/sis/extract.py.
from pathologies.sis.rules import SisRules  # noqa: E402

try:
    SIS = SisRules(config, RUNS, model_dir)
except UserError as err:
    # a bad `sis` section: one line naming the key, no traceback
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)
SIS_REPORT = "Sufficient input subsets"


rule sis_extract:
    """SIS of one trained model on one shard of a dataset split (exact or Batched Gradient backward selection)."""
    input:
        models=lambda w: SIS.checkpoints(w.model, w.seed, w.dataset, w.split),
        dataset=lambda w: dataset_file(w.dataset),
    output:
        "results/sis/{model}/seed{seed}/{dataset}/{split}/shard{shard}of{shards}.h5",
    wildcard_constraints:
        split=r"[A-Za-z0-9][A-Za-z0-9_.]*",
        shard=r"\d+",
        shards=r"\d+",
    params:
        models=lambda w, input: " ".join(f"--model {path}" for path in input.models),
        spec=lambda w: SIS.spec(w.model, w.seed, w.dataset, w.split, w.shards),
        state_dir="results/resume/sis/{model}/seed{seed}/{dataset}/{split}/shard{shard}of{shards}",
        device=config["device"],
    log:
        "results/logs/sis_extract/{model}/seed{seed}/{dataset}/{split}/shard{shard}of{shards}.log",
    benchmark:
        "results/benchmarks/sis_extract/{model}/seed{seed}/{dataset}/{split}/shard{shard}of{shards}.tsv"
    threads: config["sis"]["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda w, attempt: SIS.runtime(w.model, w.seed, w.dataset, w.split) * attempt,
        gpu=uses_gpu(),
    conda:
        ENV
    shell:
        "python -m pathologies.sis.extract {params.models} --dataset {input.dataset} --spec {params.spec:q} "
        "--shard {wildcards.shard} --num-shards {wildcards.shards} --out {output} --device {params.device} "
        "--state-dir {params.state_dir} --threads {threads} > {log} 2>&1"


rule sis_merge:
    """Join the shards of one extraction into one file (equal to an unsharded run)."""
    input:
        lambda w: SIS.shards(w.model, w.seed, w.dataset, w.split),
    output:
        "results/sis/{model}/seed{seed}/{dataset}/{split}.h5",
    wildcard_constraints:
        split=r"[A-Za-z0-9][A-Za-z0-9_.]*",
    log:
        "results/logs/sis_merge/{model}/seed{seed}/{dataset}/{split}.log",
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    conda:
        ENV
    shell:
        "python -m pathologies.sis.merge --shards {input} --out {output} > {log} 2>&1"


rule sis_figures:
    """Example SIS and backward-selection confidence curves of one SIS run."""
    input:
        lambda w: SIS.run_files(w.run),
    output:
        examples=report(
            "results/figures/sis_examples_{run}.png",
            caption="../report/sis_examples.rst",
            category=SIS_REPORT,
            subcategory="{run}",
        ),
        curves=report(
            "results/figures/sis_curves_{run}.png",
            caption="../report/sis_curves.rst",
            category=SIS_REPORT,
            subcategory="{run}",
        ),
    wildcard_constraints:
        run=r"[A-Za-z0-9][A-Za-z0-9_.]*",
    log:
        "results/logs/sis_figures/{run}.log",
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "python -m pathologies.sis.figures --sis {input} --examples-out {output.examples} "
        "--curves-out {output.curves} > {log} 2>&1"
