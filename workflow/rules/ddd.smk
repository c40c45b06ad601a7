# Dichotomous data difficulty (Meding et al. 2022): for every experiment under `ddd`, error-consistency
# and difficulty tables, RSA, a summary and the paper's figures under results/ddd/<experiment>/.
# The experiment's models are ordinary `models` entries (pathologies.ddd.grid), trained by rule `train`;
# paths and parameters per experiment come from pathologies.ddd.rules, which also declares the tables and
# figures whose rules workflow/rules/analyses.smk makes (ANALYSES).
from pathologies.analysis import input_options
from pathologies.ddd.rules import ANALYSES, STAGE, DddRules

DDD = DddRules(config, model_dir, dataset_file)
ANALYSIS_STAGES.append((STAGE, ANALYSES, DDD))  # their rules: analyses.smk
DDD_REPORT = "Dichotomous data difficulty"


wildcard_constraints:
    experiment=r"[A-Za-z0-9][A-Za-z0-9_]*",


rule ddd_experiment:
    """The experiment as the analysis modules read it: members, their runs and epochs, options."""
    output:
        "results/ddd/{experiment}/experiment.json",
    log:
        "results/logs/ddd/{experiment}/experiment.log",
    localrule: True
    conda:
        ENV
    resources:
        mem_mb=500,
        runtime=5,
    params:
        spec=lambda wildcards: DDD.spec(wildcards.experiment),
    shell:
        "python -m pathologies.ddd.experiment --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"


rule ddd_kappa:
    """Error consistency of every pair of members per epoch, conditions vs base, base run over epochs."""
    input:
        experiment="results/ddd/{experiment}/experiment.json",
        predictions=lambda wildcards: DDD.predictions(wildcards.experiment),
        external=lambda wildcards: placed(DDD.external(wildcards.experiment), f"ddd.{wildcards.experiment}"),
        exclude=lambda wildcards: placed(DDD.exclude(wildcards.experiment), f"ddd.{wildcards.experiment}.exclude_ids"),
    output:
        kappa="results/ddd/{experiment}/kappa.csv",
        conditions="results/ddd/{experiment}/conditions.csv",
        epoch_kappa="results/ddd/{experiment}/epoch_kappa.csv",
    log:
        "results/logs/ddd/{experiment}/kappa.log",
    benchmark:
        "results/benchmarks/ddd/{experiment}/kappa.tsv"
    conda:
        ENV
    threads: 4
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    shell:
        "export OPENBLAS_NUM_THREADS={threads:q} OMP_NUM_THREADS={threads:q}; "
        "python -m pathologies.ddd.kappa --experiment {input.experiment:q} --kappa-out {output.kappa:q} "
        "--conditions-out {output.conditions:q} --epochs-out {output.epoch_kappa:q} > {log:q} 2>&1"


rule ddd_difficulty:
    """Per-image difficulty, fractions, histograms, A.9 models, class accuracy, decision changes."""
    input:
        experiment="results/ddd/{experiment}/experiment.json",
        predictions=lambda wildcards: DDD.predictions(wildcards.experiment),
        external=lambda wildcards: placed(DDD.external(wildcards.experiment), f"ddd.{wildcards.experiment}"),
        exclude=lambda wildcards: placed(DDD.exclude(wildcards.experiment), f"ddd.{wildcards.experiment}.exclude_ids"),
        dataset=lambda wildcards: DDD.dataset(wildcards.experiment),
    output:
        members="results/ddd/{experiment}/members.csv",
        difficulty="results/ddd/{experiment}/difficulty.csv",
        difficulty_excluded="results/ddd/{experiment}/difficulty_excluded.csv",
        fractions="results/ddd/{experiment}/fractions.csv",
        histogram="results/ddd/{experiment}/histogram.csv",
        profiles="results/ddd/{experiment}/difficulty_profiles.csv",
        histograms="results/ddd/{experiment}/difficulty_histograms.csv",
        class_accuracy="results/ddd/{experiment}/class_accuracy.csv",
        changes="results/ddd/{experiment}/decision_changes.csv",
    log:
        "results/logs/ddd/{experiment}/difficulty.log",
    benchmark:
        "results/benchmarks/ddd/{experiment}/difficulty.tsv"
    conda:
        ENV
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 30 * attempt,
    shell:
        "python -m pathologies.ddd.difficulty --experiment {input.experiment:q} --dataset {input.dataset:q} "
        "--members-out {output.members:q} --difficulty-out {output.difficulty:q} "
        "--difficulty-excluded-out {output.difficulty_excluded:q} "
        "--fractions-out {output.fractions:q} --histogram-out {output.histogram:q} "
        "--profiles-out {output.profiles:q} --histograms-out {output.histograms:q} "
        "--class-accuracy-out {output.class_accuracy:q} --changes-out {output.changes:q} > {log:q} 2>&1"


