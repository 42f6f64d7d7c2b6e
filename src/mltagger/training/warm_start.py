"""The warm-start fine-tune learner of the label replay: the shipped model itself keeps training,
encoder and head, on the reviewers' answers, one short pass a simulated day.

The cheap head of `mltagger.evaluation.replay` learns on frozen embeddings, so it cannot say
whether an order's labels would also teach the encoder. This learner confirms the ranking the
cheap runs found, for the chosen order and oldest-first (one seed: each run fine-tunes about
thirty times). Each day it makes one pass over every answer so far (weighted like the cheap
head's, `pool_weight`) and as many rows again drawn from the shipped recipe's train split
(rehearsal, so the old topics are not forgotten), with AdamW at a small fixed learning rate.
Under gate "logistic" the in-scope gate stays the cheap one, on the shipped encoder's frozen
embeddings: only the topic scores come from the fine-tuned model. Under gate "as_other" the
caller puts the negatives among the rehearsal rows, tagged `other`.

**Resumable.** After each day's pass the model and optimiser are saved (only the newest state
is kept), with the probabilities the replay read from that state, keyed by the labels the pass
saw. A rerun of the same replay
reads those back without training and takes the saved model up at the first day it has no
record of, so a killed run loses at most one day.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from mltagger.core.errors import UserError
from mltagger.evaluation.replay import InScopeGate, ReplaySettings
from mltagger.models.modelio import read_model_metadata
from mltagger.models.rule import softmax, with_gate


class WarmStartLearner:
    """Continues fine-tuning `model_dir` on the replay's answers (see the module docstring)."""

    def __init__(
        self,
        model_dir: str | Path,
        texts: dict[str, Any],
        settings: ReplaySettings,
        state_dir: str | Path,
        *,
        frozen: dict[str, Any] | None = None,
        lr: float = 2e-5,
        batch_size: int = 16,
        threads: int | None = None,
    ) -> None:
        """`texts`: pool (list), val (list), base (list: the rehearsal rows) and base_y (array);
        `frozen`: the shipped encoder's embeddings of pool, val, base and negatives, with
        `other`, for gate "logistic"."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        s = settings
        if s.gate == "logistic" and frozen is None:
            raise UserError("gate 'logistic' needs the frozen embeddings and the negatives")
        if threads:
            torch.set_num_threads(threads)
        self.torch, self.s = torch, s
        self.labels, self.inference = read_model_metadata(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        torch.manual_seed(s.seed)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01)
        self.texts, self.batch_size = texts, batch_size
        self.base_y = np.asarray(texts["base_y"], dtype=int)
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.step = 0  # fits so far; the model in memory is at `self.at`
        self.at = 0
        self.record: dict = self._read(0) or {"key": "start", "val": None, "pool": {}}
        self.gate = None
        self.frozen = frozen
        if s.gate == "logistic":
            f = frozen
            self.gate = InScopeGate(f["base"], self.base_y, f["negatives"], f["other"], s)
            self.gate.fit(f["pool"][:0], np.zeros(0, dtype=int))
        self.trained_days = 0  # passes actually run by this process (0 on a full resume)

    # -- the record of each day's state, for resuming -------------------------------------
    def _path(self, step: int) -> Path:
        return self.dir / f"day_{step:04d}.json"

    def _read(self, step: int) -> dict | None:
        path = self._path(step)
        return json.loads(path.read_text()) if path.exists() else None

    def _write(self) -> None:
        self._path(self.step).write_text(json.dumps(self.record))

    def _model_path(self, step: int) -> Path:
        return self.dir / f"model_{step:04d}.pt"

    def _ensure_model(self, step: int) -> None:
        """Bring the model in memory to its state after day `step` (saved by an earlier run
        when this one read that day back)."""
        if self.at == step:
            return
        saved = self._model_path(step)
        if not saved.exists():
            raise UserError(
                f"{self.dir} has no saved model for day {step}: remove the folder to start "
                "this replay again"
            )
        state = self.torch.load(saved, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.at = step

    # -- the learner protocol -------------------------------------------------------------
    def fit(self, pool_ix: np.ndarray, labels: np.ndarray) -> None:
        pool_ix, labels = np.asarray(pool_ix, dtype=int), np.asarray(labels, dtype=int)
        key = hashlib.sha256(
            json.dumps([pool_ix.tolist(), labels.tolist(), self.s.seed]).encode()
        ).hexdigest()
        if self.gate is not None:
            self.gate.fit(self.frozen["pool"][pool_ix], labels)
        self.step += 1
        known = self._read(self.step)
        if known is not None and known["key"] == key:
            self.record = known  # this day was run before: read it back
            return
        self._ensure_model(self.step - 1)  # the pass of day `step` starts from day `step - 1`
        self._train(pool_ix, labels)
        self.at = self.step
        self.trained_days += 1
        # the new state first, then the day's record, then the previous state: a run killed
        # anywhere in between finds the state its first unrecorded day starts from
        tmp = self._model_path(self.step).with_suffix(".tmp")
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        self.torch.save(state, tmp)
        tmp.replace(self._model_path(self.step))
        self.record = {"key": key, "val": None, "pool": {}}
        self._write()
        self._model_path(self.step - 1).unlink(missing_ok=True)

    def _train(self, pool_ix: np.ndarray, labels: np.ndarray) -> None:
        """One pass over the answers and an equal rehearsal sample of the train split."""
        torch = self.torch
        rng = np.random.default_rng([self.s.seed, self.step])
        n_rehearse = min(len(self.base_y), max(len(pool_ix), self.batch_size))
        base_ix = rng.choice(len(self.base_y), size=n_rehearse, replace=False)
        texts = [self.texts["pool"][i] for i in pool_ix] + [self.texts["base"][i] for i in base_ix]
        y = np.concatenate([labels, self.base_y[base_ix]])
        w = np.concatenate([np.full(len(pool_ix), self.s.pool_weight), np.ones(n_rehearse)])
        order = rng.permutation(len(texts))
        self.model.train()
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            enc = self._encode([texts[i] for i in rows])
            logits = self.model(**enc).logits
            loss = torch.nn.functional.cross_entropy(
                logits, torch.as_tensor(y[rows]), reduction="none"
            )
            weights = torch.as_tensor(w[rows], dtype=loss.dtype)
            loss = (loss * weights).sum() / weights.sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad()
        self.model.eval()

    def _encode(self, texts: list[str]):
        return self.tokenizer(
            texts,
            truncation=True,
            max_length=self.inference.max_length,
            padding=True,
            return_tensors="pt",
        )

    def _scores(self, texts: list[str]) -> np.ndarray:
        self._ensure_model(self.step)
        out = []
        with self.torch.inference_mode():
            for start in range(0, len(texts), 64):
                out.append(self.model(**self._encode(texts[start : start + 64])).logits.numpy())
        logits = np.concatenate(out) if out else np.zeros((0, len(self.labels)))
        return softmax(logits.astype(np.float64), self.inference.temperature)

    def _gated(self, p: np.ndarray, frozen_x: np.ndarray) -> np.ndarray:
        if self.gate is None:
            return p
        return with_gate(p, self.gate.in_scope(frozen_x), self.frozen["other"])

    def proba(self, pool_ix: np.ndarray) -> np.ndarray:
        pool_ix = np.asarray(pool_ix, dtype=int)
        known = self.record["pool"]
        missing = [int(i) for i in pool_ix if str(int(i)) not in known]
        if missing:
            p = self._scores([self.texts["pool"][i] for i in missing])
            known.update({str(i): row.tolist() for i, row in zip(missing, p, strict=True)})
            self._write()
        p = np.array([known[str(int(i))] for i in pool_ix]).reshape(len(pool_ix), -1)
        frozen = self.frozen["pool"][pool_ix] if self.gate is not None else None
        return self._gated(p, frozen)

    def proba_val(self) -> np.ndarray:
        if self.record["val"] is None:
            self.record["val"] = self._scores(list(self.texts["val"])).tolist()
            self._write()
        p = np.asarray(self.record["val"])
        return self._gated(p, self.frozen["val"] if self.gate is not None else None)
