"""Image-classifier pathologies: overinterpretation (SIS) and dichotomous data difficulty.

Every module is small and does one job; modules with a command-line entry point run as
``python -m pathologies.<module>`` and are what the Snakemake rules call.
"""

__version__ = "0.1.0"
