#!/usr/bin/env python3
"""Reference outputs for tests/patchcore_parity.rs: PatchCore scoring, the anomaly map and the 3x3 average pool,
computed independently in numpy / scipy (float64). No torch: PyTorch semantics are re-implemented and documented
below.

Writes tests/fixtures/patchcore_ref.safetensors (float32 / int64 tensors, ~90 KB). Run from the crate root:

    python3 tests/reference/patchcore_ref.py

Inputs (all from numpy.random.default_rng(SEED), stored in the fixture, float32):
  bank      [200, 24]  standard normal memory bank
  queries   [60, 24]   rows 0..30: independent standard normal; 30..40: bank rows + N(0, 0.05^2) noise;
                       40..45: exact copies of bank rows (distance 0); 45..60: N(0, 1) + 4 (far from the bank)
  patch_scores [6, 8]  uniform [0, 2) with a hot spot of 5 at (2, 5)
  pool_input [3, 5, 7] standard normal
  resize_input [2, 6, 8] standard normal
  kcenter_features [300, 5] standard normal

References (float64 from the float32 inputs, stored as float32 / int64):
  nearest/distance, nearest/index   brute-force Euclidean nearest bank row of every query.
  clip_score [2, 3]   anomalib PatchcoreModel.compute_anomaly_score for the clips queries[0:45] (row 0) and
                      queries[0:60] (row 1), num_neighbors k = 1, 3, 9 (columns): s* = max patch distance, its patch
                      p and nearest bank row m*; the k bank rows nearest to m* (topk smallest, m* itself first at
                      distance 0); d = |p - bank[support]|; score = (1 - softmax(d)[0]) * s* (k = 1: s*).
  map/kernel [33]     anomalib GaussianBlur2d kernel for sigma 4: size 2 * int(4 sigma + 0.5) + 1 = 33,
                      x = arange(33) - 16, exp(-x^2 / (2 sigma^2)), normalised to sum 1 (kornia get_gaussian_kernel1d).
  map/upsampled [24, 32]  bilinear_align_corners_false(patch_scores, 24, 32), see `bilinear` below.
  map/blurred [24, 32]    upsampled blurred with the 33-tap kernel, rows then columns, reflect border:
                      scipy.ndimage.correlate1d(mode="mirror") = numpy/PyTorch "reflect" (d c b | a b c d | c b a).
                      The 2-D kernel of anomalib is the outer product of the 1-D one, so separable == 2-D conv.
  blur/small_input [5, 7], blur/small [5, 7]  the same blur on a map smaller than the kernel half-width (16): the
                      mirror is applied periodically (scipy), which PyTorch's F.pad(mode="reflect") would refuse.
  resize/up_17x29 [2, 17, 29], resize/down_4x5 [2, 4, 5]  bilinear (align_corners=False) of resize_input.
  pool/output [3, 5, 7]  AvgPool2d(kernel 3, stride 1, padding 1, count_include_pad=True): zero padding, sum of the
                      3x3 neighbourhood / 9.
  kcenter/greedy [300, 20] int64: row s = plain farthest-point greedy (float64 squared distances, ties to the lowest
                      index, start index s first) on kcenter_features, for every possible start s. The Rust seed picks
                      the start; the test looks up the row of Rust's first index.
  kcenter/reliable [300] int64: per start, the length of the prefix of its row in which every choice beats the
                      runner-up by > 1e-4 in squared distance; only that prefix is compared (a near-tie could flip in
                      float32).
  jl/n, jl/eps, jl/min_dim  scikit-learn johnson_lindenstrauss_min_dim: int(4 ln n / (eps^2/2 - eps^3/3))
                      (truncation, `.astype(np.int64)`), evaluated with eps rounded to float32 as the Rust API takes it.

PyTorch F.interpolate(mode="bilinear", align_corners=False, size=(H, W)) semantics (upsample_bilinear2d with no
scale_factor, antialias=False), per axis: scale = in / out; src = (dst + 0.5) * scale - 0.5 clamped below at 0;
i0 = floor(src); i1 = i0 + 1 if i0 < in - 1 else i0; w1 = src - i0, w0 = 1 - w1; then
out = w0r (w0c x[i0r,i0c] + w1c x[i0r,i1c]) + w1r (w0c x[i1r,i0c] + w1c x[i1r,i1c]). Downsampling uses the same
formula (no antialiasing).

Guards: the script asserts margins (>= 1e-3) between the best and second-best bank distance of every query, between
the largest and second-largest patch distance of each clip, between the k-th and (k+1)-th support neighbour, and
so float32 rounding in Rust cannot flip a choice; k-center near-ties are recorded in kcenter/reliable instead.
"""

