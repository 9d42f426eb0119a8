//! CFA (Lee, Lee and Song, "CFA: Coupled-hypersphere-based Feature Adaptation for Target-Oriented Anomaly
//! Localization", IEEE Access 2022), following anomalib's `CfaModel` and `CfaLoss`.
//!
//! A patch descriptor, a 1x1 CoordConv (a linear layer over the patch's `dims` values and its two grid coordinates,
//! plus a bias), maps each patch `p` to `phi(p)` `[dims]` (anomalib's `gamma_d = 1`: as many outputs as inputs).
//! The memory bank holds `C` centroids of the untrained descriptor's outputs on the normal patches: anomalib averages
//! them per grid position (images are aligned); clips are not, and vary in length, so here they are k-means
//! centroids (seeded k-means++, then Lloyd iterations), as anomalib does when `gamma_c > 1`. The memory bank stays
//! fixed while the descriptor is trained on the normal patches with the coupled-hypersphere loss
//!
//! ```text
//! L = 1000 (mean_{n, k <= K} max(0, D_nk - r^2) + mean_{n, K < j <= K + J} max(0, r^2 - D_nj - alpha))
//! ```
//!
//! where `D_n1 <= D_n2 <= ...` are the squared distances of `phi(p_n)` to the centroids, `K = 3` nearest,
//! `J = 3` hard negatives (the next nearest), radius `r = 1e-5` and margin `alpha = 0.1` (anomalib's values and its
//! factor 1000; the hard negatives are anomalib's `distance[..., J:]` of the `K + J` nearest, the same as the paper's
//! `K+1 .. K+J` when `K = J`). With these values the repulsion term is zero for every patch (`D >= 0 > r^2 -
//! alpha`), as in anomalib; it is kept so that other radii and margins work. The optimiser is AdamW (lr 1e-3,
//! weight decay 5e-4, betas 0.9 / 0.999, eps 1e-8, PyTorch's `torch.optim.AdamW`), 30 epochs over seeded
//! shuffled mini-batches of 4 window grids' worth of patches (anomalib's batch of 4 images), on at most 50,000
//! normal patches (a seeded subset beyond); the descriptor starts as PyTorch's `Conv2d` does (weights and bias
//! uniform in `+-1/sqrt(fan_in)`, `fan_in = dims + 2`), drawn from the seed. 1024 centroids, the batch and the cap
//! were chosen by measurement on the dev fan and EnvMix (README, "CFA's defaults"): with few centroids the
//! attraction-only training pulls anomalous patches towards the centroids too and costs ranking.
//!
//! A patch's score is anomalib's `compute_score`: with `d_1 <= .. <= d_K` the Euclidean distances of `phi(p)` to its
//! `K` nearest centroids (found by a matrix product, then summed directly so that wasm and native agree),
//! `softmin(d)_1 * d_1`; the clip score is the largest owned patch score (anomalib: the
//! maximum of the anomaly map). The map is upsampled and smoothed as for the other detectors.
//!
//! Coordinates (CoordConv's `AddCoords`): a patch at time row `t` and frequency column `f` of a window's patch grid
//! `[T', F']` gets `2 t / (T' - 1) - 1` and `2 f / (F' - 1) - 1` (0 when the grid has one row or column).
//!
//! Everything is deterministic under the seed: the row-parallel parts (native only) write disjoint rows and every
//! sum over rows is taken in a fixed order.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::linalg::matmul;

use super::coreset::for_each_chunk;

/// Rows per parallel task in scoring and training.
const TASK_ROWS: usize = 128;

