"""What turns text into a tag: the decision rule, model folders and their metadata, the torch
and ONNX predictors, the baselines and the lexical duplicate screen. Imports `data` and `core`.
"""
