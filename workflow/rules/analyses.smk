# One rule per declared table and figure (pathologies.analysis.Analysis): each stage file appends
# (stage, declarations, its Rules object) to ANALYSIS_STAGES; this file, included after them, makes the
# rules <stage>_<name>. The shell line is a constant that reads module and options from params: Snakemake
# evaluates a shell expression again when the job runs, after the loop has moved on.
from pathologies.analysis import rule_inputs, rule_log, rule_options, rule_outputs, rule_resources

for _stage, _analyses, _rules in ANALYSIS_STAGES:
    for _analysis in _analyses:

        rule:
            name:
                f"{_stage.name}_{_analysis.name}"
            input:
                **rule_inputs(_stage, _analysis, _rules),
            output:
                **rule_outputs(_stage, _analysis, report),
            log:
                rule_log(_stage, _analysis),
            wildcard_constraints:
                **{_stage.wildcard: _stage.pattern},
            conda:
                ENV
            resources:
                **rule_resources(_analysis),
            params:
                command=_analysis.command(),
                options=rule_options(_stage, _analysis, _rules),
            shell:
                "python -m {params.command:q} {params.options:q} > {log:q} 2>&1"