rule ddd_human_pages:
    """A.10: static pages of trivial / impossible image pairs (experiment 1) and of images with questions (2)."""
    input:
        experiment="results/ddd/{experiment}/experiment.json",
        difficulty="results/ddd/{experiment}/difficulty.csv",
        difficulty_excluded="results/ddd/{experiment}/difficulty_excluded.csv",
        dataset=lambda wildcards: DDD.dataset(wildcards.experiment),
    output:
        directory("results/ddd/{experiment}/human"),
    log:
        "results/logs/ddd/{experiment}/human_pages.log",
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m pathologies.ddd.human_pages --experiment {input.experiment:q} --difficulty {input.difficulty:q} "
        "--difficulty-excluded {input.difficulty_excluded:q} --dataset {input.dataset:q} --out-dir {output:q} "
        "> {log:q} 2>&1"


rule ddd_human_scores:
    """A.10-A.11: observers' accuracy and consistency, answer shares, Krippendorff's alpha."""
    input:
        human="results/ddd/{experiment}/human",
        experiment="results/ddd/{experiment}/experiment.json",
        exclude=lambda wildcards: placed(DDD.exclude(wildcards.experiment), f"ddd.{wildcards.experiment}.exclude_ids"),
        pair_answers=lambda wildcards: DDD.human_answers(wildcards.experiment, "pairs"),
        question_answers=lambda wildcards: DDD.human_answers(wildcards.experiment, "questions"),
    output:
        pairs="results/ddd/{experiment}/human_pairs.csv",
        questions="results/ddd/{experiment}/human_questions.csv",
        agreement="results/ddd/{experiment}/human_agreement.csv",
        model_accuracy="results/ddd/{experiment}/human_model_accuracy.csv",
    log:
        "results/logs/ddd/{experiment}/human_scores.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m pathologies.ddd.human_scores --pairs {input.human:q}/pairs.csv "
        "--questions {input.human:q}/questions.csv --pair-answers {input.pair_answers:q} "
        "--question-answers {input.question_answers:q} --experiment {input.experiment:q} --pairs-out {output.pairs:q} "
        "--questions-out {output.questions:q} --agreement-out {output.agreement:q} "
        "--model-accuracy-out {output.model_accuracy:q} > {log:q} 2>&1"


rule ddd_rsa:
    """Representational similarity of penultimate-layer activations (A.4)."""
    input:
        experiment="results/ddd/{experiment}/experiment.json",
        checkpoints=lambda wildcards: DDD.checkpoints(wildcards.experiment),
        exclude=lambda wildcards: DDD.exclude(wildcards.experiment),
        dataset=lambda wildcards: DDD.dataset(wildcards.experiment),
    output:
        "results/ddd/{experiment}/rsa.csv",
    log:
        "results/logs/ddd/{experiment}/rsa.log",
    benchmark:
        "results/benchmarks/ddd/{experiment}/rsa.tsv"
    conda:
        ENV
    threads: config["train_threads"]
    resources:
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
        gpu=uses_gpu(),
    params:
        device=config["device"],
    shell:
        "python -m pathologies.ddd.rsa --experiment {input.experiment:q} --dataset {input.dataset:q} --out {output:q} "
        "--device {params.device:q} --threads {threads:q} > {log:q} 2>&1"


rule ddd_summary:
    """A few human-readable lines per experiment: difficulty fractions, kappa per condition, RSA."""
    input:
        experiment="results/ddd/{experiment}/experiment.json",
        members="results/ddd/{experiment}/members.csv",
        difficulty="results/ddd/{experiment}/difficulty.csv",
        kappa="results/ddd/{experiment}/kappa.csv",
        conditions="results/ddd/{experiment}/conditions.csv",
        histograms="results/ddd/{experiment}/difficulty_histograms.csv",
        histogram="results/ddd/{experiment}/histogram.csv",
        rsa=lambda wildcards: DDD.rsa_table(wildcards.experiment),
        exclude=lambda wildcards: DDD.exclude(wildcards.experiment),
    output:
        report(
            "results/ddd/{experiment}/summary.txt",
            caption="../report/ddd_summary.rst",
            category=DDD_REPORT,
            subcategory="{experiment}",
        ),
    log:
        "results/logs/ddd/{experiment}/summary.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        rsa=lambda wildcards, input: input_options({"rsa": input.rsa}),
    shell:
        "python -m pathologies.ddd.summary --experiment {input.experiment:q} --members {input.members:q} "
        "--difficulty {input.difficulty:q} --kappa {input.kappa:q} --conditions {input.conditions:q} "
        "--histograms {input.histograms:q} --histogram {input.histogram:q} {params.rsa:q} --out {output:q} > {log:q} 2>&1"
