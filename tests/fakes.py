"""A predictor whose answers are known: keyword logits and bag-of-words embeddings through the
real decision rule (`BasePredictor`), so the service, ingest and review queue can be tested in
milliseconds, with items that are sure to be auto-tagged and items sure to go to review."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mltagger.models.modelio import InferenceConfig, write_model_metadata
from mltagger.models.predict import BasePredictor
from tests.conftest import TAGS

LABELS = TAGS  # the seven-class model
KEYWORDS = {
    "natural-language-processing": "text",
    "computer-vision": "image",
    "mlops": "deploy",
    "reinforcement-learning": "agent",
    "graph-learning": "graph",
    "time-series": "forecast",
    "other": "pandas",
}
THRESHOLD = 0.8
TEMPERATURE = 2.0
DIM = 16


def keyword_logits(text: str) -> np.ndarray:
    """Logit 8 for each tag whose keyword is in the text, 0
    otherwise: one keyword is a sure answer (0.90 after T=2), none or two is an item for review."""
    low = text.lower()
    return np.array([8.0 if KEYWORDS[t] in low else 0.0 for t in LABELS])


def bag_embedding(text: str) -> np.ndarray:
    vec = np.zeros(DIM, dtype=np.float32)
    for word in text.lower().split():
        vec[zlib.crc32(word.encode()) % DIM] += 1.0
    norm = np.linalg.norm(vec)
    return vec / norm if norm else vec


def make_model_folder(
    folder: Path,
    threshold: float = THRESHOLD,
    thresholds: dict | None = None,
    gate_threshold: float | None = None,
) -> Path:
    """A model folder for FakePredictor; with gate_threshold, also a gate.json fitted on a few
    topic texts against a few texts of no topic (GATE_IN, GATE_OUT)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_model_metadata(
        folder,
        list(LABELS),
        InferenceConfig(
            thresholds=dict(thresholds or {}),
            threshold=threshold,
            temperature=TEMPERATURE,
            approved_tags=list(TAGS),
            model_version="fake-1",
            extra={"embedding_layer": 0},
            gate_threshold=gate_threshold,
        ),
    )
    if gate_threshold is not None:
        from mltagger.training.gate import fit_gate

        texts = GATE_IN + GATE_OUT
        fit_gate(texts, [True] * len(GATE_IN) + [False] * len(GATE_OUT)).save(folder)
    return folder


# What the fake folder's gate learns from: topic texts against texts of no topic.
GATE_IN = [
    "Image segmentation of street scenes",
    "Graph neural network for molecules",
    "Forecasting sales time series",
    "Translate text with a language model",
    "Reinforcement learning agent for games",
    "Deploy and monitor models in production",
] * 3
GATE_OUT = [
    "Cheap flights and hotel deals",
    "A JSON parser for Rust",
    "Tailwind components for React",
    "Claim free crypto airdrop tokens",
    "Weather widget for the taskbar",
    "SQL migrations for PostgreSQL",
] * 3


class FakePredictor(BasePredictor):
    backend = "fake"
    embedding_layer = 0

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        logits = np.array([keyword_logits(t) for t in texts]).reshape(len(texts), len(LABELS))
        emb = np.array([bag_embedding(t) for t in texts], dtype=np.float32).reshape(-1, DIM)
        return logits, emb


def write_screen(path: Path, threshold: float = 0.5) -> Path:
    """A duplicate-screen calibration whose pair model is a steep step at char4 cosine 0.8
    (probability 0.5 there), so tests know which items are near copies without the benchmark."""
    import json

    from mltagger.screen.pairs import FEATURES, PairModel

    w = np.zeros(len(FEATURES))
    w[0] = 50.0
    model = PairModel(w, -40.0, threshold, k=5, floor=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": model.to_dict()}))
    return path


class ReadsImagesAsText(FakePredictor):
    """A worse candidate model for rollout tests: it calls every image item
    natural-language-processing."""

    def encode(self, texts):
        logits, emb = super().encode(texts)
        for i, t in enumerate(texts):
            if "image" in t.lower():
                logits[i] = keyword_logits("text")
        return logits, emb
