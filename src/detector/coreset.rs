//! Coreset selection for PatchCore's memory bank (Roth et al., "Towards Total Recall in Industrial Anomaly
//! Detection", CVPR 2022, sec. 3.2): greedy k-center (Sener & Savarese 2018) on a sparse random projection of the
//! patches, as anomalib's `KCenterGreedy`, optionally on a seeded random subset of them so that the cost stops
//! growing with the square of the number of patches.
//!
//! - [`k_center_greedy`] is the exact greedy: each next centre is the row farthest from all centres chosen so far
//!   (ties to the lowest index). It runs in rounds: the rows farthest from the centres are taken aside, the greedy
//!   continues among them for as long as its choice provably is the one the plain greedy over all rows would make
//!   (the farthest of them is farther than every row left out), and then all rows are updated against the round's
//!   centres at once, in cache-sized blocks. Every distance is computed as the plain one-centre-at-a-time greedy
//!   computes it (squared differences summed over the dimensions in order), so the choices are the same, bit for
//!   bit. The update skips the pairs the triangle inequality rules out (as in Elkan's accelerated k-means): each
//!   row remembers its nearest centre `a` and each centre its radius `r_a` (its rows' largest distance); a new
//!   centre `c` at `|a - c| >= 2 r_a` (with a margin of 0.1 % that covers the rounding) cannot be nearer than `a`
//!   to any row of `a`, so a block of rows is compared only with the round's centres that may reach one of its rows.
//!   A skipped pair is one whose computed distance could not have replaced the row's, so the choices stay the same;
//!   the work falls from `rows x centres x dims` to the pairs near enough, plus `centres^2 x dims / 2` for the
//!   centre-to-centre bounds.
//! - [`CoresetPlan`] caps the memory bank at [`PatchCoreConfig::max_bank_rows`](super::PatchCoreConfig): when
//!   `coreset_ratio x patches` exceeds the cap, the greedy picks `cap` rows among `cap / coreset_ratio` candidates
//!   drawn uniformly at random without replacement (seeded, Knuth's selection sampling), so the bank is still the
//!   `coreset_ratio` of the patches the greedy saw. The cost is then `O(patches)` for drawing the candidates plus
//!   a constant `cap^2 / coreset_ratio x dims` for the greedy; below the cap the selection is the exact one.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Stream constant that separates the first centre's random draw from the projection's (kept from the first
/// implementation so that banks refit with the same seed choose the same rows).
const FIRST_CENTRE_STREAM: u64 = 0x9E37_79B9_7F4A_7C15;
/// Stream constant of the candidate subset's random draws.
const CANDIDATE_STREAM: u64 = 0xD1B5_4A32_D192_ED03;

/// Minimal number of dimensions for a Johnson-Lindenstrauss embedding of `n` points with distortion `eps`
/// (scikit-learn `johnson_lindenstrauss_min_dim`, which truncates to an integer).
pub fn johnson_lindenstrauss_min_dim(n: usize, eps: f32) -> usize {
    let eps = eps as f64;
    let denom = eps * eps / 2.0 - eps * eps * eps / 3.0;
    (4.0 * (n.max(2) as f64).ln() / denom) as usize
}

/// Sparse random projection matrix `[k, d]` (Li et al. 2006; scikit-learn `SparseRandomProjection` with
/// `density = 1 / sqrt(d)`): entries `±sqrt(1 / density) / sqrt(k)` with probability `density / 2` each, else 0.
pub fn sparse_random_projection(k: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let density = 1.0 / (d as f64).sqrt();
    let v = ((1.0 / density).sqrt() / (k as f64).sqrt()) as f32;
    (0..k * d)
        .map(|_| {
            let u: f64 = rng.random();
            if u < density / 2.0 {
                v
            } else if u < density {
                -v
            } else {
                0.0
            }
        })
        .collect()
}

/// `m` distinct indices of `0..n`, drawn uniformly at random without replacement, in increasing order (Knuth's
/// selection sampling, TAOCP vol. 2, 3.4.2, algorithm S: one draw per index, integer arithmetic only, so the same
/// on every platform). `m >= n` gives all of `0..n`.
pub fn random_subset(n: usize, m: usize, seed: u64) -> Vec<usize> {
    if m >= n {
        return (0..n).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ CANDIDATE_STREAM);
    let mut out = Vec::with_capacity(m);
    for i in 0..n {
        let need = (m - out.len()) as u64;
        if need == 0 {
            break;
        }
        // Keep index i with probability need / (indices left).
        if rng.random_range(0..(n - i) as u64) < need {
            out.push(i);
        }
    }
    out
}