/// CFA's parameters (defaults: the paper's and anomalib's where they have one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CfaConfig {
    /// Centroids of the memory bank (k-means; capped at the number of normal patches).
    pub centroids: usize,
    /// Nearest centroids `K` in the loss and the score (3).
    pub k: usize,
    /// Hard negatives `J` in the loss (3).
    pub j: usize,
    /// Hypersphere radius `r` (1e-5).
    pub radius: f32,
    /// Repulsion margin `alpha` (0.1).
    pub margin: f32,
    /// AdamW learning rate (1e-3).
    pub lr: f32,
    /// AdamW decoupled weight decay (5e-4).
    pub weight_decay: f32,
    /// Passes over the normal patches (30).
    pub epochs: usize,
    /// Window grids' worth of patches per optimiser step (`batch x grid_time x grid_freq` patches, drawn at random
    /// from all windows): anomalib's training batch of 4 images.
    pub batch: usize,
    /// Largest number of normal patches trained on and clustered (a seeded random subset beyond it), so the fit
    /// time stays bounded; `None`: all.
    pub max_patches: Option<usize>,
    /// Lloyd iterations of the k-means (it stops earlier when no assignment changes).
    pub kmeans_iters: usize,
    /// Seed of the initial weights, the k-means++ draws, the subset and the batch order.
    pub seed: u64,
    /// Time rows of the window's patch grid `T'` (set by the fitter).
    pub grid_time: usize,
    /// Frequency columns of the window's patch grid `F'` (set by the fitter).
    pub grid_freq: usize,
}

impl Default for CfaConfig {
    fn default() -> Self {
        CfaConfig {
            centroids: 1024,
            k: 3,
            j: 3,
            radius: 1e-5,
            margin: 0.1,
            lr: 1e-3,
            weight_decay: 5e-4,
            epochs: 30,
            batch: 4,
            max_patches: Some(50_000),
            kmeans_iters: 30,
            seed: 0,
            grid_time: 0,
            grid_freq: 0,
        }
    }
}

