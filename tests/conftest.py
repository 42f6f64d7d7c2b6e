"""Shared fixtures: tiny labelled items and files, and an environment that writes nothing
outside the test's temp folders (HF cache, W&B) and never reaches a network."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one BLAS/OpenMP thread each (and in the jobs they start), else
    # torch's two threads per worker fight over the cores (measured: 253 s with, 222 s without).
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, "1")
TAGS = [
    "natural-language-processing",
    "computer-vision",
    "mlops",
    "reinforcement-learning",
    "graph-learning",
    "time-series",
    "other",
]

# Seven clear-cut (title, description) pairs per topic: enough for a stratified split and a model
# that can actually learn something in a few seconds.
_TOPICS = {
    "natural-language-processing": [
        (
            "Sentiment analysis with BERT",
            "Fine-tune BERT to classify the sentiment of movie reviews.",
        ),
        ("Machine translation from scratch", "A seq2seq transformer that translates German text."),
        ("Named entity recognition", "Tag people and places in news text with spaCy."),
        ("Text summarization", "Abstractive summarization of long documents with T5."),
        ("Question answering on SQuAD", "Extractive question answering with a language model."),
        ("Word embeddings explained", "How word2vec learns vectors for words in a corpus."),
        ("Chatbot with GPT", "A dialogue chatbot built on a pretrained GPT language model."),
    ],
    "computer-vision": [
        ("Object detection with YOLO", "Real-time object detection in images and video."),
        ("Image segmentation with U-Net", "Semantic segmentation of medical images."),
        ("Face recognition", "Detect and recognise faces in photos with a CNN."),
        ("Style transfer", "Neural style transfer between two images."),
        ("Pose estimation", "Estimate human pose keypoints from camera frames."),
        ("Image classification with ResNet", "Classify images of cats and dogs."),
        ("Super-resolution GAN", "Upscale low-resolution images with a GAN."),
    ],
    "mlops": [
        (
            "Deploying models with Kubernetes",
            "Serve a model in production on a Kubernetes cluster.",
        ),
        ("Experiment tracking with MLflow", "Track runs, metrics and a model registry."),
        ("Model monitoring", "Detect data drift for models in production."),
        ("CI/CD for machine learning", "Automate testing and deployment pipelines for models."),
        ("Feature store", "Serve features consistently for training and inference."),
        ("Docker for ML", "Package a model API with Docker and FastAPI."),
        ("Data versioning with DVC", "Version datasets and pipelines alongside code."),
    ],
    "reinforcement-learning": [
        ("Deep Q-learning on Atari", "A DQN agent that learns to play Atari games from reward."),
        ("PPO explained", "Proximal policy optimization for continuous control."),
        ("Multi-agent reinforcement learning", "Agents that cooperate in a shared environment."),
        ("OpenAI Gym tutorial", "Train an agent on the CartPole environment."),
        (
            "AlphaZero from scratch",
            "Self-play reinforcement learning with Monte Carlo tree search.",
        ),
        ("Actor-critic methods", "A2C and A3C policy gradient agents."),
        ("Multi-armed bandits", "Exploration and reward in bandit problems."),
    ],
    "graph-learning": [
        ("Graph neural networks", "Node classification with a graph convolutional network."),
        ("Knowledge graph embeddings", "Link prediction on a knowledge graph."),
        ("PyTorch Geometric tutorial", "Message passing layers for graph learning."),
        ("Node2vec", "Node embeddings from random walks on a graph."),
        ("Graph attention networks", "GAT layers that attend over a node's neighbours."),
        ("Molecule property prediction", "A GNN that predicts properties of molecular graphs."),
        ("Community detection", "Find clusters of nodes in social network graphs."),
    ],
    "time-series": [
        ("Time series forecasting with LSTM", "Forecast daily sales with a recurrent network."),
        ("Anomaly detection in sensor data", "Find anomalies in multivariate time series."),
        ("Stock price forecasting", "Predict stock prices from historical time series."),
        ("Prophet for forecasting", "Seasonal trend forecasting of demand with Prophet."),
        ("Temporal convolutional networks", "TCNs for sequence modelling of time series."),
        ("ARIMA explained", "Classical forecasting of seasonal time series."),
        ("Energy demand forecasting", "Forecast electricity demand from weather time series."),
    ],
}


# Out-of-scope ML content (the `other` source): tabular ML, statistics, Python tooling, courses.
_OTHER = [
    ("Gradient boosting with XGBoost", "Boosted decision trees for tabular data."),
    ("Statistics for data science", "Hypothesis tests and confidence intervals explained."),
    ("Pandas tips", "Faster dataframe manipulation in Python."),
    ("Linear regression from scratch", "Least squares and regularisation with numpy."),
    ("Machine learning podcast", "Weekly conversations about the machine learning field."),
    ("Intro to machine learning course", "Lectures on classical supervised learning."),
    ("Recommender systems", "Collaborative filtering with matrix factorisation."),
]


def make_other_items(start_id: int = 1001) -> list[dict]:
    """Valid raw rows of out-of-scope items (tag `other`), ids from start_id."""
    return [
        {
            "id": start_id + k,
            "created_on": "2020-03-01 12:00:00",
            "title": title,
            "description": description,
            "tag": "other",
        }
        for k, (title, description) in enumerate(_OTHER)
    ]


def make_items(per_tag: int = 7) -> list[dict]:
    """Valid raw rows (as in projects.json), ids 1..N, per_tag per topic."""
    rows = []
    for tag, pairs in _TOPICS.items():
        for title, description in pairs[:per_tag]:
            rows.append(
                {
                    "id": len(rows) + 1,
                    "created_on": f"2020-0{1 + len(rows) % 9}-1{len(rows) % 10} 12:00:00",
                    "title": title,
                    "description": description,
                    "tag": tag,
                }
            )
    return rows


# Items that mix two topics' words, labelled by the first: arguable on purpose, so a model that
# learns the clear items is still unsure of these (and validation has real errors to calibrate on).
_MIXED = [
    (
        "natural-language-processing",
        "Image captioning with a language model",
        "Describe images and video frames in text with a GPT decoder.",
    ),
    (
        "computer-vision",
        "Scene graphs from images",
        "Detect objects in photos and link them as nodes of a graph.",
    ),
    (
        "time-series",
        "Traffic forecasting with graph networks",
        "Forecast road sensor time series with a graph convolutional network.",
    ),
    (
        "mlops",
        "Monitoring forecasting models in production",
        "Detect drift in deployed demand forecasting pipelines.",
    ),
    (
        "reinforcement-learning",
        "Language agents with reward",
        "A GPT language model agent trained from reward on text games.",
    ),
    (
        "graph-learning",
        "Graph search agents",
        "Reinforcement learning agents that explore nodes of a knowledge graph.",
    ),
]
_SUFFIXES = ("in practice", "explained", "step by step")


def make_learnable_items() -> list[dict]:
    """132 topic items a tiny BERT learns in a dozen epochs: per topic, the 7 clear items plus
    each title with a suffix and the description of another item of the same topic (21), and
    6 items that mix two topics. What the end-to-end fixture `trained` learns from."""
    rows = []
    for tag, pairs in _TOPICS.items():
        for i, (title, description) in enumerate(pairs):
            rows.append((tag, title, description))
            for r in (1, 3):
                suffix = _SUFFIXES[r % len(_SUFFIXES)]
                rows.append((tag, f"{title} {suffix}", pairs[(i + r) % len(pairs)][1]))
    rows += _MIXED
    return [
        {
            "id": k + 1,
            "created_on": f"2020-0{1 + k % 9}-1{k % 10} 12:00:00",
            "title": title,
            "description": description,
            "tag": tag,
        }
        for k, (tag, title, description) in enumerate(rows)
    ]


# `make test` runs on two processes (pytest-xdist, `--dist loadgroup`). Each test goes to a group
# that one worker runs whole: its module, so a module's fixtures are built once; or, for every
# test that uses the session's training run (`trained`, `exported`), one shared group, so that
# run is trained once, not once per worker.
SHARED_RUNS = {"trained", "exported"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        shared = SHARED_RUNS & set(getattr(item, "fixturenames", ()))
        group = "session-training-run" if shared else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


def pytest_addoption(parser):
    parser.addoption(
        "--model-dir",
        default=None,
        help="model folder for the behavioural tests in tests/model (or env MLTAGGER_MODEL_DIR); "
        "`make test-model` passes models/latest",
    )


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.getbasetemp() / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture
def tags() -> list[str]:
    return list(TAGS)


@pytest.fixture
def raw_items() -> list[dict]:
    return make_items()


@pytest.fixture
def items_file(tmp_path, raw_items) -> Path:
    path = tmp_path / "items.json"
    path.write_text(json.dumps(raw_items))
    return path


@pytest.fixture
def data_cfg(items_file):
    """A data config (like conf/data/projects.yaml) over the tiny items file."""
    from omegaconf import OmegaConf

    from mltagger.data.validation import sha256_file

    cfg = OmegaConf.load(REPO / "conf" / "data" / "projects.yaml")
    cfg.sources = [{"name": "tiny", "path": str(items_file), "sha256": sha256_file(items_file)}]
    cfg.min_freq = 2
    cfg.split = {"val_size": 0.2, "test_size": 0.2, "seed": 0}
    cfg.fresh = None  # the shipped fresh set belongs to the shipped data, not to the tiny items
    return cfg


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden 32) with a word-level vocabulary of the tiny items, saved like a
    Hub checkpoint: what `model.name_or_path` points at in tests."""
    import re

    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert")
    words = sorted(
        {
            w
            for it in make_items() + make_other_items() + make_learnable_items()
            for w in re.findall(r"\w+|[^\w\s]", (it["title"] + " " + it["description"]).lower())
        }
    )
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    (folder / "vocab.txt").write_text("\n".join(specials + words) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    # A tokenizer that maps the words to [UNK] would leave every tiny model blind: check it.
    assert tokenizer.tokenize("Graph forecast, zzz") == ["graph", "forecast", ",", "[UNK]"]
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(specials) + len(words),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


# A tiny fresh evaluation set: new wordings of the tiny topics (none a copy of a training item),
# with the fields data/eval/fresh.json has. Ids far from the training ids.
_FRESH = [
    ("natural-language-processing", "Translate text with a small language model", "paper"),
    ("natural-language-processing", "Text summaries with GPT", "post"),
    ("computer-vision", "Detect objects in drone video", "library"),
    ("computer-vision", "Image segmentation for photos", "tutorial"),
    ("mlops", "Deploy and monitor models with Kubernetes", "talk"),
    ("mlops", "Serving pipelines in production", "post"),
    ("reinforcement-learning", "Agents learn games from reward", "paper"),
    ("reinforcement-learning", "Policy optimization for control", "library"),
    ("graph-learning", "Node classification with graph networks", "paper"),
    ("graph-learning", "Knowledge graph link prediction", "post"),
    ("time-series", "Forecast energy demand time series", "library"),
    ("time-series", "Anomaly detection in sensor series", "paper"),
    ("other", "Cheap flights and hotel deals", "spam"),
    ("other", "A new release of a web framework", "news"),
]


def make_fresh_items(start_id: int = 90001) -> list[dict]:
    """Valid rows of a fresh evaluation set (2024 items with kind and reference)."""
    return [
        {
            "id": start_id + k,
            "created_on": f"2024-0{1 + k % 9}-01",
            "title": title,
            "description": "",
            "tag": tag,
            "kind": kind,
            "reference": f"test fixture {k}",
            "non_ml": tag == "other",
        }
        for k, (tag, title, kind) in enumerate(_FRESH)
    ]


def tiny_train_overrides(tmp: Path, items_file: Path, model_dir: Path, *extra: str) -> list[str]:
    """Hydra overrides that train the tiny model on the tiny items into tmp/run, with a tiny
    fresh set evaluated beside test."""
    fresh = tmp / "fresh.json"
    fresh.parent.mkdir(parents=True, exist_ok=True)
    fresh.write_text(json.dumps(make_fresh_items()))
    return [
        f"hydra.run.dir={tmp / 'run'}",
        f"model.name_or_path={model_dir}",
        "model.name=tiny",
        "model.batch_size=8",
        "model.lr=1e-3",
        "data=projects",
        f"data.sources=[{{name: tiny, path: '{items_file}', sha256: null}}]",
        "data.min_freq=2",
        "data.split.val_size=0.2",
        "data.split.test_size=0.2",
        f"data.fresh={{path: '{fresh}', sha256: null}}",
        f"paths.models_dir={tmp / 'models'}",
        "trainer.max_epochs=2",
        *extra,
    ]


def run_job(job: str, *args: str, timeout: int = 300, env: dict | None = None):
    """Run `mltagger <job> args` (as `python -m mltagger`) from the repo, as a user would;
    returns the CompletedProcess."""
    import os
    import subprocess
    import sys

    full_env = {**os.environ, "MLTAGGER_ROOT": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "mltagger", job, *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# How the end-to-end model trains: long enough to learn the tiny items, and a threshold rule
# that ~25 validation items can satisfy (the Wilson lower bound of 25/25 right is 0.87).
LEARN = (
    "trainer.max_epochs=20",
    "trainer.early_stopping_patience=20",
    "model.lr=5e-3",
    "eval.threshold_rule=point",
    "eval.precision_target=0.9",
)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_model_dir):
    """One tiny training run with W&B offline, shared by the checks below: a model that learns
    (val accuracy ~0.9), so its run auto-tags some items and sends others to review."""
    tmp = tmp_path_factory.mktemp("train")
    items_file = tmp / "items.json"
    items_file.write_text(json.dumps(make_learnable_items()))
    proc = run_job(
        "train",
        *tiny_train_overrides(tmp, items_file, tiny_model_dir, "logger=wandb", *LEARN),
        env={"WANDB_MODE": "offline"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp


def gold_soft_labels(overrides: list[str], gold: float = 0.9) -> dict:
    """A teacher file (mltagger.teacher format) for the data these overrides train on, whose
    teacher agrees with the gold labels: the shipped-soft-labels path runs without changing
    what the tiny model learns."""
    from hydra import compose, initialize_config_dir

    from mltagger.data.prepare import prepare_data
    from mltagger.training.teacher import pool_items, soft_labels_file

    keep = [o for o in overrides if o.startswith(("data", "paths"))]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=keep)
    data = prepare_data(cfg.data, REPO)
    labels = data.label_names()
    items = pool_items(data)
    probs = [
        [gold if t == it["tag"] else (1 - gold) / (len(labels) - 1) for t in labels] for it in items
    ]
    import numpy as np

    return soft_labels_file(items, np.array(probs), labels, data, {"name": "gold-agreeing test"})


def export_overrides(tmp, trained, *extra: str) -> list[str]:
    items_file = tmp / "items.json"
    items_file.write_text(json.dumps(make_learnable_items()))
    fresh = tmp / "fresh.json"
    fresh.write_text(json.dumps(make_fresh_items()))
    return [
        f"hydra.run.dir={tmp / 'export'}",
        f"data.fresh={{path: '{fresh}', sha256: null}}",
        "data=projects",
        f"data.sources=[{{name: tiny, path: '{items_file}', sha256: null}}]",
        "data.min_freq=2",
        "data.split.val_size=0.2",
        "data.split.test_size=0.2",
        f"teacher={trained / 'run' / 'model'}",
        # The export chooses its own threshold on val, by the rule the tiny model trained with.
        *[o for o in LEARN if o.startswith("eval.")],
        f"paths.models_dir={tmp / 'models'}",
        # The tiny model's int8 copy agrees on every item here (measured); a little slack for
        # an item on a tie. The bound for real models is in conf/export.yaml.
        "parity.min_agreement.int8=0.9",
        "max_f1_drop=1.0",
        # Two variants (one dynamic, one static) and short timings keep the fixture quick.
        "quantization.variants=[int8,int8-static]",
        "quantization.calibration_items=16",
        "latency.calls=20",
        "latency.batch_items=8",
        "latency.rounds=1",
        *extra,
    ]


@pytest.fixture(scope="session")
def exported(tmp_path_factory, trained):
    """The tiny trained model exported (ONNX fp32 + int8), shared by export and
    service tests: (folder of the export run, its stdout)."""
    tmp = tmp_path_factory.mktemp("export")
    proc = run_job("export", *export_overrides(tmp, trained))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return tmp, proc.stdout


# Texts outside the tiny training data, some clear and some mixing topics: what the end-to-end
# tests feed the trained model, split by its own confidence into sure and unsure items.
PROBES = [
    ("Object detection with YOLO", "Real-time detection in video."),
    ("Graph neural networks", "Node labels on a graph."),
    ("Proximal policy optimization agents", "Reward for continuous control."),
    ("Knowledge graph embeddings", "Link prediction."),
    ("Serving models on Kubernetes", "Deploy and scale it."),
    ("Forecast sales with an LSTM", "Daily time series."),
    ("Language model agents for images", ""),
    ("Image text graph agent", ""),
    ("Monitoring time series agents", ""),
    ("Detect drift in graph images", ""),
    ("Graph agents forecast images", "Text and reward."),
    ("Translate images of graphs", "Agents in production."),
]


def split_by_confidence(model_dir: Path, margin: float = 0.03) -> tuple[list[dict], list[dict]]:
    """(sure, unsure) PROBES for this model folder: confidence at least `margin` above / below
    its threshold, with the prediction. Fails when either list is empty: a model that auto-tags
    everything or nothing exercises only one path of the product."""
    from mltagger.data.text import join_text
    from mltagger.models.predict import Predictor

    predictor = Predictor(model_dir)
    items = [{"title": t, "description": d, "text": join_text(t, d)} for t, d in PROBES]
    threshold = predictor.inference.threshold
    sure, unsure = [], []
    for it, pred in zip(items, predictor.predict(items), strict=True):
        row = {"title": it["title"], "description": it["description"], "pred": pred}
        if pred["confidence"] >= threshold + margin:
            sure.append(row)
        elif pred["confidence"] < threshold - margin:
            unsure.append(row)
    assert sure and unsure, (
        f"{model_dir}: threshold {threshold:.3f}; sure {len(sure)}, unsure {len(unsure)} of "
        f"{len(items)} probes: the end-to-end model must auto-tag some items and review others"
    )
    return sure, unsure


@pytest.fixture(scope="session")
def postgres():
    """A throw-away PostgreSQL for the session (tests/pg.py): its admin URL. Skipped, with the
    reason, only where the binaries are missing; a server that fails to start is an error."""
    from tests import pg

    if not os.environ.get(pg.PG_ENV) and pg.binaries() is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found: PostgreSQL runs skipped")
    with pg.server() as admin_url:
        yield admin_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """The same test on a SQLite file and on an empty PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    from tests import pg

    with pg.fresh_database(request.getfixturevalue("postgres")) as url:
        yield url
