"""Sufficient input subsets (rules in sis.smk).

Exact and Batched Gradient backward selection, extraction, merge, figures.
"""
