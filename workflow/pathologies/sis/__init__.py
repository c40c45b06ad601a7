"""Sufficient input subsets (rules in sis.smk): exact and Batched Gradient backward selection, extraction, merge, figures."""
