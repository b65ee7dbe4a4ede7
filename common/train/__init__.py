"""Offline training pipeline (torch): presets, teacher, feature cache, KDL-DARTS / DARTS search,
two-stage RKD, JSCC baselines, export, evaluation.

Submodules are imported on demand (``from rkdsc.common.train.search import run_search``); importing
this package imports nothing heavy.
"""