/// How a memory bank of `patches` rows is chosen under a [`PatchCoreConfig`](super::PatchCoreConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoresetPlan {
    /// Rows kept in the memory bank.
    pub size: usize,
    /// Patches the greedy chooses among: all of them, or a random subset of this many when the cap binds.
    pub candidates: usize,
}

impl CoresetPlan {
    /// The plan for `patches` rows (at least 1), a coreset ratio in (0, 1] and an optional cap (at least 1):
    /// `size = clamp(floor(patches x ratio), 1, patches)` (anomalib's `int(n * ratio)`, at least one row), and
    /// when that exceeds the cap, `size = cap` chosen among `min(patches, ceil(cap / ratio))` candidates.
    pub fn new(patches: usize, coreset_ratio: f32, max_bank_rows: Option<usize>) -> Self {
        // The f32 ratio is read back as the decimal it was written as (0.1f32 -> 0.1).
        let ratio = (coreset_ratio as f64 * 1e7).round() / 1e7;
        let size = ((patches as f64 * ratio).floor() as usize).clamp(1, patches.max(1));
        match max_bank_rows {
            Some(cap) if size > cap => {
                let cap = cap.max(1);
                CoresetPlan { size: cap, candidates: ((cap as f64 / ratio).ceil() as usize).clamp(cap, patches) }
            }
            _ => CoresetPlan { size, candidates: patches },
        }
    }
}

/// `c[m, n] = a[m, k] . b[n, k]^T` (both row-major).
fn matmul_abt(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, c: &mut [f32]) {
    crate::linalg::matmul(m, k, n, a, b, true, c);
}

