"""Micro-batching: concurrent requests share one forward pass.

Each request of the service runs its own forward pass by default, and on a CPU a pass over 16
items costs far less than 16 passes over one (ONNX Runtime's per-run overhead, and matrix
products that use the cores better). `MicroBatcher` puts the texts of every request in one queue
served by a single inference thread, which runs them together:

- a request that finds the queue empty and the thread idle is run at once: one client alone waits
  for nothing;
- while a pass runs, new requests wait in the queue; the next pass takes all of them, up to
  `max_batch` items (a request larger than that runs alone, never split);
- when requests were already waiting (the service is busy), the thread keeps gathering for at
  most `max_wait_ms` after the first one arrived, then runs what it has;
- a request still waiting `queue_timeout_ms` after it arrived gives up: `Overloaded`, which the
  API answers with 503 and `Retry-After`, never a hang.

Every item is scored by the same model on the same tokens as alone; the only difference is the
padding of shorter texts to the batch's longest, which the attention mask neutralises (scores
within 1e-4 of unbatched, `tests/unit/serving/test_batching.py` and the service test). Requests
for different models (a rollout's candidate) are never mixed in one pass.

Threads, not asyncio: the endpoints are plain functions that FastAPI runs in its thread pool, so
the event loop never waits on the model; the pool's threads block on their request's event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mltagger.core.errors import ConfigError

log = logging.getLogger(__name__)

# (items in the pass, each request's seconds in the queue) after every pass; set by the app
Observer = Callable[[int, Sequence[float]], None]


class Overloaded(RuntimeError):
    """A request waited longer than `queue_timeout_ms` for the model (answered 503)."""

    def __init__(self, waited_s: float, retry_after_s: int) -> None:
        super().__init__(
            f"the model's queue is full: waited {waited_s * 1000:.0f} ms; retry in "
            f"{retry_after_s} s"
        )
        self.retry_after_s = retry_after_s


# The range of each batching setting (the serve config's rules use these too).
LIMITS = {"max_batch": (1, 1024), "max_wait_ms": (0, 1000), "queue_timeout_ms": (1, 600_000)}


@dataclass(frozen=True)
class BatchSettings:
    """The serve config's `batching` section."""

    enabled: bool = True
    max_batch: int = 32
    max_wait_ms: float = 2.0
    queue_timeout_ms: float = 2000.0

    @classmethod
    def from_config(cls, section) -> BatchSettings:
        """From the config section (None: the defaults; its values checked by the serve
        config's rules, `mltagger.serving.config_rules`)."""
        values = dict(section or {})
        unknown = sorted(set(values) - {"enabled", *LIMITS})
        if unknown:
            raise ConfigError(f"batching.{unknown[0]}: unknown key; known: enabled, {list(LIMITS)}")
        return cls(**values)

    def __post_init__(self) -> None:
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"batching.{name}={value!r}: expected a number")
            if not low <= value <= high:
                raise ConfigError(f"batching.{name}={value}: expected {low} to {high}")


class _Request:
    __slots__ = ("arrived", "done", "error", "predictor", "result", "state", "texts")

    def __init__(self, predictor, texts: Sequence[str]) -> None:
        self.predictor, self.texts = predictor, list(texts)
        self.arrived = time.perf_counter()
        self.done = threading.Event()
        self.result: tuple[np.ndarray, np.ndarray | None] | None = None
        self.error: BaseException | None = None
        self.state = "queued"  # queued -> running -> done, or queued -> abandoned


class MicroBatcher:
    """One inference thread over a queue of requests (see the module's docstring)."""

    def __init__(self, settings: BatchSettings, observer: Observer | None = None) -> None:
        self.settings = settings
        self.observer = observer
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.rejected = 0  # requests that gave up (503)

    def encode(self, predictor, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """`predictor.encode(texts)`, run together with whatever else is waiting. Raises
        `Overloaded` after `queue_timeout_ms` in the queue; the model's own errors pass
        through to the caller whose items caused them."""
        if not self.settings.enabled or not texts:
            return predictor.encode(texts)
        request = _Request(predictor, texts)
        with self._cond:
            if self._closed:
                raise Overloaded(0.0, 1)
            self._start()
            self._queue.append(request)
            self._cond.notify_all()
        timeout = self.settings.queue_timeout_ms / 1000
        if not request.done.wait(timeout):
            with self._cond:
                if request.state == "queued":  # never picked up: give up
                    request.state = "abandoned"
                    self.rejected += 1
                    waited = time.perf_counter() - request.arrived
                    raise Overloaded(waited, max(1, round(timeout)))
            request.done.wait()  # running now: its pass ends soon
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._serve, name="mltagger-infer", daemon=True)
            self._thread.start()

    def _take(self) -> list[_Request] | None:
        """The next batch (None once closed and drained): the oldest request and the waiting
        ones for the same model, up to max_batch items; under load, gathering up to max_wait."""
        s = self.settings
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            while first.state != "queued":
                if not self._queue:
                    return []
                first = self._queue.popleft()
            batch, items = [first], len(first.texts)
            busy = bool(self._queue)  # others were waiting: worth gathering a little
            deadline = first.arrived + s.max_wait_ms / 1000
            while items < s.max_batch:
                picked = self._pick(first.predictor, s.max_batch - items)
                if picked is not None:
                    batch.append(picked)
                    items += len(picked.texts)
                    continue
                left = deadline - time.perf_counter()
                if not busy or left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            for r in batch:
                r.state = "running"
            return batch

    def _pick(self, predictor, room: int) -> _Request | None:
        """The oldest waiting request for `predictor` that fits in `room` items (abandoned
        ones are dropped on the way)."""
        for r in list(self._queue):
            if r.state != "queued":
                self._queue.remove(r)
            elif r.predictor is predictor and len(r.texts) <= room:
                self._queue.remove(r)
                return r
        return None

    def _serve(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Request]) -> None:
        started = time.perf_counter()
        texts = [t for r in batch for t in r.texts]
        try:
            logits, embeddings = batch[0].predictor.encode(texts)
        except Exception as e:  # handed to the request that caused it
            if len(batch) > 1:
                for r in batch:  # run alone: the error goes to the request that caused it
                    self._run([r])
                return
            batch[0].error = e
            batch[0].state = "done"
            batch[0].done.set()
            return
        start = 0
        for r in batch:
            end = start + len(r.texts)
            r.result = (logits[start:end], None if embeddings is None else embeddings[start:end])
            r.state = "done"
            r.done.set()
            start = end
        if self.observer is not None:
            try:
                self.observer(len(texts), [started - r.arrived for r in batch])
            except Exception:  # metrics never fail a request
                log.exception("batch observer failed")

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking requests, finish the ones queued (shutdown drains), end the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
