"""Items in, clean splits out: reading and validating files, text cleaning, duplicates inside a
dataset, splits, slices, the fresh evaluation set, the weak sources (external lists, PyPI
summaries), label corrections and the duplicate benchmark's data. Imports only `core`.
"""
