"""The bottom layer: paths, user errors and exit codes, Hydra config composition, run metadata
(git commit, package versions) and tracking settings. Imports nothing from mltagger.
"""
