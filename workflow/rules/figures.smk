rule learning_curves:
    """Loss and accuracy per epoch for every trained model."""
    input:
        all_model_outputs("train_log.csv"),
    output:
        report(
            "results/figures/learning_curves.png",
            caption="../report/learning_curves.rst",
            category="Training",
        ),
    log:
        "results/logs/figures/learning_curves.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m pathologies.training.learning_curves --logs {input:q} --out {output:q} > {log:q} 2>&1"
