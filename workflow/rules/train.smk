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
    # a job stopped by its time budget is resubmitted and resumes; not inside a cluster job (remote mode),
    # where a retry would rerun it in the same allocation, under the same time limit
    retries: None if TRAIN_ATTEMPTS is None or workflow.remote_exec else TRAIN_ATTEMPTS - 1
    conda:
        ENV
    threads: config["train_threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=train_runtime,
        gpu=train_gpus,
    params:
        spec=lambda wildcards: json.dumps(run_spec(wildcards).as_dict(), sort_keys=True),
        state_dir="results/resume/{model}/seed{seed}",
        device=config["device"],
        launch=train_launcher,
        budget=train_budget,
        rank_threads=lambda wildcards, threads: max(1, threads // run_spec(wildcards).recipe["gpus"]),
    shell:
        "python {params.launch:q} -m pathologies.training.train --dataset {input.dataset:q} --spec {params.spec:q} "
        "--model-out {output.model:q} --log-out {output.log_csv:q} "
        "--predictions-out {output.predictions:q} --state-dir {params.state_dir:q} "
        "--device {params.device:q} --threads {params.rank_threads:q} {params.budget:q} > {log:q} 2>&1"
