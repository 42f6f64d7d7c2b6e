"""What one training run holds between the steps of the recipe (`mltagger.training.loop.train`).

The steps (`build`, the epoch functions in `loop`, `finish`) each take this one object and fill
in or read the parts they need, instead of passing a dozen values from step to step. A part is
None (or empty) until the step that makes it has run; the recipe's order is the order below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from mltagger.data.prepare import PreparedData
from mltagger.training.checkpoints import TrainState


class UpdatePlan(NamedTuple):
    """How many batches an epoch trains on and how many optimiser updates they make."""

    batches: int  # per epoch, after limit_train_batches
    updates_per_epoch: int
    total_updates: int


@dataclass
class Loaders:
    """The run's data loaders; `fresh` is None when the data config has no fresh set."""

    train: Any
    val: Any
    test: Any
    fresh: Any = None


@dataclass
class TrainingRun:
    """One run of the recipe, from the Accelerator to the W&B run it reports to."""

    # start_run: where the run writes, on which devices, and what it resumes from
    accelerator: Any
    out_dir: Path
    checkpoint: Path | None = None
    wandb_kwargs: dict | None = None  # W&B settings; None when tracking is off
    # load_data: the splits, the model's classes, the decision rule settled before training
    data: PreparedData | None = None
    labels: list[str] = field(default_factory=list)
    decision: dict = field(default_factory=dict)
    model_path: str = ""
    teacher_dir: Path | None = None
    # build_loaders
    tokenizer: Any = None
    loaders: Loaders | None = None
    train_targets: list[int] = field(default_factory=list)
    weighted: bool = False  # some train rows carry a loss weight (down-weighted sources)
    # build_model, load_teacher_signal: the student and what it distils from, if anything
    model: Any = None
    teacher_logits: Any = None
    soft_info: dict = field(default_factory=dict)
    # load_data: the out-of-scope gate's negatives, checked before the epochs (None: no gate)
    gate_negatives: list[dict] | None = None
    gate: Any = None  # the fitted out-of-scope gate (mltagger.models.gate.TextGate)
    # build_optimiser, build_loss
    optimizer: Any = None
    scheduler: Any = None
    plan: UpdatePlan | None = None
    loss_fn: Any = None
    # the loop's counters, saved with every checkpoint; then the W&B run (None when off)
    state: TrainState = field(default_factory=TrainState)
    tracker: Any = None
