# Sufficient input subsets: for every run under `sis.runs`, one extraction job per model x seed x dataset
# split x shard (GPU work), a merge per split, and per run the figures declared in pathologies.sis.rules
# (their rules: analyses.smk). Layout: pathologies/sis/extract.py.
from pathologies.sis.rules import ANALYSES, STAGE, SisRules

try:
    SIS = SisRules(config, RUNS, model_dir)
except UserError as err:
    # a bad `sis` section: one line naming the key, no traceback
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)
ANALYSIS_STAGES.append((STAGE, ANALYSES, SIS))  # the figures of each run: analyses.smk
# exact extraction scores at the batch size measured per model and device (pathologies.sis.batch_size)
SIS_BATCH_CACHE = (
    ["--batch-size-cache", "results/cache/sis_batch_size.json"] if config["sis"]["tune_batch_size"] else []
)
NAME = r"[A-Za-z0-9][A-Za-z0-9_.]*"  # run, model and split names (config schema): no '/'


rule sis_extract:
    """SIS of one trained model on one shard of a dataset split (exact or Batched Gradient backward selection)."""
    input:
        models=lambda w: SIS.checkpoints(w.run, w.model, w.seed, w.dataset, w.split),
        dataset=lambda w: dataset_file(w.dataset),
    output:
        "results/sis/{run}/{model}/seed{seed}/{dataset}/{split}/shard{shard}of{shards}.h5",
    log:
        "results/logs/sis_extract/{run}/{model}/seed{seed}/{dataset}/{split}/shard{shard}of{shards}.log",
    benchmark:
        "results/benchmarks/sis_extract/{run}/{model}/seed{seed}/{dataset}/{split}/shard{shard}of{shards}.tsv"
    wildcard_constraints:
        run=NAME,
        model=NAME,
        split=NAME,
        shard=r"\d+",
        shards=r"\d+",
    conda:
        ENV
    threads: config["sis"]["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda w, attempt: SIS.runtime(w.run, w.model, w.seed, w.dataset, w.split) * attempt,
        gpu=uses_gpu(),
    params:
        models=lambda w, input: [token for path in input.models for token in ("--model", path)],
        spec=lambda w: SIS.spec(w.run, w.model, w.seed, w.dataset, w.split, w.shards),
        state_dir="results/resume/sis/{run}/{model}/seed{seed}/{dataset}/{split}/shard{shard}of{shards}",
        device=config["device"],
        batch_size_cache=SIS_BATCH_CACHE,
    shell:
        "python -m pathologies.sis.extract {params.models:q} --dataset {input.dataset:q} --spec {params.spec:q} "
        "--shard {wildcards.shard:q} --num-shards {wildcards.shards:q} --out {output:q} --device {params.device:q} "
        "--state-dir {params.state_dir:q} --threads {threads:q} {params.batch_size_cache:q} > {log:q} 2>&1"


rule sis_merge:
    """Join the shards of one extraction into one file (equal to an unsharded run)."""
    input:
        lambda w: SIS.shards(w.run, w.model, w.seed, w.dataset, w.split),
    output:
        "results/sis/{run}/{model}/seed{seed}/{dataset}/{split}.h5",
    log:
        "results/logs/sis_merge/{run}/{model}/seed{seed}/{dataset}/{split}.log",
    wildcard_constraints:
        run=NAME,
        model=NAME,
        split=NAME,
    conda:
        ENV
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    shell:
        "python -m pathologies.sis.merge --shards {input:q} --out {output:q} > {log:q} 2>&1"
