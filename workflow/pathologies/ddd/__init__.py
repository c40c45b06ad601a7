"""Dichotomous data difficulty (rules in ddd.smk): variant grid, kappa, difficulty, RSA, KL, figures."""
