rule train:
    """Train one model (one seed) with per-epoch prediction dumps; resumable per epoch."""
    input:
        dataset=lambda wildcards: dataset_file(run_spec(wildcards).dataset),
        weights=weights_input,
    output:
        model="results/models/{model}/seed{seed}/model.pt",
        log_csv="results/models/{model}/seed{seed}/train_log.csv",
        predictions="results/models/{model}/seed{seed}/predictions.h5",
    log:
        "results/logs/train/{model}/seed{seed}.log",
    benchmark:
        "results/benchmarks/train/{model}/seed{seed}.tsv"
    conda:
        ENV
    threads: config["train_threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=uses_gpu(),
    params:
        spec=lambda wildcards: json.dumps(run_spec(wildcards).as_dict(), sort_keys=True),
        state_dir="results/resume/{model}/seed{seed}",
        device=config["device"],
    shell:
        "python -m pathologies.training.train --dataset {input.dataset:q} --spec {params.spec:q} "
        "--model-out {output.model:q} --log-out {output.log_csv:q} "
        "--predictions-out {output.predictions:q} --state-dir {params.state_dir:q} "
        "--device {params.device:q} --threads {threads:q} > {log:q} 2>&1"