/// Runs `f` over `[chunk_rows, ...]` pieces of `out`, in parallel on native targets.
pub(crate) fn for_each_chunk<T: Send>(out: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
    #[cfg(target_arch = "wasm32")]
    {
        out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Memory-bank rows (indices into `patches` `[n, dims]`) chosen under `plan`: the candidates (all rows, or
/// [`random_subset`] of `plan.candidates` under `seed`), projected by [`sparse_random_projection`] to
/// [`johnson_lindenstrauss_min_dim`]`(candidates, projection_eps)` dimensions when that is fewer than `dims`, then
/// [`k_center_greedy`] with `seed`. In the greedy's order (first centre first). With as many rows as candidates,
/// the candidates in increasing order.
pub fn select_coreset(patches: &[f32], dims: usize, plan: CoresetPlan, projection_eps: f32, seed: u64) -> Vec<usize> {
    let n = patches.len().checked_div(dims).unwrap_or(0);
    let subset = (plan.candidates < n).then(|| random_subset(n, plan.candidates, seed));
    let c = subset.as_ref().map_or(n, |s| s.len());
    let row = |i: usize| subset.as_ref().map_or(i, |s| s[i]);
    if plan.size >= c {
        return (0..c).map(row).collect();
    }
    let k = johnson_lindenstrauss_min_dim(c, projection_eps);
    // The candidates' features dimension-major, [cols, c]: each greedy update then streams contiguous rows.
    let cols = if k < dims { k } else { dims };
    let mut columns = vec![0.0f32; cols * c];
    if k < dims {
        let proj = sparse_random_projection(k, dims, seed);
        const BLOCK: usize = 1024;
        let blocks: Vec<Vec<f32>> = {
            let mut out: Vec<Vec<f32>> = (0..c.div_ceil(BLOCK)).map(|_| Vec::new()).collect();
            for_each_chunk(&mut out, 1, |bi, slot| {
                let start = bi * BLOCK;
                let rows = (c - start).min(BLOCK);
                let mut gathered = Vec::with_capacity(rows * dims);
                for i in start..start + rows {
                    let r = row(i);
                    gathered.extend_from_slice(&patches[r * dims..(r + 1) * dims]);
                }
                let mut p = vec![0.0f32; rows * k];
                matmul_abt(&gathered, &proj, rows, k, dims, &mut p);
                slot[0] = p;
            });
            out
        };
        for (bi, p) in blocks.iter().enumerate() {
            for (r, v) in p.chunks_exact(k).enumerate() {
                for (j, x) in v.iter().enumerate() {
                    columns[j * c + bi * BLOCK + r] = *x;
                }
            }
        }
    } else {
        for i in 0..c {
            let r = row(i);
            for (j, x) in patches[r * dims..(r + 1) * dims].iter().enumerate() {
                columns[j * c + i] = *x;
            }
        }
    }
    greedy_columns(columns, c, cols, plan.size, seed).into_iter().map(row).collect()
}

/// Greedy k-center coreset (Sener & Savarese 2018) of the rows of `features` `[n, dims]`: returns up to `size` row
/// indices, the first chosen by `seed`, each next one the row farthest from all chosen so far (squared Euclidean
/// distance, ties to the lowest index). Stops early when every remaining row duplicates a chosen one.
pub fn k_center_greedy(features: &[f32], dims: usize, size: usize, seed: u64) -> Vec<usize> {
    if dims == 0 {
        return Vec::new();
    }
    let n = features.len() / dims;
    let mut columns = vec![0.0f32; n * dims];
    for (row, r) in features.chunks_exact(dims).enumerate() {
        for (k, v) in r.iter().enumerate() {
            columns[k * n + row] = *v;
        }
    }
    greedy_columns(columns, n, dims, size, seed)
}

/// Most centres chosen per round before all rows are updated (at most 64: the pruning masks are `u64`).
const ROUND_CENTRES: usize = 64;
/// Rows taken aside per round, per centre to choose.
const POOL_PER_CENTRE: usize = 4;

/// Squared distance of row `i` of `columns` `[dims, n]` to `centre`, summed over the dimensions in order.
fn distance_to(columns: &[f32], n: usize, i: usize, centre: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    for (k, &c) in centre.iter().enumerate() {
        let d = columns[k * n + i] - c;
        acc += d * d;
    }
    acc
}

/// Squared distance of two rows, summed over the dimensions in order (the same sums as [`distance_to`]).
fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    for (x, c) in a.iter().zip(b) {
        let d = x - c;
        acc += d * d;
    }
    acc
}

/// Rows per parallel task of [`update_min_dist`]: about 256 KB of columns, a multiple of every row block.
fn task_rows(dims: usize) -> usize {
    ((65536 / dims.max(1)).clamp(64, 4096) / WIDE_ROW_BLOCK) * WIDE_ROW_BLOCK
}

/// Rows per register block: one AVX2 register (two SSE2 ones, two simd128 ones).
const ROW_BLOCK: usize = 8;
/// Rows per register block with AVX-512: one register.
const WIDE_ROW_BLOCK: usize = 16;
const CENTRE_BLOCK: usize = 4;

/// Squared distances of the `RB` rows from `row0` of `columns` `[dims, n]` to 4 centres (rows of `dims` values),
/// summed over the dimensions in order with a separate multiply and add (as [`distance_to`]); the `4 x RB` sums
/// stay in registers. Each sum is the same whatever `RB`.
#[inline(always)]
fn block_distances<const RB: usize>(
    columns: &[f32],
    n: usize,
    row0: usize,
    dims: usize,
    centres: [&[f32]; CENTRE_BLOCK],
) -> [[f32; RB]; CENTRE_BLOCK] {
    let c = centres.map(|c| &c[..dims]);
    let mut acc = [[0.0f32; RB]; CENTRE_BLOCK];
    for k in 0..dims {
        let x: &[f32; RB] = columns[k * n + row0..k * n + row0 + RB].try_into().expect("a row block");
        for j in 0..CENTRE_BLOCK {
            let cj = c[j][k];
            for r in 0..RB {
                let d = x[r] - cj;
                acc[j][r] += d * d;
            }
        }
    }
    acc
}

/// Relative margin of the pruning bound: the rounding of the squared sums (about `dims x 2^-24` relative) is far
/// below it, so a pair skipped is one whose distance, computed, could never have replaced the row's.
const PRUNE_MARGIN: f32 = 1e-3;
/// `4 (1 + PRUNE_MARGIN)^2`: a new centre `c` cannot be nearer to a row `p` of centre `a` than `a` is when
/// `|a - c|^2 >= PRUNE_FACTOR |p - a|^2` (then `|p - c| >= |a - c| - |p - a| >= (1 + 2 PRUNE_MARGIN) |p - a|`).
const PRUNE_FACTOR: f32 = 4.0 * (1.0 + PRUNE_MARGIN) * (1.0 + PRUNE_MARGIN);
/// Rounds between two re-sorts of the rows by their nearest centre (see [`greedy_columns`]).
const RESORT_ROUNDS: usize = 4;

/// Which of a round's new centres can be nearer to some rows than those rows' own centres (the triangle
/// inequality; see [`PRUNE_FACTOR`]).
struct Gate<'a> {
    /// `[old centres, ROUND_CENTRES]`: squared distance of each old centre to each of the round's centres.
    d2: &'a [f32],
    /// The round's centres.
    m: usize,
}

impl Gate<'_> {
    /// Bit `j` set when the round's centre `j` may be nearer to one of the rows whose nearest centre so far (its
    /// number among the centres chosen before the round) is `assign` and squared distance to it `min_dist`, than
    /// that centre. Rows of one centre side by side (as [`greedy_columns`] keeps them) are taken together, by the
    /// largest distance of them. The rows' state must be the round's start's: a block's mask is taken before the
    /// block is updated.
    fn mask(&self, assign: &[u32], min_dist: &[f32]) -> u64 {
        let mut mask = 0u64;
        let mut r = 0;
        while r < assign.len() {
            let a = assign[r];
            let mut reach = min_dist[r];
            let mut e = r + 1;
            while e < assign.len() && assign[e] == a {
                reach = reach.max(min_dist[e]);
                e += 1;
            }
            let reach = PRUNE_FACTOR * reach;
            let d2 = &self.d2[a as usize * ROUND_CENTRES..a as usize * ROUND_CENTRES + self.m];
            for (j, &d) in d2.iter().enumerate() {
                if d < reach {
                    mask |= 1 << j;
                }
            }
            r = e;
        }
        mask
    }
}

