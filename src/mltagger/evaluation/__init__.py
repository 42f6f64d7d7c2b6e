"""Scoring models and choosing operating points: metrics with intervals, thresholds, the
val -> test protocol, Markdown reports, plots, the behaviour suite and the duplicate screen's
fitting and rates. Never trains anything.
"""
