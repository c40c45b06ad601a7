# Image-classifier pathologies: overinterpretation (SIS) and dichotomous data difficulty.
# Run `snakemake --cores N` (default config) or `snakemake --cores N --configfile config/<paper>.yaml`.
from snakemake.utils import min_version

min_version("9.0")


# The default config applies only when no --configfile is given: a paper-scale config replaces it
# instead of being merged into it (Snakemake would otherwise extend the default's datasets/models).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sis.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/ddd.smk"
include: "workflow/rules/overinterpretation.smk"
include: "workflow/rules/analyses.smk"


rule all:
    default_target: True
    input:
        all_targets(),