/// One task of [`update_min_dist`]: rows `start..start + md.len()` in blocks of `RB` against the round's `centres`
/// (`[m <= 64, dims]`, row-major) 4 at a time; `asg` gets the number (`base` + the centre's place in the round) of
/// the centre that lowered a row's distance. With a `gate`, a block is compared only with the centres that may
/// reach one of its rows. Returns the (row block, group of 4 centres) pairs computed and all of them, for the
/// diagnostics.
#[allow(clippy::too_many_arguments)] // a hot kernel: its inputs as plain slices
#[inline(always)]
fn update_rows<const RB: usize>(
    md: &mut [f32],
    asg: &mut [u32],
    start: usize,
    columns: &[f32],
    n: usize,
    dims: usize,
    centres: &[f32],
    base: u32,
    gate: Option<&Gate>,
) -> [usize; 2] {
    let m = centres.len() / dims.max(1);
    let all = if m >= 64 { u64::MAX } else { (1u64 << m) - 1 };
    let mask_of = |asg: &[u32], md: &[f32]| gate.map_or(all, |g| g.mask(asg, md));
    let centre = |j: usize| &centres[j * dims..(j + 1) * dims];
    let full = md.len() / RB * RB;
    let mut computed = 0;
    let total = full / RB * m.div_ceil(CENTRE_BLOCK);
    for rb in (0..full).step_by(RB) {
        let mut mask = mask_of(&asg[rb..rb + RB], &md[rb..rb + RB]);
        let out: &mut [f32; RB] = (&mut md[rb..rb + RB]).try_into().expect("a row block");
        let who: &mut [u32; RB] = (&mut asg[rb..rb + RB]).try_into().expect("a row block");
        while mask != 0 {
            // The next 4 centres that may reach the block (the last of them repeated when fewer are left: the same
            // sums, so the same result).
            let mut js = [0usize; CENTRE_BLOCK];
            for q in 0..CENTRE_BLOCK {
                js[q] = if mask != 0 { mask.trailing_zeros() as usize } else { js[q.saturating_sub(1)] };
                mask &= mask.wrapping_sub(1);
            }
            computed += 1;
            let acc = block_distances::<RB>(columns, n, start + rb, dims, js.map(centre));
            for (a, &j) in acc.iter().zip(&js) {
                let c = base + j as u32;
                for r in 0..RB {
                    if a[r] < out[r] {
                        out[r] = a[r];
                        who[r] = c;
                    }
                }
            }
        }
    }
    // The rows after the last whole block.
    for r in full..md.len() {
        let i = start + r;
        let mut mask = mask_of(&asg[r..r + 1], &md[r..r + 1]);
        while mask != 0 {
            let j = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let d = distance_to(columns, n, i, centre(j));
            if d < md[r] {
                md[r] = d;
                asg[r] = base + j as u32;
            }
        }
    }
    [computed, total]
}

/// [`update_rows`] compiled for AVX2 (8 lanes instead of SSE2's 4; no FMA, so the sums are the same).
///
/// # Safety
/// The CPU must support AVX2.
#[allow(clippy::too_many_arguments)] // the kernel's inputs, passed through
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn update_rows_avx2(
    md: &mut [f32],
    asg: &mut [u32],
    start: usize,
    columns: &[f32],
    n: usize,
    dims: usize,
    centres: &[f32],
    base: u32,
    gate: Option<&Gate>,
) -> [usize; 2] {
    update_rows::<ROW_BLOCK>(md, asg, start, columns, n, dims, centres, base, gate)
}

