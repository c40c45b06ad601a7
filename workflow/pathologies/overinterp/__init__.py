"""Overinterpretation experiments (rules in overinterpretation.smk).

Subsets, evaluation, calibration, tables, figures.
"""