impl CfaConfig {
    /// Floats per row of the stored state: the descriptor's outputs, `dims`.
    pub fn state_cols(&self, dims: usize) -> usize {
        dims
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the bad parameter.
    pub fn validate(&self) -> Result<()> {
        if self.centroids == 0 || self.k == 0 || self.batch == 0 {
            return Err(Error::invalid(
                "CFA needs at least one centroid, one nearest centroid (K) and one window grid per step",
            ));
        }
        if self.k > self.centroids {
            return Err(Error::invalid(format!(
                "CFA's K = {} nearest centroids needs at least as many centroids (got {})",
                self.k, self.centroids
            )));
        }
        let finite = [self.radius, self.margin, self.lr, self.weight_decay];
        if finite.iter().any(|v| !v.is_finite() || *v < 0.0) || self.lr.is_nan() || self.lr <= 0.0 {
            return Err(Error::invalid(
                "CFA's radius, margin, learning rate and weight decay must be finite, not negative (lr positive)",
            ));
        }
        if self.max_patches == Some(0) {
            return Err(Error::invalid("CFA's patch cap must be positive (or none)"));
        }
        if self.grid_time == 0 || self.grid_freq == 0 {
            return Err(Error::invalid("CFA's patch grid is not set"));
        }
        Ok(())
    }
}

/// Inputs of the descriptor per patch: its values, two coordinates and the bias's 1.
fn inputs(dims: usize) -> usize {
    dims + 3
}

/// CoordConv coordinate of row `i` of `n`, in `[-1, 1]`.
fn coord(i: usize, n: usize) -> f32 {
    if n <= 1 {
        0.0
    } else {
        2.0 * i as f32 / (n - 1) as f32 - 1.0
    }
}

/// Patches `[n, dims]` of window grids `[time, freq]` (patch `i` at position `i % (time * freq)`, row-major) with
/// their coordinates and a 1 appended: `[n, dims + 3]`.
pub fn augment(patches: &[f32], dims: usize, time: usize, freq: usize) -> Vec<f32> {
    let per = (time * freq).max(1);
    let mut out = Vec::with_capacity(patches.len() / dims.max(1) * inputs(dims));
    for (i, p) in patches.chunks_exact(dims).enumerate() {
        let pos = i % per;
        out.extend_from_slice(p);
        out.push(coord(pos / freq.max(1), time));
        out.push(coord(pos % freq.max(1), freq));
        out.push(1.0);
    }
    out
}

/// Squared distances `[n, c]` of rows `y` `[n, d]` to `centroids` `[c, d]` with the centroids' squared norms
/// `cn` `[c]`: `|y|^2 + |c|^2 - 2 y.c`, clamped at 0 (anomalib's `compute_distance`).
fn squared_distances(y: &[f32], d: usize, centroids: &[f32], cn: &[f32], out: &mut [f32]) {
    let n = y.len() / d;
    let c = cn.len();
    matmul(n, d, c, y, centroids, true, out);
    for (row, yr) in out.chunks_exact_mut(c).zip(y.chunks_exact(d)) {
        let yn: f32 = yr.iter().map(|v| v * v).sum();
        row.iter_mut().zip(cn).for_each(|(v, &cc)| *v = (yn + cc - 2.0 * *v).max(0.0));
    }
}

/// Indices of the `m` smallest values of `row`, ascending (ties to the lower index).
fn smallest(row: &[f32], m: usize, out: &mut Vec<usize>) {
    out.clear();
    for (i, &v) in row.iter().enumerate() {
        if out.len() == m && v >= row[out[m - 1]] {
            continue;
        }
        let at = out.partition_point(|&o| row[o] <= v);
        if out.len() == m {
            out.pop();
        }
        out.insert(at, i);
    }
}

/// CFA's loss on descriptor outputs `y` `[n, d]` against `centroids` `[c, d]`, and its gradient `dL/dy` `[n, d]`
/// (written to `grad`): see the module docs. `scale` multiplies both (1000 / n for a batch of `n` of the mean).
fn loss_rows(
    y: &[f32],
    d: usize,
    centroids: &[f32],
    cn: &[f32],
    config: &CfaConfig,
    scale: f32,
    grad: &mut [f32],
) -> f64 {
    let n = y.len() / d;
    let c = cn.len();
    let (k, j) = (config.k.min(c), config.j.min(c.saturating_sub(config.k.min(c))));
    let r2 = config.radius * config.radius;
    let mut losses = vec![0.0f64; n];
    let chunk = TASK_ROWS;
    let mut work: Vec<(&mut [f32], &mut [f64])> =
        grad.chunks_mut(chunk * d).zip(losses.chunks_mut(chunk)).collect::<Vec<_>>();
    for_each_chunk(&mut work, 1, |ci, slot| {
        let (g, l) = &mut slot[0];
        let rows = l.len();
        let y0 = ci * chunk;
        let yc = &y[y0 * d..(y0 + rows) * d];
        let mut dist = vec![0.0f32; rows * c];
        squared_distances(yc, d, centroids, cn, &mut dist);
        let mut near = Vec::with_capacity(k + j);
        for r in 0..rows {
            let drow = &dist[r * c..(r + 1) * c];
            smallest(drow, k + j, &mut near);
            let yr = &yc[r * d..(r + 1) * d];
            let gr = &mut g[r * d..(r + 1) * d];
            gr.iter_mut().for_each(|v| *v = 0.0);
            let mut loss = 0.0f64;
            for (rank, &m) in near.iter().enumerate() {
                let cm = &centroids[m * d..(m + 1) * d];
                // Attraction of the K nearest, repulsion of the next J: d(D)/dy = 2 (y - c).
                let (excess, sign, count) =
                    if rank < k { (drow[m] - r2, 1.0f32, k) } else { (r2 - drow[m] - config.margin, -1.0f32, j) };
                if excess > 0.0 {
                    loss += excess as f64 / count as f64;
                    let w = sign * 2.0 * scale / count as f32;
                    gr.iter_mut().zip(yr.iter().zip(cm)).for_each(|(gv, (&a, &b))| *gv += w * (a - b));
                }
            }
            l[r] = loss * scale as f64;
        }
    });
    losses.iter().sum()
}

/// Descriptor outputs `[n, d]` of augmented inputs `x` `[n, dims + 3]` with weights `w` `[dims + 3, d]`.
fn describe(x: &[f32], w: &[f32], d: usize) -> Vec<f32> {
    let inp = w.len() / d;
    let n = x.len() / inp;
    let mut y = vec![0.0f32; n * d];
    let mut work: Vec<(&[f32], &mut [f32])> =
        x.chunks(TASK_ROWS * inp).zip(y.chunks_mut(TASK_ROWS * d)).collect::<Vec<_>>();
    for_each_chunk(&mut work, 1, |_, slot| {
        let (xc, yc) = &mut slot[0];
        matmul(xc.len() / inp, inp, d, xc, w, false, yc);
    });
    y
}

/// Loss and weight gradient `[dims + 3, d]` of augmented inputs `x` `[n, dims + 3]` under weights `w`
/// `[dims + 3, d]` (the mean over the batch, times 1000; 0 and a zero gradient for no rows or no centroids).
pub fn loss_and_grad(x: &[f32], w: &[f32], d: usize, centroids: &[f32], config: &CfaConfig) -> (f64, Vec<f32>) {
    let inp = w.len() / d;
    let n = x.len() / inp;
    if n == 0 || centroids.is_empty() {
        return (0.0, vec![0.0; w.len()]);
    }
    let cn: Vec<f32> = centroids.chunks_exact(d).map(|c| c.iter().map(|v| v * v).sum()).collect();
    let y = describe(x, w, d);
    let mut gy = vec![0.0f32; n * d];
    let loss = loss_rows(&y, d, centroids, &cn, config, 1000.0 / n as f32, &mut gy);
    // dL/dW = X^T G: X transposed once, then one matrix product.
    let mut xt = vec![0.0f32; inp * n];
    for (r, row) in x.chunks_exact(inp).enumerate() {
        row.iter().enumerate().for_each(|(c, &v)| xt[c * n + r] = v);
    }
    let mut gw = vec![0.0f32; inp * d];
    matmul(inp, n, d, &xt, &gy, false, &mut gw);
    (loss, gw)
}

/// Softmin-weighted distances (anomalib's `compute_score`): per row of `y` `[n, d]`, with `d_1 <= .. <= d_K` its
/// Euclidean distances to the `K` nearest `centroids` (found by a matrix product, then summed directly in f64),
/// `d_1 / sum_k exp(d_1 - d_k)`.
fn softmin_scores(y: &[f32], d: usize, centroids: &[f32], k: usize) -> Vec<f32> {
    let cn: Vec<f32> = centroids.chunks_exact(d).map(|c| c.iter().map(|v| v * v).sum()).collect();
    let c = cn.len();
    let k = k.min(c).max(1);
    let n = y.len() / d;
    let mut out = vec![0.0f32; n];
    for_each_chunk(&mut out, TASK_ROWS, |ci, o| {
        let y0 = ci * TASK_ROWS;
        let yc = &y[y0 * d..(y0 + o.len()) * d];
        let mut dist = vec![0.0f32; o.len() * c];
        squared_distances(yc, d, centroids, &cn, &mut dist);
        let mut near = Vec::with_capacity(k);
        for (r, s) in o.iter_mut().enumerate() {
            let drow = &dist[r * c..(r + 1) * c];
            smallest(drow, k, &mut near);
            // The matrix product finds the nearest centroids; their distances are then summed directly, without the
            // cancellation of |y|^2 + |c|^2 - 2 y.c (which differs between simd128 and AVX2 for close centroids).
            let yr = &yc[r * d..(r + 1) * d];
            let mut ds: Vec<f64> = near
                .iter()
                .map(|&m| {
                    let cm = &centroids[m * d..(m + 1) * d];
                    yr.iter().zip(cm).map(|(&a, &b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt()
                })
                .collect();
            ds.sort_by(f64::total_cmp);
            let z: f64 = ds.iter().map(|&v| (ds[0] - v).exp()).sum();
            *s = (ds[0] / z) as f32;
        }
    });
    out
}

/// Seeded k-means of rows `y` `[n, d]` into `c` centroids: k-means++ seeding, then up to `iters` Lloyd iterations
/// (an emptied cluster keeps its centroid). Centroids `[min(c, n), d]` (none for no rows).
pub fn kmeans(y: &[f32], d: usize, c: usize, iters: usize, seed: u64) -> Vec<f32> {
    let n = y.len() / d.max(1);
    let c = c.min(n);
    if c == 0 {
        return Vec::new();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6b6d_6561_6e73);
    let mut centroids = Vec::with_capacity(c * d);
    let first = rng.random_range(0..n);
    centroids.extend_from_slice(&y[first * d..(first + 1) * d]);
    let sq = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>();
    let mut min_d: Vec<f64> = y.chunks_exact(d).map(|r| sq(r, &centroids[..d])).collect();
    while centroids.len() < c * d {
        let total: f64 = min_d.iter().sum();
        let pick = if total > 0.0 {
            let mut t = rng.random::<f64>() * total;
            let mut p = n - 1;
            for (i, &v) in min_d.iter().enumerate() {
                if t < v {
                    p = i;
                    break;
                }
                t -= v;
            }
            p
        } else {
            // Every row is on a centroid already: repeat one (k-means keeps it).
            rng.random_range(0..n)
        };
        let row = &y[pick * d..(pick + 1) * d];
        centroids.extend_from_slice(row);
        min_d.iter_mut().zip(y.chunks_exact(d)).for_each(|(m, r)| *m = m.min(sq(r, row)));
    }
    let mut assign = vec![usize::MAX; n];
    let mut dist = vec![0.0f32; n.min(TASK_ROWS) * c];
    let mut near = Vec::with_capacity(1);
    for _ in 0..iters {
        let cn: Vec<f32> = centroids.chunks_exact(d).map(|r| r.iter().map(|v| v * v).sum()).collect();
        let mut changed = false;
        for (b, yb) in y.chunks(TASK_ROWS * d).enumerate() {
            let rows = yb.len() / d;
            squared_distances(yb, d, &centroids, &cn, &mut dist[..rows * c]);
            for r in 0..rows {
                smallest(&dist[r * c..(r + 1) * c], 1, &mut near);
                let i = b * TASK_ROWS + r;
                if assign[i] != near[0] {
                    assign[i] = near[0];
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
        let mut sum = vec![0.0f64; c * d];
        let mut count = vec![0usize; c];
        for (r, &a) in y.chunks_exact(d).zip(&assign) {
            count[a] += 1;
            sum[a * d..(a + 1) * d].iter_mut().zip(r).for_each(|(s, &v)| *s += v as f64);
        }
        for ((row, s), &k) in centroids.chunks_exact_mut(d).zip(sum.chunks_exact(d)).zip(&count) {
            if k > 0 {
                row.iter_mut().zip(s).for_each(|(v, &t)| *v = (t / k as f64) as f32);
            }
        }
    }
    centroids
}

/// AdamW state (PyTorch's `torch.optim.AdamW`, betas 0.9 / 0.999, eps 1e-8, no amsgrad).
struct AdamW {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl AdamW {
    fn new(n: usize) -> Self {
        AdamW { m: vec![0.0; n], v: vec![0.0; n], t: 0 }
    }

    /// One step on `p` with gradient `g`.
    fn step(&mut self, p: &mut [f32], g: &[f32], lr: f32, weight_decay: f32) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        const EPS: f32 = 1e-8;
        self.t += 1;
        let bc1 = 1.0 - B1.powi(self.t);
        let bc2 = 1.0 - B2.powi(self.t);
        for ((p, &g), (m, v)) in p.iter_mut().zip(g).zip(self.m.iter_mut().zip(self.v.iter_mut())) {
            *p *= 1.0 - lr * weight_decay;
            *m = B1 * *m + (1.0 - B1) * g;
            *v = B2 * *v + (1.0 - B2) * g * g;
            let denom = (*v / bc2).sqrt() + EPS;
            *p -= lr / bc1 * *m / denom;
        }
    }
}

/// A fitted CFA: the trained descriptor and the memory bank of centroids.
#[derive(Debug, Clone, PartialEq)]
pub struct Cfa {
    /// Parameters.
    pub config: CfaConfig,
    /// Patch dimension `D` (and the descriptor's outputs).
    pub dims: usize,
    /// The stored state `[D + 3 + C, D]` row-major: the descriptor's weights `[D + 3, D]` (inputs: the patch's `D`
    /// values, its time and frequency coordinates, the bias's 1), then the `C` centroids `[C, D]`.
    pub state: Vec<f32>,
}

impl Cfa {
    /// Fits on normal patches `[n, dims]` of whole window grids (`grid_time x grid_freq` patches each, row-major):
    /// k-means memory bank of the initial descriptor's outputs, then training of the descriptor (module docs).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad config, patches that are not whole window grids of the config's geometry,
    /// or non-finite values (patches, or weights after training).
    pub fn fit(patches: &[f32], dims: usize, config: CfaConfig) -> Result<Self> {
        config.validate()?;
        let per = config.grid_time * config.grid_freq;
        if dims == 0 || patches.is_empty() || !patches.len().is_multiple_of(dims * per) {
            return Err(Error::invalid(format!(
                "CFA is fitted on whole window grids of {} x {} patches of {dims} values",
                config.grid_time, config.grid_freq
            )));
        }
        if patches.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid("CFA: a normal patch holds a non-finite value"));
        }
        let inp = inputs(dims);
        let mut x = augment(patches, dims, config.grid_time, config.grid_freq);
        let n_all = x.len() / inp;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        if let Some(cap) = config.max_patches.filter(|&c| c < n_all) {
            let keep = super::coreset::random_subset(n_all, cap, config.seed);
            x = keep.iter().flat_map(|&i| x[i * inp..(i + 1) * inp].iter().copied()).collect();
        }
        let n = x.len() / inp;
        let bound = 1.0 / ((dims + 2) as f32).sqrt();
        let mut w: Vec<f32> = (0..inp * dims).map(|_| rng.random_range(-bound..bound)).collect();
        let centroids = kmeans(&describe(&x, &w, dims), dims, config.centroids, config.kmeans_iters, config.seed);
        let mut opt = AdamW::new(w.len());
        let mut order: Vec<usize> = (0..n).collect();
        let step = (config.batch * per).min(n);
        let mut batch = Vec::with_capacity(step * inp);
        for _ in 0..config.epochs {
            for i in (1..n).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            for idx in order.chunks(step) {
                batch.clear();
                idx.iter().for_each(|&i| batch.extend_from_slice(&x[i * inp..(i + 1) * inp]));
                let (_, g) = loss_and_grad(&batch, &w, dims, &centroids, &config);
                opt.step(&mut w, &g, config.lr, config.weight_decay);
            }
        }
        if w.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "CFA: training diverged (non-finite weights); the patches may be far too large",
            ));
        }
        let mut state = w;
        state.extend_from_slice(&centroids);
        Ok(Cfa { config, dims, state })
    }

    /// Rebuilds a fitted CFA from its stored state (see [`Cfa::state`]).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a state that is not `[dims + 3 + C, dims]` with `C >= 1`, or a bad config.
    pub fn from_state(state: Vec<f32>, dims: usize, config: CfaConfig) -> Result<Self> {
        config.validate()?;
        if dims == 0 || !state.len().is_multiple_of(dims) || state.len() / dims <= inputs(dims) {
            return Err(Error::invalid(format!(
                "a CFA state holds the descriptor's {} x {dims} weights and at least one centroid of {dims} values",
                inputs(dims)
            )));
        }
        Ok(Cfa { config, dims, state })
    }

    /// Rows of the stored state.
    pub fn len(&self) -> usize {
        self.state.len() / self.dims.max(1)
    }

    /// True without any row (never, once fitted).
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// The descriptor's weights `[dims + 3, dims]`.
    pub fn weights(&self) -> &[f32] {
        &self.state[..inputs(self.dims) * self.dims]
    }

    /// The memory bank's centroids `[C, dims]`.
    pub fn centroids(&self) -> &[f32] {
        &self.state[inputs(self.dims) * self.dims..]
    }

    /// Scores every patch of window grids `[time, freq]` (`patches` `[n, dims]`, patch `i` at position
    /// `i % (time * freq)`): the softmin-weighted distance of its descriptor output to the `K` nearest centroids.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for patches of another dimension.
    pub fn score_grid(&self, patches: &[f32], time: usize, freq: usize) -> Result<Vec<f32>> {
        let d = self.dims;
        if !patches.len().is_multiple_of(d) {
            return Err(Error::invalid(format!("CFA was fitted on {d}-dimensional patches")));
        }
        let y = describe(&augment(patches, d, time, freq), self.weights(), d);
        Ok(softmin_scores(&y, d, self.centroids(), self.config.k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn loss_only(x: &[f32], w: &[f32], d: usize, c: &[f32], cfg: &CfaConfig) -> f64 {
        loss_and_grad(x, w, d, c, cfg).0
    }

    /// The analytic gradient against central finite differences in f64-accumulated loss, on a tiny problem where
    /// the repulsion term is active (large radius) as well as the attraction.
    #[test]
    fn gradient_matches_finite_differences() {
        let dims = 3;
        let inp = inputs(dims);
        let x = augment(&random(12 * dims, 1), dims, 3, 4);
        let w = random(inp * dims, 2);
        let centroids = random(8 * dims, 3);
        for (radius, margin) in [(1e-5, 0.1), (0.9, 0.1)] {
            let cfg = CfaConfig { radius, margin, centroids: 8, grid_time: 3, grid_freq: 4, ..CfaConfig::default() };
            let (_, g) = loss_and_grad(&x, &w, dims, &centroids, &cfg);
            let h = 1e-3f32;
            for i in 0..w.len() {
                let mut wp = w.clone();
                wp[i] += h;
                let mut wm = w.clone();
                wm[i] -= h;
                let fd = (loss_only(&x, &wp, dims, &centroids, &cfg) - loss_only(&x, &wm, dims, &centroids, &cfg))
                    / (2.0 * h as f64);
                let tol = 2e-2 * fd.abs().max(g[i].abs() as f64).max(1.0);
                assert!((fd - g[i] as f64).abs() <= tol, "r {radius}: w[{i}] analytic {} fd {fd}", g[i]);
            }
        }
    }

    #[test]
    fn smallest_is_sorted_and_breaks_ties_low() {
        let mut out = Vec::new();
        smallest(&[3.0, 1.0, 2.0, 1.0, 0.5], 3, &mut out);
        assert_eq!(out, vec![4, 1, 3]);
        smallest(&[2.0, 1.0], 3, &mut out);
        assert_eq!(out, vec![1, 0]);
    }

    #[test]
    fn fit_is_seeded_and_normal_scores_below_outliers() {
        let (t, f, dims) = (6, 5, 4);
        let normal: Vec<f32> = random(4 * t * f * dims, 7).iter().map(|v| v * 0.3).collect();
        let cfg = CfaConfig { centroids: 16, epochs: 5, batch: 1, grid_time: t, grid_freq: f, ..CfaConfig::default() };
        let a = Cfa::fit(&normal, dims, cfg.clone()).unwrap();
        let b = Cfa::fit(&normal, dims, cfg.clone()).unwrap();
        assert_eq!(a, b, "same seed, same fit");
        let other = Cfa::fit(&normal, dims, CfaConfig { seed: 1, ..cfg.clone() }).unwrap();
        assert_ne!(a.state, other.state);
        let mut query = normal[..t * f * dims].to_vec();
        query[..dims].iter_mut().for_each(|v| *v += 5.0);
        let s = a.score_grid(&query, t, f).unwrap();
        let rest = s[1..].iter().cloned().fold(0.0f32, f32::max);
        assert!(s[0] > rest, "outlier {} vs normal max {rest}", s[0]);
        let again = Cfa::from_state(a.state.clone(), dims, cfg).unwrap();
        assert_eq!(again.score_grid(&query, t, f).unwrap(), s);
    }

    #[test]
    fn bad_input_is_refused() {
        let cfg = CfaConfig { grid_time: 2, grid_freq: 2, ..CfaConfig::default() };
        assert!(Cfa::fit(&[0.0; 9], 3, cfg.clone()).is_err(), "3 patches are not whole 2 x 2 grids");
        assert!(Cfa::fit(&[f32::NAN; 12], 3, CfaConfig { grid_time: 1, grid_freq: 4, ..cfg.clone() }).is_err());
        assert!(Cfa::from_state(vec![0.0; 18], 3, cfg.clone()).is_err(), "weights without a centroid");
        assert!(CfaConfig { k: 0, ..cfg.clone() }.validate().is_err());
        assert!(CfaConfig { grid_time: 0, ..cfg }.validate().is_err());
    }
}
