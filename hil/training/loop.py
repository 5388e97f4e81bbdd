"""The training loop, the same for the array and for exact arithmetic.

Forward on the learner's backend (the array's VMMs, or float products), softmax cross-entropy,
backward in numpy with the backend's effective weights, an optimizer step, and the learner turns
the weight changes into pulses (or float additions). Every completed update is journaled through
the recorder with the optimizer's state, so a killed run resumes from its last completed update.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from hil.nn.backend import EvaluationAware, ExactBackend, MatmulBackend
from hil.nn.loss import accuracy, softmax_cross_entropy
from hil.nn.network import Network
from hil.optimizers import Optimizer
from hil.run_layout import EVALUATIONS, JOURNAL, STATE_SLOTS, TRAIN, checkpoint_optimizer, checkpoint_weights
from hil.updates import UpdateStats
from protocols.recording import Recorder, flush

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

JOURNAL_COLUMNS = "update,epoch,loss,batch_accuracy,pulses,devices_changed,seconds"
EVAL_COLUMNS = "update,test_accuracy,test_loss"
EVAL_CHUNK = 500


class Learner(Protocol):
    """Where the weights live and how a change reaches them."""

    @property
    def backend(self) -> MatmulBackend: ...

    def apply(self, delta: dict[str, FloatArray]) -> UpdateStats: ...

    def checkpoint(self, recorder: Recorder, slot: str) -> None:
        """Store under ``slot`` what a resume needs besides the optimizer (after every update)."""

    def snapshot(self, recorder: Recorder) -> None:
        """Store a picture of the weights (at the end of every epoch)."""


class ExactLearner:
    """Float weights changed exactly: the software baseline (the array replaced by arithmetic)."""

    def __init__(self, weights: dict[str, FloatArray], clip: float | None = None) -> None:
        self.weights = weights
        self.clip = clip  # keep |w| at most this (hardware-aware software training)
        self._backend = ExactBackend(weights)

    @property
    def backend(self) -> MatmulBackend:
        return self._backend

    def apply(self, delta: dict[str, FloatArray]) -> UpdateStats:
        for layer, change in delta.items():
            self.weights[layer] += change
            if self.clip is not None:
                np.clip(self.weights[layer], -self.clip, self.clip, out=self.weights[layer])
        return UpdateStats()

    def checkpoint(self, recorder: Recorder, slot: str) -> None:
        for layer, w in self.weights.items():
            recorder.write(checkpoint_weights(slot, layer), w)

    def snapshot(self, recorder: Recorder) -> None:
        pass  # the float weights are in the checkpoint


@dataclass
class Schedule:
    """Which samples each update uses: a fresh seeded permutation per epoch, so any update's
    batch can be recomputed on resume without stored state."""

    n_samples: int
    batch_size: int
    seed: int
    _order: tuple[tuple[int, int, int], IntArray] | None = field(default=None, init=False, repr=False,
                                                                compare=False)  # fmt: skip
    """the last epoch's permutation, by (seed, samples, epoch): 60,000 draws on MNIST, 0.1 ms an
    update when drawn for each"""

    @property
    def batches_per_epoch(self) -> int:
        return max(1, self.n_samples // self.batch_size)

    def batch(self, update: int) -> tuple[int, IntArray]:
        epoch, index = divmod(update, self.batches_per_epoch)
        key = (self.seed, self.n_samples, epoch)
        if self._order is None or self._order[0] != key:
            self._order = (key, np.random.default_rng([self.seed, epoch]).permutation(self.n_samples))
        size = min(self.batch_size, self.n_samples)
        return epoch, self._order[1][index * size : (index + 1) * size].astype(np.int64)


@dataclass
class TrainResult:
    updates_done: int = 0
    final_test_accuracy: float = float("nan")
    best_test_accuracy: float = float("nan")
    pulses: int = 0
    seconds: float = 0.0
    vmm_round_trips: int = 0
    devices: int = 0
    evaluations: list[tuple[int, float, float]] = field(default_factory=list)


def evaluate(
    network: Network, backend: MatmulBackend, x: FloatArray, y: IntArray,
    progress: Callable[[int], object] | None = None,
) -> tuple[float, float]:  # fmt: skip
    """Test accuracy and loss, forward passes in large chunks (one VMM batch per layer per chunk);
    ``progress`` is told the samples of each chunk done (a phase's bar).

    A backend that learns from its products (column gains) learns nothing here, so when a run
    evaluates does not change how it trains.
    """
    chunks = []
    with backend.evaluation() if isinstance(backend, EvaluationAware) else nullcontext():
        for i in range(0, len(x), EVAL_CHUNK):
            chunks.append(network.forward(x[i : i + EVAL_CHUNK], backend, train=False))
            if progress is not None:
                progress(len(chunks[-1]))
    logits = np.concatenate(chunks)
    loss, _ = softmax_cross_entropy(logits, y)
    return accuracy(logits, y), float(loss)


def train(
    network: Network,
    learner: Learner,
    optimizer: Optimizer,
    data: tuple[FloatArray, IntArray, FloatArray, IntArray],
    *,
    updates: int,
    batch_size: int,
    eval_every: int,
    seed: int,
    recorder: Recorder,
    start_update: int = 0,
    trainable: Iterable[str] | None = None,
) -> TrainResult:
    """Run updates ``start_update .. updates-1``; journal each one as it completes."""
    x_train, y_train, x_test, y_test = data
    schedule = Schedule(len(x_train), batch_size, seed)
    keep = set(trainable) if trainable is not None else None
    result = TrainResult(updates_done=start_update)
    recorder.set_attrs(JOURNAL, columns=JOURNAL_COLUMNS)
    recorder.set_attrs(EVALUATIONS, columns=EVAL_COLUMNS)
    recorder.progress(start_update, total=updates)
    started = time.perf_counter()
    for update in range(start_update, updates):
        epoch, batch = schedule.batch(update)
        t0 = time.perf_counter()
        logits = network.forward(x_train[batch], learner.backend, train=True)
        loss, dlogits = softmax_cross_entropy(logits, y_train[batch])
        grads = network.backward(dlogits, learner.backend)
        if keep is not None:
            grads = {layer: g for layer, g in grads.items() if layer in keep}
        stats = learner.apply(optimizer.step(grads))
        batch_accuracy = accuracy(logits, y_train[batch])
        result.pulses += stats.pulses
        result.updates_done = update + 1
        recorder.append(JOURNAL, np.array([update, epoch, loss, batch_accuracy, stats.pulses,
                                           stats.devices_changed, time.perf_counter() - t0]))  # fmt: skip
        # The update's state goes to the slot the last checkpoint did not use; naming it in the
        # journal's attributes last (once its evaluation and snapshot are recorded, and all of it
        # is on disk) makes it the one a resume reads: a kill loses at most the update in flight.
        slot = STATE_SLOTS[(update + 1) % 2]
        for name, array in optimizer.state_arrays().items():
            recorder.write(checkpoint_optimizer(slot, name), array)
        learner.checkpoint(recorder, slot)
        if (update + 1) % eval_every == 0 or update + 1 == updates:
            test_accuracy, test_loss = evaluate(network, learner.backend, x_test, y_test)
            result.evaluations.append((update + 1, test_accuracy, test_loss))
            recorder.append(EVALUATIONS, np.array([update + 1, test_accuracy, test_loss]))
            recorder.progress(0, test=f"{100 * test_accuracy:.1f}%")
        if (update + 1) % schedule.batches_per_epoch == 0:
            learner.snapshot(recorder)
        flush(recorder)
        recorder.set_attrs(TRAIN, completed_updates=update + 1, state=slot)
        flush(recorder)
        recorder.progress(1, loss=f"{loss:.3f}", acc=f"{100 * batch_accuracy:.0f}%", pulses=result.pulses)
    result.seconds = time.perf_counter() - started
    if result.evaluations:
        result.final_test_accuracy = result.evaluations[-1][1]
        result.best_test_accuracy = max(e[1] for e in result.evaluations)
    return result
