"""Resumable training: the state saved with each epoch's checkpoint, finding the checkpoint to
resume from, and saving a Hugging Face folder from the main process only.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

CHECKPOINTS = "checkpoints"
BEST = "best"


class TrainState:
    """Loop counters that must survive a resume; saved with accelerator.save_state."""

    def __init__(self) -> None:
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self.best_metric = -math.inf
        self.best_epoch = -1
        self.bad_epochs = 0
        self.history: list[dict] = []

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


def find_checkpoint(resume: str) -> Path:
    """A checkpoint folder from `resume`: the folder itself, or a run folder's newest epoch."""
    path = Path(resume).expanduser()
    if (path / CHECKPOINTS).is_dir():
        path = path / CHECKPOINTS
    if path.name == CHECKPOINTS:
        epochs = sorted(path.glob("epoch_*"), key=lambda p: int(p.name.split("_")[1]))
        if not epochs:
            raise FileNotFoundError(f"resume={resume}: no epoch_* checkpoint in {path}")
        path = epochs[-1]
    if not (path / "train_state.json").is_file():
        raise FileNotFoundError(f"resume={resume}: {path} is not a checkpoint of this loop")
    return path


def save_pretrained(accelerator, model, tokenizer, folder: Path) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
    accelerator.wait_for_everyone()


def save_checkpoint(accelerator, state: TrainState, out_dir: Path) -> None:
    """Save this epoch's full state and drop the previous one (optimizer states are large)."""
    folder = out_dir / CHECKPOINTS / f"epoch_{state.epoch}"
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        (folder / "train_state.json").write_text(json.dumps(state.state_dict(), indent=1))
        for old in (out_dir / CHECKPOINTS).glob("epoch_*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