/// [`update_rows`] compiled for AVX-512 (16 lanes; no FMA, so the sums are the same).
///
/// # Safety
/// The CPU must support AVX-512F.
#[allow(clippy::too_many_arguments)] // the kernel's inputs, passed through
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn update_rows_avx512(
    md: &mut [f32],
    asg: &mut [u32],
    start: usize,
    columns: &[f32],
    n: usize,
    dims: usize,
    centres: &[f32],
    base: u32,
    gate: Option<&Gate>,
) -> [usize; 2] {
    update_rows::<WIDE_ROW_BLOCK>(md, asg, start, columns, n, dims, centres, base, gate)
}

/// `min_dist[i] = min(min_dist[i], |row i - c|^2)` for every centre `c` of `centres` `[m <= 64, dims]` (numbered
/// from `base`) and every row of `columns` `[dims, n]`, in parallel tasks of rows and blocks of 8 (16) rows x 4
/// centres; `assign[i]` becomes the number of the centre that lowered row `i`'s distance. Each sum runs over the
/// dimensions in order with a separate multiply and add, exactly as [`distance_to`]. With `d2` (`[old centres,
/// ROUND_CENTRES]`, the squared distances of the centres chosen before to these), the pairs the triangle
/// inequality rules out are skipped ([`Gate`]). Returns the (row block, group of 4 centres) pairs computed and all.
#[allow(clippy::too_many_arguments)] // the greedy's state, passed as plain slices
fn update_min_dist(
    min_dist: &mut [f32],
    assign: &mut [u32],
    columns: &[f32],
    n: usize,
    dims: usize,
    centres: &[f32],
    base: u32,
    d2: Option<&[f32]>,
) -> [usize; 2] {
    let m = centres.len() / dims;
    assert!(m <= 64, "update_min_dist: at most 64 centres at a time");
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    #[cfg(target_arch = "x86_64")]
    let avx512 = std::arch::is_x86_feature_detected!("avx512f");
    let chunk = task_rows(dims);
    let gate = d2.map(|d2| Gate { d2, m });
    let mut tasks: Vec<(&mut [f32], &mut [u32], [usize; 2])> =
        min_dist.chunks_mut(chunk).zip(assign.chunks_mut(chunk)).map(|(a, b)| (a, b, [0; 2])).collect();
    for_each_chunk(&mut tasks, 1, |ci, t| {
        let (md, asg, counts) = &mut t[0];
        let start = ci * chunk;
        let gate = gate.as_ref();
        #[cfg(target_arch = "x86_64")]
        if avx512 {
            // SAFETY: AVX-512F was detected at run time.
            *counts = unsafe { update_rows_avx512(md, asg, start, columns, n, dims, centres, base, gate) };
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            // SAFETY: AVX2 was detected at run time.
            *counts = unsafe { update_rows_avx2(md, asg, start, columns, n, dims, centres, base, gate) };
            return;
        }
        *counts = update_rows::<ROW_BLOCK>(md, asg, start, columns, n, dims, centres, base, gate);
    });
    tasks.iter().fold([0; 2], |s, t| [s[0] + t.2[0], s[1] + t.2[1]])
}

