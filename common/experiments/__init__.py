"""Experiments on trained systems: evaluate, profile, ablation, analysis, report, bench, demo."""
