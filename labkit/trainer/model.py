"""A small NumPy MLP, its synthetic data set, and SGD with momentum.

Everything random is drawn from seeded generators so that a run is a pure function
of its settings: the data set from ``SeedSequence([seed, 1])``, the per-batch input
noise from ``(seed, epoch, batch index)``, and the initial weights, shuffling and
dropout from the trainer's own generator, whose state is checkpointed.
"""

from __future__ import annotations

import hashlib

import numpy as np

FEATURES = 32
CLASSES = 4
DROPOUT = 0.1
INPUT_NOISE = 0.05
LAYERS = ("W1", "b1", "W2", "b2", "W3", "b3")


def make_dataset(seed: int, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Return inputs and labels produced by a random 'teacher' network (learnable, seeded)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    x = rng.standard_normal((samples, FEATURES))
    teacher = rng.standard_normal((FEATURES, CLASSES))
    hidden = np.tanh(x @ rng.standard_normal((FEATURES, FEATURES)))
    logits = x @ teacher + 2.0 * hidden @ rng.standard_normal((FEATURES, CLASSES)) / np.sqrt(FEATURES)
    return x, logits.argmax(axis=1).astype(np.int64)


def make_batch(
    data: tuple[np.ndarray, np.ndarray], seed: int, epoch: int, index: int, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gather one micro-batch and add its input noise (what a data-loader worker does)."""
    x, y = data
    noise_rng = np.random.default_rng(np.random.SeedSequence([seed, 2, epoch, index]))
    return x[rows] + INPUT_NOISE * noise_rng.standard_normal((len(rows), FEATURES)), y[rows]


def init_params(rng: np.random.Generator, hidden: int) -> dict[str, np.ndarray]:
    """He-initialised weights of a FEATURES -> hidden -> hidden -> CLASSES network."""
    sizes = [(FEATURES, hidden), (hidden, hidden), (hidden, CLASSES)]
    params = {}
    for layer, (fan_in, fan_out) in enumerate(sizes, start=1):
        params[f"W{layer}"] = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
        params[f"b{layer}"] = np.zeros(fan_out)
    return params


def loss_and_grads(
    params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, rng: np.random.Generator
) -> tuple[float, dict[str, np.ndarray]]:
    """Cross-entropy loss of one micro-batch (with dropout) and its gradients."""
    keep = 1.0 - DROPOUT
    z1 = x @ params["W1"] + params["b1"]
    m1 = (rng.random(z1.shape) < keep) / keep
    h1 = np.maximum(z1, 0.0) * m1
    z2 = h1 @ params["W2"] + params["b2"]
    m2 = (rng.random(z2.shape) < keep) / keep
    h2 = np.maximum(z2, 0.0) * m2
    logits = h2 @ params["W3"] + params["b3"]
    logits = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(-np.log(probs[np.arange(n), y] + 1e-12).mean())
    d3 = probs
    d3[np.arange(n), y] -= 1.0
    d3 /= n
    d2 = (d3 @ params["W3"].T) * m2 * (z2 > 0)
    d1 = (d2 @ params["W2"].T) * m1 * (z1 > 0)
    grads = {
        "W3": h2.T @ d3, "b3": d3.sum(axis=0),
        "W2": h1.T @ d2, "b2": d2.sum(axis=0),
        "W1": x.T @ d1, "b1": d1.sum(axis=0),
    }
    return loss, grads


def sgd_momentum(
    params: dict[str, np.ndarray], velocity: dict[str, np.ndarray],
    grads: dict[str, np.ndarray], lr: float, momentum: float,
) -> None:
    """Apply one SGD-with-momentum update in place (PyTorch's formulation)."""
    for name in LAYERS:
        velocity[name] *= momentum
        velocity[name] += grads[name]
        params[name] -= lr * velocity[name]


def weights_sha256(params: dict[str, np.ndarray]) -> str:
    """SHA-256 of the weights' bytes in a fixed order: equal hashes mean identical weights."""
    digest = hashlib.sha256()
    for name in LAYERS:
        digest.update(np.ascontiguousarray(params[name], dtype="<f8").tobytes())
    return digest.hexdigest()
