"""After release: `mltagger monitor` (online precision from proxy signals, drift against the
model's reference profile, candidate disagreement) and `mltagger simulate-stream` (replays a
stream through ingest to show that it works). Beside `reporting` and `benchmarks`: it reads the
store and the model folders; the service only exports the figures it saves.
"""
