"""Overinterpretation experiments (rules in overinterpretation.smk): subsets, evaluation, calibration, tables, figures."""
