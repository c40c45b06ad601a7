# Image-classifier pathologies: overinterpretation (SIS) and dichotomous data difficulty.
# Run `snakemake --cores N` (default config) or `snakemake --cores N --configfile config/<paper>.yaml`.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        all_targets(),
    default_target: True