/// Squared distance of two rows with eight running sums (fast, in another order than [`squared_distance`]): only
/// for the pruning bound, whose margin covers the difference.
fn squared_distance_fast(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| (x - y) * (x - y)).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            let d = x[l] - y[l];
            acc[l] += d * d;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `[old centres, ROUND_CENTRES]`: the squared distance of each centre chosen before (`chosen` `[old, dims]`, with
/// the largest squared distance of its rows `radius2`) to each of the round's (`round` `[m, dims]`), or `+inf`
/// where no row of the old centre can be reached (`radius2` 0, or the distance beyond [`PRUNE_FACTOR`] times it).
fn centre_distances(chosen: &[f32], radius2: &[f32], round: &[f32], dims: usize) -> Vec<f32> {
    let mut d2 = vec![f32::INFINITY; radius2.len() * ROUND_CENTRES];
    for_each_chunk(&mut d2, 256 * ROUND_CENTRES, |ci, out| {
        for (r, row) in out.chunks_exact_mut(ROUND_CENTRES).enumerate() {
            let a = ci * 256 + r;
            let reach = PRUNE_FACTOR * radius2[a];
            if reach <= 0.0 {
                continue;
            }
            let ca = &chosen[a * dims..(a + 1) * dims];
            for (v, c) in row.iter_mut().zip(round.chunks_exact(dims)) {
                let d = squared_distance_fast(ca, c);
                if d < reach {
                    *v = d;
                }
            }
        }
    });
    d2
}

/// `radius2[a]` = the largest `min_dist` of the rows assigned to centre `a`, for the `centres` chosen so far.
fn radii(radius2: &mut Vec<f32>, centres: usize, assign: &[u32], min_dist: &[f32]) {
    radius2.clear();
    radius2.resize(centres, 0.0);
    for (&a, &d) in assign.iter().zip(min_dist) {
        let r = &mut radius2[a as usize];
        if d > *r {
            *r = d;
        }
    }
}

/// Sorts the rows (the columns of `columns` `[dims, n]`, and `min_dist`, `assign`, `perm` with them) by their
/// nearest centre (a stable counting sort over the `centres` numbers), so that a block of rows mostly shares a
/// centre ([`Gate::mask`]). The greedy's choices do not depend on this order: ties go by the original index,
/// `perm`.
fn sort_by_centre(
    columns: &mut [f32],
    n: usize,
    centres: usize,
    min_dist: &mut [f32],
    assign: &mut [u32],
    perm: &mut [u32],
) {
    let mut at = vec![0usize; centres + 1];
    for &a in assign.iter() {
        at[a as usize + 1] += 1;
    }
    for c in 0..centres {
        at[c + 1] += at[c];
    }
    let mut idx = vec![0u32; n];
    for (i, &a) in assign.iter().enumerate() {
        idx[at[a as usize]] = i as u32;
        at[a as usize] += 1;
    }
    let mut scratch = vec![0.0f32; n];
    for col in columns.chunks_exact_mut(n) {
        for (s, &i) in scratch.iter_mut().zip(&idx) {
            *s = col[i as usize];
        }
        col.copy_from_slice(&scratch);
    }
    for (s, &i) in scratch.iter_mut().zip(&idx) {
        *s = min_dist[i as usize];
    }
    min_dist.copy_from_slice(&scratch);
    let old: Vec<u32> = assign.to_vec();
    for (a, &i) in assign.iter_mut().zip(&idx) {
        *a = old[i as usize];
    }
    let old: Vec<u32> = perm.to_vec();
    for (p, &i) in perm.iter_mut().zip(&idx) {
        *p = old[i as usize];
    }
}

/// Row `i` of `columns` `[dims, n]` into `out`.
fn gather_row(columns: &[f32], n: usize, i: usize, out: &mut Vec<f32>) {
    let dims = columns.len() / n.max(1);
    out.extend((0..dims).map(|k| columns[k * n + i]));
}

/// `a` ranks before `b` in the greedy's order: farther first, then the lower index.
fn ahead(a: (f32, usize), b: (f32, usize)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// [`k_center_greedy`] on features stored dimension-major, `columns` `[dims, n]` (taken, and reordered: see
/// [`sort_by_centre`]).
fn greedy_columns(mut columns: Vec<f32>, n: usize, dims: usize, size: usize, seed: u64) -> Vec<usize> {
    let size = size.min(n);
    if size == 0 || dims == 0 {
        return Vec::new();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ FIRST_CENTRE_STREAM);
    let first = rng.random_range(0..n);
    let mut chosen = Vec::with_capacity(size);
    chosen.push(first);
    // Per row (in the current order): its original index, its squared distance to the nearest centre so far and
    // that centre's number; per centre: its row and radius (the largest squared distance of its rows).
    let mut perm: Vec<u32> = (0..n as u32).collect();
    let mut min_dist = vec![f32::INFINITY; n];
    let mut assign = vec![0u32; n];
    let mut radius2: Vec<f32> = Vec::with_capacity(size);
    let mut chosen_rows: Vec<f32> = Vec::with_capacity(size * dims);
    let mut centres = Vec::with_capacity(ROUND_CENTRES * dims);
    gather_row(&columns, n, first, &mut centres);
    let mut pairs = update_min_dist(&mut min_dist, &mut assign, &columns, n, dims, &centres, 0, None);
    chosen_rows.extend_from_slice(&centres);
    radii(&mut radius2, 1, &assign, &min_dist);
    let mut order: Vec<u32> = Vec::with_capacity(n);
    let mut pool_rows: Vec<f32> = Vec::new();
    let mut rounds = 0;
    while chosen.len() < size {
        if rounds % RESORT_ROUNDS == 0 {
            sort_by_centre(&mut columns, n, chosen.len(), &mut min_dist, &mut assign, &mut perm);
        }
        rounds += 1;
        let want = (size - chosen.len()).min(ROUND_CENTRES);
        // The pool: the `t` rows ranked first in the greedy's order (farther first, then the lower original
        // index); `edge` is the best row left out.
        let t = (want * POOL_PER_CENTRE).min(n);
        order.clear();
        order.extend(0..n as u32);
        let key = |i: u32| (min_dist[i as usize], perm[i as usize] as usize);
        let cmp = |a: &u32, b: &u32| {
            let (ka, kb) = (key(*a), key(*b));
            if ahead(ka, kb) {
                std::cmp::Ordering::Less
            } else if ahead(kb, ka) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        };
        let edge = if t < n {
            order.select_nth_unstable_by(t, cmp);
            Some(key(order[t]))
        } else {
            None
        };
        let pool: Vec<usize> = order[..t].iter().map(|&i| i as usize).collect();
        let mut pool_dist: Vec<f32> = pool.iter().map(|&i| min_dist[i]).collect();
        pool_rows.clear();
        for &i in &pool {
            gather_row(&columns, n, i, &mut pool_rows);
        }
        centres.clear();
        let mut done = false;
        let mut picked = 0;
        while picked < want {
            // Farthest pool row, ties to the lowest original index.
            let mut best = (f32::NEG_INFINITY, usize::MAX);
            let mut at = 0;
            for (&i, &d) in pool.iter().zip(&pool_dist) {
                if ahead((d, perm[i] as usize), best) {
                    best = (d, perm[i] as usize);
                    at = i;
                }
            }
            // It is the plain greedy's choice only if it ranks before every row outside the pool, whose
            // distances can only have shrunk since the round began.
            if edge.is_some_and(|e| !ahead(best, e)) {
                break;
            }
            if best.0 <= 0.0 {
                done = true; // every remaining row duplicates a chosen one
                break;
            }
            let start = centres.len();
            gather_row(&columns, n, at, &mut centres);
            let c = &centres[start..];
            for (r, d) in pool_rows.chunks_exact(dims).zip(pool_dist.iter_mut()) {
                let nd = squared_distance(r, c);
                if nd < *d {
                    *d = nd;
                }
            }
            chosen.push(best.1);
            picked += 1;
        }
        if !centres.is_empty() {
            let base = (chosen.len() - picked) as u32;
            let d2 = centre_distances(&chosen_rows, &radius2, &centres, dims);
            let p = update_min_dist(&mut min_dist, &mut assign, &columns, n, dims, &centres, base, Some(&d2));
            pairs = [pairs[0] + p[0], pairs[1] + p[1]];
            chosen_rows.extend_from_slice(&centres);
            radii(&mut radius2, chosen.len(), &assign, &min_dist);
        }
        if done {
            break;
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    if std::env::var_os("SONOMALY_CORESET_LOG").is_some() {
        eprintln!(
            "coreset: the greedy computed {:.1} % of the row-block x centre-group pairs ({} of {})",
            100.0 * pairs[0] as f64 / pairs[1].max(1) as f64,
            pairs[0],
            pairs[1],
        );
    }
    #[cfg(target_arch = "wasm32")]
    let _ = pairs;
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect()
    }

    /// The plain greedy, one centre per pass over all rows (the first implementation).
    fn sequential(features: &[f32], dims: usize, size: usize, seed: u64) -> Vec<usize> {
        let n = features.len() / dims;
        let size = size.min(n);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ FIRST_CENTRE_STREAM);
        let mut idx = rng.random_range(0..n);
        let mut min_dist = vec![f32::INFINITY; n];
        let mut chosen = vec![idx];
        while chosen.len() < size {
            let c = &features[idx * dims..(idx + 1) * dims];
            for (j, m) in min_dist.iter_mut().enumerate() {
                let mut acc = 0.0f32;
                for (x, y) in features[j * dims..(j + 1) * dims].iter().zip(c) {
                    acc += (x - y) * (x - y);
                }
                if acc < *m {
                    *m = acc;
                }
            }
            let (mut best, mut best_d) = (0, f32::NEG_INFINITY);
            for (j, &d) in min_dist.iter().enumerate() {
                if d > best_d {
                    best_d = d;
                    best = j;
                }
            }
            if best_d <= 0.0 {
                break;
            }
            idx = best;
            chosen.push(idx);
        }
        chosen
    }

    #[test]
    fn rounds_choose_what_the_plain_greedy_chooses() {
        for (n, dims, size, seed) in [(1000, 3, 300, 1), (3000, 10, 700, 2), (2500, 37, 400, 3), (40, 2, 40, 4)] {
            let x = random(n * dims, seed);
            assert_eq!(k_center_greedy(&x, dims, size, seed), sequential(&x, dims, size, seed), "n {n} dims {dims}");
        }
        // Clusters with many exact ties and duplicates.
        let mut x = Vec::new();
        for i in 0..2000 {
            let c = (i % 7) as f32;
            x.extend_from_slice(&[c, (i % 3) as f32, if i % 11 == 0 { 0.5 } else { 0.0 }]);
        }
        for seed in 0..5 {
            let got = k_center_greedy(&x, 3, 100, seed);
            assert_eq!(got, sequential(&x, 3, 100, seed), "seed {seed}");
            assert!(got.len() < 100, "stops when only duplicates remain");
        }
    }

    /// Clustered data in more dimensions, where the pruning bound skips most pairs: the same choices as the plain
    /// greedy, whatever the cluster spread (tight clusters prune most, overlapping ones least).
    #[test]
    fn pruned_rounds_choose_what_the_plain_greedy_chooses_on_clusters() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for (dims, spread) in [(113, 0.02f32), (113, 0.3), (10, 0.05), (24, 1.0)] {
            let centres = random(40 * dims, dims as u64);
            let n = 3000;
            let mut x = Vec::with_capacity(n * dims);
            for i in 0..n {
                let c = &centres[(i * 7 % 40) * dims..(i * 7 % 40 + 1) * dims];
                x.extend(c.iter().map(|&v| v + spread * (rng.random::<f32>() * 2.0 - 1.0)));
            }
            for size in [90, 600] {
                let got = k_center_greedy(&x, dims, size, 5);
                assert_eq!(got, sequential(&x, dims, size, 5), "dims {dims}, spread {spread}, size {size}");
            }
        }
    }

    #[test]
    fn random_subset_is_sorted_distinct_and_seeded() {
        let s = random_subset(1000, 100, 7);
        assert_eq!(s.len(), 100);
        assert!(s.windows(2).all(|w| w[0] < w[1]) && *s.last().unwrap() < 1000);
        assert_eq!(s, random_subset(1000, 100, 7));
        assert_ne!(s, random_subset(1000, 100, 8));
        assert_eq!(random_subset(5, 9, 0), vec![0, 1, 2, 3, 4]);
        assert_eq!(random_subset(5, 0, 0), Vec::<usize>::new());
        // Every index is about equally likely: 2000 draws of 50 of 200, each index expected 500 times.
        let mut counts = vec![0u32; 200];
        for seed in 0..2000 {
            for i in random_subset(200, 50, seed) {
                counts[i] += 1;
            }
        }
        // Binomial(2000, 0.25): sd 19.4; 5 sd.
        assert!(counts.iter().all(|&c| (c as f64 - 500.0).abs() < 97.0), "{counts:?}");
    }

    #[test]
    fn plan_caps_and_keeps_the_ratio() {
        assert_eq!(CoresetPlan::new(19980, 0.1, None), CoresetPlan { size: 1998, candidates: 19980 });
        assert_eq!(CoresetPlan::new(19980, 0.1, Some(4096)), CoresetPlan { size: 1998, candidates: 19980 });
        assert_eq!(CoresetPlan::new(19980, 0.1, Some(1998)), CoresetPlan { size: 1998, candidates: 19980 });
        assert_eq!(CoresetPlan::new(19980, 0.1, Some(1000)), CoresetPlan { size: 1000, candidates: 10000 });
        assert_eq!(CoresetPlan::new(720_000, 0.1, Some(16384)), CoresetPlan { size: 16384, candidates: 163_840 });
        assert_eq!(CoresetPlan::new(5000, 1.0, Some(100)), CoresetPlan { size: 100, candidates: 100 });
        assert_eq!(CoresetPlan::new(3, 0.1, Some(1)), CoresetPlan { size: 1, candidates: 3 });
        assert_eq!(CoresetPlan::new(1, 0.1, Some(1)), CoresetPlan { size: 1, candidates: 1 });
        assert_eq!(CoresetPlan::new(1000, 0.25, Some(10)), CoresetPlan { size: 10, candidates: 40 });
    }
}
