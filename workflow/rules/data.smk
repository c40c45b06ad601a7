rule prepare_dataset:
    """Prepare one dataset into the shared HDF5 layout (pathologies.data.layout)."""
    input:
        # shifted test sets may record the normalisation of a prepared CIFAR-10 file
        lambda wildcards: config["datasets"][wildcards.dataset].get("stats_from", []),
    output:
        "results/data/{dataset}.h5",
    log:
        "results/logs/prepare_dataset/{dataset}.log",
    conda:
        ENV
    resources:
        mem_mb=lambda wildcards, attempt: 4000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    params:
        spec=lambda wildcards: json.dumps(config["datasets"][wildcards.dataset]),
    shell:
        "python -m pathologies.data.prepare --name {wildcards.dataset:q} --spec {params.spec:q} "
        "--resources resources --out {output:q} > {log:q} 2>&1"
