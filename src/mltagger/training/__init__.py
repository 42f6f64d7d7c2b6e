"""Everything that fits a model: the Accelerate loop and its parts, calibration, distillation,
teachers, cross-validation, Optuna sweeps, label-issue finding and the baselines job.
"""
