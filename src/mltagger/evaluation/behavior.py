"""Behavioural tests of a model (CheckList style): what it must get right whatever its F1.

Four families, each a list of cases run through any predictor (torch or ONNX):

- minimum functionality: clear-cut items per tag must get that tag as the top class;
- invariance: a typo, a changed author name or added neutral words must not change the top class;
- directional: adding strong words of a tag to a neutral text must raise that tag's probability;
- approved output: random and adversarial input (empty-ish, emoji only, very long, other
  languages, markup) must still come out as one approved tag with valid scores.

`run_suite(predictor)` returns the pass rate per family with the failing cases; `make test-model`
asserts `MIN_PASS_RATE` on a model folder, and `make report` shows the rates.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np

from mltagger.data.text import item_text

MIN_PASS_RATE = {
    "minimum_functionality": 0.8,
    "invariance": 0.85,
    "directional": 0.75,
    "approved_output": 1.0,
}

# (title, description) per tag: unambiguous to a person who knows the field.
CLEAR_CUT = {
    "natural-language-processing": [
        ("Transformers for text classification", "Fine-tune BERT to classify documents."),
        ("Named entity recognition with spaCy", "Extract people and places from news text."),
        ("Machine translation", "A sequence-to-sequence model that translates English to German."),
        ("Sentiment analysis of tweets", "Classify tweets as positive or negative with BERT."),
        ("Question answering", "Answer questions over Wikipedia with a language model."),
        ("Text summarization with T5", "Abstractive summaries of long news articles."),
    ],
    "computer-vision": [
        ("Object detection with YOLO", "Real-time detection of objects in images and video."),
        ("Image segmentation with U-Net", "Pixel-wise segmentation of medical images."),
        ("Face recognition", "Recognise faces in photos with a convolutional network."),
        ("Image classification on CIFAR-10", "Train a ResNet to classify small images."),
        ("Human pose estimation", "Detect body keypoints in camera frames."),
        ("Image generation with GANs", "Generate realistic face images with a StyleGAN."),
    ],
    "mlops": [
        ("Deploying models with Kubernetes", "Serve and scale a model API on a cluster."),
        ("Experiment tracking with MLflow", "Log runs, metrics and models to a registry."),
        ("Monitoring models in production", "Detect data drift and alert on degraded models."),
        ("CI/CD for machine learning", "Automate testing and deployment of ML pipelines."),
        ("Model serving with Docker", "Package a model behind a REST API in a container."),
        ("Feature store", "Serve the same features for training and online inference."),
    ],
    "reinforcement-learning": [
        ("Deep Q-learning on Atari", "A DQN agent learns to play Atari games from reward."),
        ("Proximal policy optimization", "PPO agents for continuous control tasks."),
        ("OpenAI Gym tutorial", "Train an agent to balance CartPole with policy gradients."),
        ("Multi-agent reinforcement learning", "Agents learn to cooperate for a shared reward."),
        ("AlphaZero from scratch", "Self-play reinforcement learning with tree search."),
        ("Reward shaping", "Design rewards so an RL agent learns to navigate a maze."),
    ],
    "graph-learning": [
        ("Graph neural networks", "Node classification with a graph convolutional network."),
        ("Knowledge graph embeddings", "Link prediction between entities of a knowledge graph."),
        ("Graph attention networks", "Attention over a node's neighbours in a graph."),
        ("PyTorch Geometric tutorial", "Message passing layers for learning on graphs."),
        ("Node2vec", "Learn node embeddings from random walks on a graph."),
        ("Molecule property prediction", "A GNN over molecular graphs predicts toxicity."),
    ],
    "time-series": [
        ("Time series forecasting with LSTM", "Forecast daily sales from past sales."),
        ("Anomaly detection in sensor data", "Find anomalies in multivariate time series."),
        ("Forecasting with Prophet", "Seasonal demand forecasting of a time series."),
        ("Stock price forecasting", "Predict tomorrow's price from historical prices."),
        ("Temporal convolutional networks", "TCNs for forecasting long time series."),
        ("ARIMA explained", "Classical forecasting of seasonal time series."),
    ],
    "other": [
        ("Gradient boosting with XGBoost", "Boosted trees for tabular data in Kaggle contests."),
        ("Statistics for data science", "Hypothesis tests, p-values and confidence intervals."),
        ("Pandas tips", "Faster dataframe manipulation in Python."),
        ("Linear regression from scratch", "Least squares with NumPy, step by step."),
        ("Recommender systems", "Collaborative filtering with matrix factorisation."),
        ("Introduction to machine learning course", "Lectures on classical supervised learning."),
    ],
}

# Neutral texts and the words that should pull each of them toward a tag.
NEUTRAL = [
    "A new method for learning representations from data",
    "An open-source library for training deep models",
    "Tips for training neural networks faster",
]
STRONG_WORDS = {
    "natural-language-processing": "for text classification, translation and language models",
    "computer-vision": "for image segmentation and object detection in images",
    "mlops": "for deploying, serving and monitoring models in production with Kubernetes",
    "reinforcement-learning": "for reinforcement learning agents that maximise reward",
    "graph-learning": "for graph neural networks and node classification on graphs",
    "time-series": "for time series forecasting of sales and sensor data",
}
NAMES = ("Alice Martin", "Rahul Gupta", "Chen Wei", "Fatima Ndiaye")
NEUTRAL_ADDITIONS = (" Check it out!", " (2021)", " Feedback welcome.", " Link in the comments.")
ADVERSARIAL = [
    "",
    " ",
    ".",
    "🚀🔥🤖✨",
    "?!?!",
    "a " * 3000,
    "Apprentissage profond pour la détection d'objets dans les images",
    "用于文本分类的深度学习模型",
    "التعلم العميق لمعالجة اللغة الطبيعية",
    "Глубокое обучение для прогнозирования временных рядов",
    "<script>alert('x')</script>",
    "SELECT * FROM items WHERE 1=1; --",
    "0123456789 " * 50,
]


def text(title: str, description: str) -> str:

    return item_text(title, description)


def typo(s: str, rng: random.Random) -> str:
    """Swap two adjacent letters inside one longer word."""
    words = s.split(" ")
    long = [i for i, w in enumerate(words) if len(w) > 4 and w.isalpha()]
    if not long:
        return s + "s"
    i = rng.choice(long)
    w = words[i]
    k = rng.randrange(1, len(w) - 2)
    words[i] = w[:k] + w[k + 1] + w[k] + w[k + 2 :]
    return " ".join(words)


def _family(name: str, results: list[dict]) -> dict:
    passed = sum(r["passed"] for r in results)
    return {
        "family": name,
        "passed": passed,
        "total": len(results),
        "pass_rate": passed / len(results) if results else 1.0,
        "min_pass_rate": MIN_PASS_RATE[name],
        "failures": [r for r in results if not r["passed"]][:20],
    }


def run_suite(predictor, seed: int = 0) -> dict[str, dict]:
    """Every family against one predictor; returns {family: pass rate, failures, ...}."""

    rng = random.Random(seed)
    labels = list(predictor.labels)
    approved = set(predictor.inference.approved_tags)

    def top(texts: list[str]) -> tuple[list[str], np.ndarray]:
        probs = predictor.predict_proba(texts)
        return [labels[i] for i in probs.argmax(axis=1)], probs

    # minimum functionality
    cases = [
        (tag, text(t, d)) for tag, pairs in CLEAR_CUT.items() if tag in labels for t, d in pairs
    ]
    preds, _ = top([c[1] for c in cases])
    mft = [
        {"case": s, "expected": tag, "got": p, "passed": p == tag}
        for (tag, s), p in zip(cases, preds, strict=True)
    ]
    by_tag = {}
    for tag in dict.fromkeys(c["expected"] for c in mft):
        rows = [c for c in mft if c["expected"] == tag]
        by_tag[tag] = sum(c["passed"] for c in rows) / len(rows)

    # invariance: original vs perturbed, same top class
    originals, variants, kinds = [], [], []
    for title, desc in (p for pairs in CLEAR_CUT.values() for p in pairs):
        base = text(title, desc)
        a, b = rng.sample(NAMES, 2)
        for kind, (left, right) in {
            "typo": (base, text(typo(title, rng), typo(desc, rng))),
            "name": (text(title, f"{desc} By {a}."), text(title, f"{desc} By {b}.")),
            "neutral_words": (base, text(title, desc + rng.choice(NEUTRAL_ADDITIONS))),
        }.items():
            originals.append(left)
            variants.append(right)
            kinds.append(kind)
    before, _ = top(originals)
    after, _ = top(variants)
    inv = [
        {"case": f"{k}: {o!r} -> {v!r}", "got": f"{b} -> {a}", "passed": a == b}
        for k, o, v, b, a in zip(kinds, originals, variants, before, after, strict=True)
    ]

    # directional: strong words raise the tag's probability
    dir_cases = [
        (tag, base, f"{base} {words}")
        for tag, words in STRONG_WORDS.items()
        if tag in labels
        for base in NEUTRAL
    ]
    _, p_before = top([c[1] for c in dir_cases])
    _, p_after = top([c[2] for c in dir_cases])
    directional = []
    for k, (tag, _base, changed) in enumerate(dir_cases):
        j = labels.index(tag)
        directional.append(
            {
                "case": f"{changed!r}",
                "expected": tag,
                "got": f"p({tag}) {p_before[k, j]:.3f} -> {p_after[k, j]:.3f}",
                "passed": bool(p_after[k, j] > p_before[k, j]),
            }
        )

    # approved output on random and adversarial input, through the product's decision rule
    rand = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789 ") for _ in range(40))
        for _ in range(10)
    ]
    inputs = ADVERSARIAL + rand
    outputs = predictor.predict([{"text": s} for s in inputs])
    approved_rows = []
    for s, out in zip(inputs, outputs, strict=True):
        ok = (
            out["tag"] in approved
            and math.isfinite(out["confidence"])
            and 0.0 <= out["confidence"] <= 1.0
            and abs(sum(out["scores"].values()) - 1.0) < 1e-3
        )
        approved_rows.append({"case": repr(s[:60]), "got": out["tag"], "passed": ok})

    suite = {
        "minimum_functionality": {**_family("minimum_functionality", mft), "by_tag": by_tag},
        "invariance": _family("invariance", inv),
        "directional": _family("directional", directional),
        "approved_output": _family("approved_output", approved_rows),
    }
    return suite


def write_suite(suite: dict, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(suite, indent=1, ensure_ascii=False) + "\n")
    return path


def format_suite(suite: dict) -> str:
    lines = ["| family | passed | pass rate | required |", "|---|---:|---:|---:|"]
    for name, fam in suite.items():
        lines.append(
            f"| {name} | {fam['passed']}/{fam['total']} | {fam['pass_rate']:.1%} | "
            f"{fam['min_pass_rate']:.0%} |"
        )
    return "\n".join(lines)