import os

import numpy as np
import scipy
from scipy.ndimage import correlate1d
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "patchcore_ref.safetensors")
SEED = 20240611
MARGIN = 1e-3
KCENTER_SIZE = 20
GREEDY_MARGIN = 1e-4


def pairwise(a, b):
    """Euclidean distances [len(a), len(b)] in float64, by differences (no expansion)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def clip_score(bank, queries, k):
    """anomalib PatchcoreModel.compute_anomaly_score for one clip, float64."""
    d = pairwise(queries, bank)
    dist = d.min(1)
    loc = d.argmin(1)
    order = np.argsort(-dist, kind="stable")
    assert dist[order[0]] - dist[order[1]] > MARGIN, "argmax patch is ambiguous"
    p = order[0]
    s_star = dist[p]
    if k == 1:
        return s_star
    m_star = loc[p]
    dm = pairwise(bank[m_star : m_star + 1], bank)[0]
    sup = np.argsort(dm, kind="stable")
    assert sup[0] == m_star and dm[sup[1]] > MARGIN, "m* has a duplicate in the bank"
    assert dm[sup[k]] - dm[sup[k - 1]] > MARGIN, "k-th support neighbour is ambiguous"
    to_test = pairwise(queries[p : p + 1], bank[sup[:k]])[0]
    e = np.exp(to_test - to_test.max())
    w = 1.0 - e[0] / e.sum()
    return w * s_star


def bilinear_taps(out_len, in_len):
    scale = in_len / out_len
    dst = np.arange(out_len, dtype=np.float64)
    src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.where(i0 < in_len - 1, i0 + 1, i0)
    w1 = src - i0
    return i0, i1, w1


def bilinear(x, out_h, out_w):
    """PyTorch F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False) on [..., H, W]."""
    x = np.asarray(x, np.float64)
    r0, r1, wr = bilinear_taps(out_h, x.shape[-2])
    c0, c1, wc = bilinear_taps(out_w, x.shape[-1])
    wr = wr[:, None]
    top = x[..., r0, :][..., c0] * (1 - wc) + x[..., r0, :][..., c1] * wc
    bot = x[..., r1, :][..., c0] * (1 - wc) + x[..., r1, :][..., c1] * wc
    return top * (1 - wr) + bot * wr


def gaussian_kernel(sigma):
    size = 2 * int(4.0 * sigma + 0.5) + 1
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def blur(m, sigma):
    k = gaussian_kernel(sigma)
    m = np.asarray(m, np.float64)
    rows = correlate1d(m, k, axis=1, mode="mirror")  # along each row (frequency)
    return correlate1d(rows, k, axis=0, mode="mirror")  # then along each column (time)


def avg_pool3(x):
    x = np.asarray(x, np.float64)
    c, h, w = x.shape
    p = np.zeros((c, h + 2, w + 2))
    p[:, 1:-1, 1:-1] = x
    s = sum(p[:, i : i + h, j : j + w] for i in range(3) for j in range(3))
    return s / 9.0


def greedy(x, start, size):
    """Farthest-point greedy in float64, ties to the lowest index. Returns the selection and the length of its prefix
    whose every choice beats the runner-up by > GREEDY_MARGIN in squared distance (float32 cannot flip those)."""
    x = np.asarray(x, np.float64)
    chosen = [start]
    reliable = None
    min_d = np.full(len(x), np.inf)
    while len(chosen) < size:
        min_d = np.minimum(min_d, ((x - x[chosen[-1]]) ** 2).sum(1))
        order = np.argsort(-min_d, kind="stable")
        if reliable is None and min_d[order[0]] - min_d[order[1]] <= GREEDY_MARGIN:
            reliable = len(chosen)
        chosen.append(int(order[0]))
    return chosen, size if reliable is None else reliable


def main():
    rng = np.random.default_rng(SEED)
    f32 = np.float32
    bank = rng.standard_normal((200, 24)).astype(f32)
    normal = rng.standard_normal((30, 24))
    src = rng.choice(200, 15, replace=False)
    perturbed = bank[src[:10]] + 0.05 * rng.standard_normal((10, 24))
    dup = bank[src[10:]]
    far = rng.standard_normal((15, 24)) + 4.0
    queries = np.concatenate([normal, perturbed, dup, far]).astype(f32)
    assert queries.shape == (60, 24)

    d = pairwise(queries, bank)
    srt = np.sort(d, 1)
    assert (srt[:, 1] - srt[:, 0] > MARGIN).all(), "nearest neighbour is ambiguous"
    nn_dist = d.min(1)
    nn_idx = d.argmin(1)
    assert (nn_dist[40:45] == 0).all() and (nn_idx[40:45] == src[10:]).all()

    scores = np.array([[clip_score(bank, queries[:n], k) for k in (1, 3, 9)] for n in (45, 60)])

    patch_scores = rng.uniform(0.0, 2.0, (6, 8))
    patch_scores[2, 5] = 5.0
    patch_scores = patch_scores.astype(f32)
    up = bilinear(patch_scores, 24, 32)
    blurred = blur(up, 4.0)
    small = rng.standard_normal((5, 7)).astype(f32)

    pool_input = rng.standard_normal((3, 5, 7)).astype(f32)
    resize_input = rng.standard_normal((2, 6, 8)).astype(f32)

    feats = rng.standard_normal((300, 5)).astype(f32)
    runs = [greedy(feats, s, KCENTER_SIZE) for s in range(len(feats))]
    table = np.array([r[0] for r in runs], np.int64)
    reliable = np.array([r[1] for r in runs], np.int64)
    print(f"k-center: {(reliable == KCENTER_SIZE).sum()} of {len(runs)} starts have no near-tie")

    jl_n = np.array([2, 10, 200, 300, 1000, 12345, 1000000], np.int64)
    jl_eps = np.array([0.1, 0.3, 0.5, 0.9], f32)
    nn_, ee = np.meshgrid(jl_n, jl_eps.astype(np.float64), indexing="ij")
    jl = (4 * np.log(nn_) / (ee**2 / 2 - ee**3 / 3)).astype(np.int64)

    tensors = {
        "bank": bank,
        "queries": queries,
        "nearest/distance": nn_dist.astype(f32),
        "nearest/index": nn_idx.astype(np.int64),
        "clip_score": scores.astype(f32),
        "map/patch_scores": patch_scores,
        "map/kernel": gaussian_kernel(4.0).astype(f32),
        "map/upsampled": up.astype(f32),
        "map/blurred": blurred.astype(f32),
        "blur/small_input": small,
        "blur/small": blur(small, 4.0).astype(f32),
        "resize/input": resize_input,
        "resize/up_17x29": bilinear(resize_input, 17, 29).astype(f32),
        "resize/down_4x5": bilinear(resize_input, 4, 5).astype(f32),
        "pool/input": pool_input,
        "pool/output": avg_pool3(pool_input).astype(f32),
        "kcenter/features": feats,
        "kcenter/greedy": table,
        "kcenter/reliable": reliable,
        "jl/n": jl_n,
        "jl/eps": jl_eps,
        "jl/min_dim": jl,
    }
    meta = {
        "seed": str(SEED),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "clip_score": "rows: queries[0:45], queries[0:60]; columns: num_neighbors 1, 3, 9",
    }
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, OUT, metadata=meta)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")
    print("clip scores", scores)


if __name__ == "__main__":
    main()
