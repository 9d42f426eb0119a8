#!/usr/bin/env python3
"""Reference outputs for tests/cfa_parity.rs: CFA's descriptor input (CoordConv coordinates), loss, weight gradient
and patch scores, computed independently in numpy (float64 from float32 inputs).

Writes tests/fixtures/cfa_ref.safetensors (float32 tensors, ~5 KB). Run from the crate root:

    python3 tests/reference/cfa_ref.py

Inputs (numpy.random.default_rng(SEED), stored in the fixture, float32):
  patches   [30, 4]  two window grids of 3 x 5 patches (row-major: time row, then frequency column), N(0, 1)
  weights   [7, 4]   the descriptor: rows 0..4 multiply the patch values, row 4 the time coordinate, row 5 the
                     frequency coordinate, row 6 is the bias; U(-0.5, 0.5)
  centroids [10, 4]  N(0, 1)
  params    [2, 2]   (radius, margin) per case: (1e-5, 0.1) the paper's / anomalib's, (1.2, 0.1) a large radius
                     that makes the repulsion term active

Formulas (anomalib CfaModel / CfaLoss, K = 3 nearest, J = 3 hard negatives):
  AddCoords: a patch at row t of T and column f of F gets 2 t / (T - 1) - 1 and 2 f / (F - 1) - 1.
  phi = [p, ct, cf, 1] . W  (the 1x1 CoordConv);  D[n, m] = |phi_n - c_m|^2 (squared Euclidean).
  With D_n sorted ascending: L = 1000 * (mean_{n, k < K} max(0, D_nk - r^2)
                                        + mean_{n, K <= j < K + J} max(0, r^2 - D_nj - margin)).
  dL/dW = X^T G with G[n] = 1000 / N * (sum_{k < K, D_nk > r^2} 2 (phi_n - c_k) / K
                                       - sum_{j, r^2 - D_nj - margin > 0} 2 (phi_n - c_j) / J);
  the script checks it against central finite differences of L in float64 before writing it.
  score_n = softmin(d_n1..d_nK)_1 * d_n1 with d = sqrt(D) (anomalib AnomalyMapGenerator.compute_score).

Outputs: inputs [30, 7] (the augmented patches), loss [2], grad [2, 7, 4], score [30].
"""
import os

import numpy as np
from safetensors.numpy import save_file

SEED = 15
T, F, DIMS, C, K, J = 3, 5, 4, 10, 3, 3
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "cfa_ref.safetensors")


def coords(n_patches):
    pos = np.arange(n_patches) % (T * F)
    t, f = pos // F, pos % F
    return np.stack([2 * t / (T - 1) - 1, 2 * f / (F - 1) - 1], axis=1)


def augment(p):
    return np.concatenate([p, coords(len(p)), np.ones((len(p), 1))], axis=1)


def distances(x, w, c):
    phi = x @ w
    return phi, ((phi[:, None, :] - c[None, :, :]) ** 2).sum(-1)


def loss(x, w, c, r, margin):
    _, d = distances(x, w, c)
    d = np.sort(d, axis=1)
    att = np.maximum(0.0, d[:, :K] - r * r).mean()
    rep = np.maximum(0.0, r * r - d[:, K:K + J] - margin).mean()
    return 1000.0 * (att + rep)


def grad(x, w, c, r, margin):
    phi, d = distances(x, w, c)
    n = len(x)
    g = np.zeros_like(phi)
    for i in range(n):
        order = np.argsort(d[i], kind="stable")
        for k in order[:K]:
            if d[i, k] - r * r > 0:
                g[i] += 2 * (phi[i] - c[k]) / K
        for j in order[K:K + J]:
            if r * r - d[i, j] - margin > 0:
                g[i] -= 2 * (phi[i] - c[j]) / J
    return x.T @ (g * 1000.0 / n)


def score(x, w, c):
    _, d = distances(x, w, c)
    d = np.sqrt(np.sort(d, axis=1)[:, :K])
    soft = np.exp(-d) / np.exp(-d).sum(axis=1, keepdims=True)
    return soft[:, 0] * d[:, 0]


def main():
    rng = np.random.default_rng(SEED)
    patches = rng.standard_normal((2 * T * F, DIMS)).astype(np.float32)
    weights = rng.uniform(-0.5, 0.5, (DIMS + 3, DIMS)).astype(np.float32)
    centroids = rng.standard_normal((C, DIMS)).astype(np.float32)
    params = np.array([[1e-5, 0.1], [1.2, 0.1]], dtype=np.float32)
    x = augment(patches.astype(np.float64))
    w, c = weights.astype(np.float64), centroids.astype(np.float64)
    losses, grads = [], []
    for r, margin in params.astype(np.float64):
        g = grad(x, w, c, r, margin)
        h = 1e-6
        for idx in np.ndindex(*w.shape):
            wp, wm = w.copy(), w.copy()
            wp[idx] += h
            wm[idx] -= h
            fd = (loss(x, wp, c, r, margin) - loss(x, wm, c, r, margin)) / (2 * h)
            assert abs(fd - g[idx]) <= 1e-5 * max(1.0, abs(fd)), (r, idx, fd, g[idx])
        losses.append(loss(x, w, c, r, margin))
        grads.append(g)
    if not losses[1] > 0 or not (np.abs(grads[1] - grads[0]).max() > 1e-3):
        raise SystemExit("the large-radius case does not exercise the repulsion term")
    tensors = {
        "patches": patches,
        "weights": weights,
        "centroids": centroids,
        "params": params,
        "inputs": x.astype(np.float32),
        "loss": np.array(losses, dtype=np.float32),
        "grad": np.stack(grads).astype(np.float32),
        "score": score(x, w, c).astype(np.float32),
    }
    meta = {"seed": str(SEED), "grid": f"{T}x{F}", "k": str(K), "j": str(J), "script": "tests/reference/cfa_ref.py"}
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, OUT, metadata=meta)
    print(f"wrote {OUT}: loss {losses}")


if __name__ == "__main__":
    main()
