"""Post-hoc calibration of a trained classifier on validation logits: one temperature (the
default; it keeps the ranking, so thresholds stay comparable) or per-class vector scaling (an
option measured against it in `mltagger cv`).
"""

from __future__ import annotations

import numpy as np
import torch


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) on held-out data.

    One scalar: the ranking (and accuracy) is unchanged, only the confidences move, so the review
    threshold chosen on calibrated probabilities means what it says.
    """
    x = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def fit_vector_scaling(
    logits: np.ndarray, labels: np.ndarray, l2: float = 1e-2, max_iter: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class scale w and bias b minimising the NLL of softmax(logits * w + b) on held-out data.

    Vector scaling (Guo et al., ICML 2017) can fix a class the model is systematically over- or
    under-confident about, which one temperature cannot; it has 2K parameters instead of 1, so it
    needs more held-out items (a small L2 pull toward w = 1, b = 0 keeps it stable). `make cv`
    compares both on held-out folds.
    """
    x = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    k = x.shape[1]
    w = torch.ones(k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x * w + b, y)
        loss = loss + l2 * (((w - 1) ** 2).sum() + (b**2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()
