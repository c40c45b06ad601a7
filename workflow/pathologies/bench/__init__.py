"""Benchmarks that print figures: each compares against a baseline measured in the same run.

Run ``python -m pathologies.bench <name> [options]``; names: sis, consistency, train. The last line
of every benchmark is ``<key>=<value>`` so scripts can read it.
"""
