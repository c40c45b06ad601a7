"""Dichotomous data difficulty (rules in consistency.smk): variant grid, kappa, difficulty, RSA, KL, figures."""
