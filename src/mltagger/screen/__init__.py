"""The duplicate screen: is a new item a copy of one already stored, or of an earlier item of its
batch? Checked when items are stored, independent of the classifier (its own lexical sketch,
index and calibration), so promoting a model never touches it.

One package so that a change to the screen is made in one place; it imports only `core` and
`data`, and `serving` imports it.

- `sketch`: an item's normalised text, sketch and feature sets (`VERSION`, `ScreenError`);
- `index`: the stored items' sketches in FAISS (`ScreenIndex`);
- `pairs`: candidate pairs, their features and the calibrated pair model;
- `screening`: the screen at ingest (exact by text or link, then near; `url_key`, `fill_store`);
- `fitting`: fitting and measuring it on the benchmark (`mltagger dedup-eval`);
- `copies`, `bench_data`, `scale_data`: the benchmark's inputs (edited copies, the stores and
  queries, the million-item store; `mltagger data-dedup` rebuilds `bench_data`'s registry);
- `scale_bench`: the index at store scale (`mltagger dedup-eval --scale`);
- `compare`: the embedding screens it replaced (`mltagger dedup-eval --compare-embeddings`).
"""
