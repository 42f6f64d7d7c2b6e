"""The cycle's challenger: the champion itself trained on, warm, with the stream's labels.

Why a warm start and not `make train` from scratch: a cycle must fit in 20 minutes on 2 cores
and must not forget what the champion knows. The pass mixes three kinds of rows:

- the stream's gold labels (weight 1) and author tags (weight = measured author agreement),
- rehearsal rows drawn from the default training data's train split, with the shipped teacher's
  soft labels mixed into their loss exactly as `make train` distils them (alpha, temperature),
  so the recipe keeps its teacher between the slower teacher refreshes (`make teacher`).

Without soft labels for the rehearsal rows the caller fails the `recipe.soft_labels` gate: a
challenger trained on gold labels only is a different recipe. A GPU is used when present.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mltagger.models.modelio import read_model_metadata, write_model_metadata
from mltagger.training.distill import distillation_loss


@dataclass(frozen=True)
class WarmStart:
    passes: int = 2
    lr: float = 3e-5
    batch_size: int = 16
    rehearsal: float = 1.0  # rehearsal rows per stream label (at least `min_rehearsal`)
    min_rehearsal: int = 256
    alpha: float = 0.5  # weight of the teacher term on rehearsal rows
    temperature: float = 2.0
    seed: int = 0
    threads: int | None = None


FILES = (
    "labels.json",
    "gate.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def batch_loss(model, tokenizer, batch: list[tuple], max_length: int, s: WarmStart, device):
    """Weighted cross-entropy on the stream rows; on rehearsal rows the distillation loss of
    `make train` (teacher soft labels at temperature T, weight alpha), mixed by their share."""
    enc = tokenizer(
        [b[0] for b in batch],
        truncation=True,
        padding=True,
        max_length=max_length,
        return_tensors="pt",
    ).to(device)
    logits = model(**enc).logits
    y = torch.tensor([b[1] for b in batch], device=device)
    w = torch.tensor([b[2] for b in batch], device=device, dtype=logits.dtype)
    hard = F.cross_entropy(logits, y, reduction="none")
    soft_rows = [i for i, b in enumerate(batch) if b[3] is not None]
    if not soft_rows:
        return (hard * w).sum() / w.sum()
    ix = torch.tensor(soft_rows, device=device)
    teacher = torch.log(
        torch.tensor(
            np.stack([batch[i][3] for i in soft_rows]), dtype=logits.dtype, device=device
        ).clamp_min(1e-6)
    )
    mixed = distillation_loss(logits[ix], teacher, hard[ix].mean(), s.temperature, s.alpha)
    plain = [i for i in range(len(batch)) if batch[i][3] is None]
    if not plain:
        return mixed
    px = torch.tensor(plain, device=device)
    share = len(soft_rows) / len(batch)
    return share * mixed + (1 - share) * (hard[px] * w[px]).sum() / w[px].sum()


def warm_start(
    champion_dir: str | Path,
    out_dir: str | Path,
    stream: Sequence[dict],
    base: Sequence[dict],
    base_soft: np.ndarray,
    settings: WarmStart,
    *,
    version: str,
    thresholds: dict | None,
    extra: dict,
) -> dict:
    """Train the challenger and write its model folder at `out_dir` (written whole or not at
    all: a tmp folder renamed at the end). `stream` rows: text, tag, weight; `base` rows: text,
    tag, aligned with `base_soft` (n, K). Returns what was trained, for the report."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    s = settings
    started = time.perf_counter()
    if s.threads:
        torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    champion_dir, out_dir = Path(champion_dir), Path(out_dir)
    labels, inference = read_model_metadata(champion_dir)
    index = {t: i for i, t in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(champion_dir)
    model = AutoModelForSequenceClassification.from_pretrained(champion_dir).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=0.01)
    rng = np.random.default_rng(s.seed)
    n_rehearse = min(len(base), max(s.min_rehearsal, round(s.rehearsal * len(stream))))
    losses = []
    model.train()
    for p in range(s.passes):
        base_ix = rng.choice(len(base), size=n_rehearse, replace=False)
        rows = [(r["text"], index[r["tag"]], float(r["weight"]), None) for r in stream] + [
            (base[i]["text"], index[base[i]["tag"]], 1.0, base_soft[i]) for i in base_ix
        ]
        order = rng.permutation(len(rows))
        bar = tqdm(
            range(0, len(order), s.batch_size),
            desc=f"warm start {p + 1}/{s.passes}",
            unit="batch",
            leave=False,
        )
        for start in bar:
            batch = [rows[i] for i in order[start : start + s.batch_size]]
            loss = batch_loss(model, tokenizer, batch, inference.max_length, s, device)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            optimiser.zero_grad()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    model.eval()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.to("cpu").save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    for name in FILES:
        if (champion_dir / name).is_file() and not (tmp / name).is_file():
            shutil.copy2(champion_dir / name, tmp / name)
    decision = dict(inference.extra.get("decision") or {})
    if thresholds is not None:
        decision["thresholds"] = thresholds
    write_model_metadata(
        tmp,
        labels,
        replace(
            inference,
            model_version=version,
            extra={
                **inference.extra,
                **extra,
                "decision": decision,
                "warm_start_from": str(champion_dir),
            },
        ),
    )
    info = {
        "settings": asdict(s),
        "device": device,
        "stream_rows": len(stream),
        "rehearsal_rows": n_rehearse,
        "steps": len(losses),
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (tmp / "warm_start.json").write_text(json.dumps(info, indent=1) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return info
