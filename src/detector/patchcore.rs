//! PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).
//!
//! Fitting keeps a coreset of the normal patches (greedy k-center selection on a seeded sparse random projection,
//! as anomalib's `KCenterGreedy`, except that the first, random centre is part of the coreset), at most
//! [`PatchCoreConfig::max_bank_rows`] rows of it: beyond that the greedy runs on a seeded random subset of the
//! patches (see [`super::coreset`]), so the cost of fitting grows linearly with the normal audio. Scoring finds
//! each query patch's nearest memory-bank patch; distances are ranked with the expansion
//! `|x|^2 - 2 x.y + |y|^2`, as matrix products in chunks (bounded memory) or, on x86-64 with AVX-512 (up to
//! [`FUSED_MAX_DIMS_AVX512`] dimensions) or AVX2 and FMA (up to [`FUSED_MAX_DIMS`]) and in wasm32 with simd128 (up
//! to [`FUSED_MAX_DIMS_SIMD128`]), by a kernel that keeps the dot products in registers, and the winner's distance
//! is then recomputed exactly. The clip score is the largest patch distance re-weighted by the paper's eq. 7 with
//! `k = 9` support neighbours (anomalib `compute_anomaly_score`).

use serde::{Deserialize, Serialize};

use super::coreset::for_each_chunk;
pub use super::coreset::{
    johnson_lindenstrauss_min_dim, k_center_greedy, random_subset, select_coreset, sparse_random_projection,
    CoresetPlan,
};
use crate::error::{Error, Result};

/// Default [`PatchCoreConfig::max_bank_rows`]: the largest memory bank a fit keeps.
pub const DEFAULT_MAX_BANK_ROWS: usize = 16384;

/// PatchCore's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchCoreConfig {
    /// Fraction of the normal patches kept in the memory bank (anomalib default 0.1).
    pub coreset_ratio: f32,
    /// Support neighbours for the clip-score re-weighting (anomalib default 9).
    pub num_neighbors: usize,
    /// Seed of the random projection, the candidate subset and the first coreset centre.
    pub seed: u64,
    /// Johnson-Lindenstrauss `eps` of the sparse random projection used only for coreset selection
    /// (anomalib: 0.9).
    pub projection_eps: f32,
    /// Largest memory bank, rows (default [`DEFAULT_MAX_BANK_ROWS`]). When `coreset_ratio` of the patches is more,
    /// the greedy picks this many rows among `max_bank_rows / coreset_ratio` patches drawn at random (seeded), so
    /// fitting costs `O(patches)` and scoring a bounded time; below it the selection is the exact greedy over all
    /// patches. `None`: no cap, the exact greedy however many patches there are (its cost grows with their square).
    /// Banks written before the cap existed have no such field and read as `None`, which is how they were fitted;
    /// `None` is not written, so their metadata and checksum stay the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bank_rows: Option<usize>,
}

impl Default for PatchCoreConfig {
    fn default() -> Self {
        PatchCoreConfig {
            coreset_ratio: 0.1,
            num_neighbors: 9,
            seed: 0,
            projection_eps: 0.9,
            max_bank_rows: Some(DEFAULT_MAX_BANK_ROWS),
        }
    }
}

impl PatchCoreConfig {
    /// Checks ranges.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if `coreset_ratio` is not in (0, 1], `num_neighbors` is 0, `projection_eps` is not
    /// in (0, 1) or `max_bank_rows` is 0.
    pub fn validate(&self) -> Result<()> {
        if !(self.coreset_ratio > 0.0 && self.coreset_ratio <= 1.0) {
            return Err(Error::invalid(format!("coreset ratio must be in (0, 1], got {}", self.coreset_ratio)));
        }
        if self.num_neighbors == 0 {
            return Err(Error::invalid("PatchCore needs at least 1 neighbour for the clip score"));
        }
        if !(self.projection_eps > 0.0 && self.projection_eps < 1.0) {
            return Err(Error::invalid("projection eps must be in (0, 1)"));
        }
        if self.max_bank_rows == Some(0) {
            return Err(Error::invalid("the memory bank needs at least 1 row: give a maximum of 1 or more"));
        }
        Ok(())
    }

    /// How a fit on `patches` normal patches chooses its memory bank under this config.
    pub fn plan(&self, patches: usize) -> CoresetPlan {
        CoresetPlan::new(patches, self.coreset_ratio, self.max_bank_rows)
    }
}

/// A fitted PatchCore: the memory bank `[n, dims]`, with the source of each row when known.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchCore {
    /// Parameters it was fitted with.
    pub config: PatchCoreConfig,
    /// Patch dimension `D`.
    pub dims: usize,
    /// Memory bank `[n, dims]` row-major.
    pub memory_bank: Vec<f32>,
    norms: Vec<f32>,
    /// Source of each memory-bank row `[n]` (see [`source_id`]), or empty when unknown (banks written before
    /// sources were kept). Lets a normal clip be scored against the rows that did not come from it.
    sources: Vec<u64>,
    /// When this CPU (or wasm build) runs a fused kernel for the bank's dimensions ([`fused_for`]): the memory bank
    /// in blocks of [`FUSED_ROWS`] rows, each block column-major (`[blocks, dims, FUSED_ROWS]`, the last block
    /// padded with zero rows), for the fused kernels ([`fused_pass`]); else empty.
    blocks: Vec<f32>,
    /// Squared norms padded to whole blocks with `+inf` (padding rows never win), or empty.
    block_norms: Vec<f32>,
}

/// Source id of the patches of part `part` (0 for a whole clip, at most 255) of the clip with fingerprint
/// `clip` (see [`crate::pipeline::clip_fingerprint`]): the fingerprint's upper 56 bits and the part number.
pub fn source_id(clip: u64, part: usize) -> u64 {
    (clip & !0xFF) | (part.min(0xFF) as u64)
}

/// True when source id `source` belongs to the clip with fingerprint `clip` (any part of it).
pub fn same_clip(source: u64, clip: u64) -> bool {
    source >> 8 == clip >> 8
}

/// The query sources and the `same(row source, query source)` test of [`PatchCore::nearest_excluding`].
type Exclusion<'a> = Option<(&'a [u64], &'a (dyn Fn(u64, u64) -> bool + Sync))>;

/// Nearest memory-bank patch of each query.
#[derive(Debug, Clone, PartialEq)]
pub struct Nearest {
    /// Euclidean distance to the nearest memory-bank patch, `[queries]`.
    pub distance: Vec<f32>,
    /// Row of that patch in the memory bank, `[queries]`.
    pub index: Vec<u32>,
}

fn squared_norms(x: &[f32], dims: usize) -> Vec<f32> {
    x.chunks_exact(dims).map(|r| r.iter().map(|v| v * v).sum()).collect()
}

fn exact_distance(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
}

/// Lanes of [`scan`]: independent running minima, so that the loop runs as SIMD compares and selects.
const SCAN_LANES: usize = 8;

/// Updates `best` (squared distance, memory-bank row) of one query from its dot products `g[j]` with bank rows
/// `base + j` of squared norms `norms[j]`: `d2 = qn - 2 g[j] + norms[j]`, kept when strictly smaller. The same as
/// the plain loop `for j { if d2 < best.0 { best = (d2, base + j) } }`: each lane keeps the first minimum of its
/// rows; of the lanes' minima the smallest (of equal ones, the lowest row) replaces `best` if strictly smaller.
#[inline(always)]
fn scan(qn: f32, g: &[f32], norms: &[f32], base: u32, best: &mut (f32, u32)) {
    const L: usize = SCAN_LANES;
    let n = g.len().min(norms.len());
    let mut m = [f32::INFINITY; L];
    let mut ix = [u32::MAX; L];
    let full = n / L * L;
    for (c, (gc, nc)) in g[..full].chunks_exact(L).zip(norms[..full].chunks_exact(L)).enumerate() {
        for l in 0..L {
            let d2 = qn - 2.0 * gc[l] + nc[l];
            let better = d2 < m[l];
            m[l] = if better { d2 } else { m[l] };
            ix[l] = if better { (c * L + l) as u32 } else { ix[l] };
        }
    }
    let mut first: Option<(f32, u32)> = None;
    for l in 0..L {
        if ix[l] == u32::MAX {
            continue;
        }
        first = match first {
            Some((v, i)) if m[l] < v || (m[l] == v && ix[l] < i) => Some((m[l], ix[l])),
            Some(kept) => Some(kept),
            None => Some((m[l], ix[l])),
        };
    }
    if let Some((v, i)) = first {
        if v < best.0 {
            *best = (v, base + i);
        }
    }
    for j in full..n {
        let d2 = qn - 2.0 * g[j] + norms[j];
        if d2 < best.0 {
            *best = (d2, base + j as u32);
        }
    }
}

/// [`scan`] compiled for AVX2 (8 lanes in one register).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scan_avx2(qn: f32, g: &[f32], norms: &[f32], base: u32, best: &mut (f32, u32)) {
    scan(qn, g, norms, base, best)
}

/// Most distinct row sources x distinct query sources for which [`source_classes`] checks `same` pairwise.
const MAX_CLASS_CHECKS: usize = 1 << 22;

/// Classes of the sources under `same(row source, query source)`, when it sorts them into classes: a class id per
/// row `[rows]` (`>= 0`) and per query `[queries]` (the id of the rows it excludes, or `-2`: none), such that
/// `same(rows[j], queries[r])` exactly when the two ids are equal. Checked on every pair of distinct values;
/// `None` when `same` is not of that form (or there are too many distinct sources to check): the caller then
/// calls `same` per pair.
fn source_classes(rows: &[u64], queries: &[u64], same: &dyn Fn(u64, u64) -> bool) -> Option<(Vec<i32>, Vec<i32>)> {
    let mut distinct_rows = rows.to_vec();
    distinct_rows.sort_unstable();
    distinct_rows.dedup();
    let mut distinct_queries = queries.to_vec();
    distinct_queries.sort_unstable();
    distinct_queries.dedup();
    if distinct_rows.len().saturating_mul(distinct_queries.len()) > MAX_CLASS_CHECKS || distinct_rows.len() > 1 << 30 {
        return None;
    }
    // Per distinct query value, the distinct rows it excludes; they must be a whole class, the same for every
    // query that excludes any of them.
    let mut class_of_row = vec![-1i32; distinct_rows.len()];
    let mut class_of_query = vec![-2i32; distinct_queries.len()];
    let mut next = 0i32;
    for (qi, &qv) in distinct_queries.iter().enumerate() {
        let hit: Vec<usize> = (0..distinct_rows.len()).filter(|&j| same(distinct_rows[j], qv)).collect();
        let Some(&first) = hit.first() else { continue };
        let c = class_of_row[first];
        if c < 0 {
            if hit.iter().any(|&j| class_of_row[j] >= 0) {
                return None;
            }
            hit.iter().for_each(|&j| class_of_row[j] = next);
            class_of_query[qi] = next;
            next += 1;
        } else {
            let members = class_of_row.iter().filter(|&&k| k == c).count();
            if members != hit.len() || hit.iter().any(|&j| class_of_row[j] != c) {
                return None;
            }
            class_of_query[qi] = c;
        }
    }
    // Rows no query excludes: a class of their own each, never equal to a query's.
    for c in class_of_row.iter_mut().filter(|c| **c < 0) {
        *c = next;
        next += 1;
    }
    let row_ids = rows.iter().map(|v| class_of_row[distinct_rows.binary_search(v).unwrap_or(0)]).collect();
    let query_ids = queries.iter().map(|v| class_of_query[distinct_queries.binary_search(v).unwrap_or(0)]).collect();
    Some((row_ids, query_ids))
}

/// Largest patch dimension for which [`PatchCore::nearest`] ranks the rows with the fused AVX2/FMA kernel rather
/// than matrix products: with few dimensions a matrix product is bound by writing out and re-reading its
/// `queries x rows` result, which the fused kernel keeps in registers (BENCH.md, section 5).
pub const FUSED_MAX_DIMS: usize = 32;

/// Largest patch dimension for the fused AVX-512 kernel (twice the lanes of AVX2; above this the matrix products,
/// which also block the queries, are faster: BENCH.md, section 5).
pub const FUSED_MAX_DIMS_AVX512: usize = 128;

/// Largest patch dimension for the fused simd128 kernel of the wasm32 build (4 lanes, no FMA): both members of the
/// default bank (10 and 113 dimensions; BENCH.md, section 7).
pub const FUSED_MAX_DIMS_SIMD128: usize = 128;

/// Memory-bank blocks a fused kernel ranks per pass over a chunk of queries: about 128 KB of the bank, so that
/// each query group reads it from the L2 cache.
fn fused_pass_blocks(dims: usize) -> usize {
    (32768 / (dims.max(1) * FUSED_ROWS)).max(1)
}

/// Rows per block of the fused kernels: two AVX2 registers of 8 lanes, one AVX-512 register, four simd128 ones.
const FUSED_ROWS: usize = 16;

/// The fused kernel this CPU (or wasm build) runs; each target has only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // each target constructs only its own kernels
enum FusedKernel {
    None,
    Avx2,
    Avx512,
    Simd128,
}

fn fused_kernel() -> FusedKernel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return FusedKernel::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return FusedKernel::Avx2;
        }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return FusedKernel::Simd128;
    #[allow(unreachable_code)]
    FusedKernel::None
}

/// True when [`PatchCore::nearest`] ranks `dims`-dimensional patches with a fused kernel on this CPU.
fn fused_for(dims: usize) -> bool {
    match fused_kernel() {
        FusedKernel::None => false,
        FusedKernel::Avx2 => dims <= FUSED_MAX_DIMS,
        FusedKernel::Avx512 => dims <= FUSED_MAX_DIMS_AVX512,
        FusedKernel::Simd128 => dims <= FUSED_MAX_DIMS_SIMD128,
    }
}

/// One pass of the fused kernel `kind` over the memory-bank blocks `passes` for the queries `qs` (see
/// [`nearest_fused`]).
///
/// # Panics
/// For a kernel this target does not run: blocks exist only where [`fused_kernel`] found one (a bug otherwise).
#[allow(clippy::too_many_arguments)] // the kernels' inputs, passed through
fn fused_pass(
    kind: FusedKernel,
    qs: &[f32],
    qn: &[f32],
    dims: usize,
    blocks: &[f32],
    block_norms: &[f32],
    passes: std::ops::Range<usize>,
    classes: Option<(&[i32], &[i32])>,
    out: &mut [(f32, u32)],
) {
    match kind {
        // SAFETY (each arm): the kernel's CPU features were detected at run time (`fused_kernel`).
        #[cfg(target_arch = "x86_64")]
        FusedKernel::Avx512 => unsafe { nearest_fused_avx512(qs, qn, dims, blocks, block_norms, passes, classes, out) },
        #[cfg(target_arch = "x86_64")]
        FusedKernel::Avx2 => unsafe { nearest_fused(qs, qn, dims, blocks, block_norms, passes, classes, out) },
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        FusedKernel::Simd128 => nearest_fused_simd128(qs, qn, dims, blocks, block_norms, passes, classes, out),
        other => unreachable!("no fused kernel {other:?} on this target"),
    }
}

/// The memory bank `[n, dims]` with squared norms `[n]` as [`PatchCore::blocks`] and `block_norms` when the CPU
/// runs a fused kernel for `dims` dimensions, else two empty vectors.
fn fused_blocks(bank: &[f32], norms: &[f32], dims: usize) -> (Vec<f32>, Vec<f32>) {
    if dims == 0 || norms.is_empty() || !fused_for(dims) {
        return (Vec::new(), Vec::new());
    }
    block_layout(bank, norms, dims)
}

/// The blocks of [`fused_blocks`], whatever the CPU.
fn block_layout(bank: &[f32], norms: &[f32], dims: usize) -> (Vec<f32>, Vec<f32>) {
    let nb = norms.len().div_ceil(FUSED_ROWS);
    let mut blocks = vec![0.0f32; nb * dims * FUSED_ROWS];
    let mut block_norms = vec![f32::INFINITY; nb * FUSED_ROWS];
    for (j, row) in bank.chunks_exact(dims).enumerate() {
        let (b, l) = (j / FUSED_ROWS, j % FUSED_ROWS);
        for (k, &v) in row.iter().enumerate() {
            blocks[(b * dims + k) * FUSED_ROWS + l] = v;
        }
        block_norms[j] = norms[j];
    }
    (blocks, block_norms)
}

/// Nearest row of each query `qs` `[rows, dims]` (squared norms `qn` `[rows]`) among a memory bank in blocks of
/// 16 rows (see [`fused_blocks`]), ranked by `d2 = (|q|^2 + |y|^2) - 2 q.y` with the dot products accumulated
/// over the dimensions in order by fused multiply-adds, as the matrix-product path ranks them, but 6 queries x 16
/// rows at a time in registers, without writing the products out. Each query's `(d2, row)` in `out` is replaced
/// when a row is strictly nearer; of equal `d2`, the lowest row wins, as in [`scan`]. Padding rows have norm
/// `+inf` and never win.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `blocks` must hold `dims x 16` values per 16 values of `block_norms`.
#[allow(clippy::too_many_arguments)] // a hot kernel: its inputs as plain slices
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn nearest_fused(
    qs: &[f32],
    qn: &[f32],
    dims: usize,
    blocks: &[f32],
    block_norms: &[f32],
    passes: std::ops::Range<usize>,
    classes: Option<(&[i32], &[i32])>,
    out: &mut [(f32, u32)],
) {
    use std::arch::x86_64::*;
    const R: usize = FUSED_ROWS;
    const Q: usize = 6;
    let rows = out.len().min(qn.len()).min(qs.len() / dims.max(1));
    let nb = block_norms.len() / R;
    assert!(blocks.len() >= nb * dims * R, "nearest_fused: blocks shorter than their norms describe");
    let passes = passes.start.min(nb)..passes.end.min(nb);
    if let Some((row_class, query_class)) = classes {
        assert!(row_class.len() >= nb * R && query_class.len() >= rows, "nearest_fused: classes too short");
    }
    let infinity = _mm256_set1_ps(f32::INFINITY);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let minus_two = _mm256_set1_ps(-2.0);
    let mut best = [0.0f32; R];
    let mut arg = [0u32; R];
    let mut g0 = 0;
    while g0 < rows {
        let gq = (rows - g0).min(Q);
        // The group's queries, padded by repeating its last one (whose results are dropped).
        let mut qp = [qs.as_ptr(); Q];
        let mut qnv = [_mm256_setzero_ps(); Q];
        let mut qcv = [_mm256_setzero_si256(); Q];
        for t in 0..Q {
            let r = g0 + t.min(gq - 1);
            qp[t] = qs.as_ptr().add(r * dims);
            qnv[t] = _mm256_set1_ps(qn[r]);
            if let Some((_, query_class)) = classes {
                qcv[t] = _mm256_set1_epi32(query_class[r]);
            }
        }
        let mut bv = [[_mm256_set1_ps(f32::INFINITY); 2]; Q];
        let mut av = [[_mm256_set1_epi32(-1); 2]; Q];
        for b in passes.clone() {
            let blk = blocks.as_ptr().add(b * dims * R);
            let mut acc = [[_mm256_setzero_ps(); 2]; Q];
            for k in 0..dims {
                let c0 = _mm256_loadu_ps(blk.add(k * R));
                let c1 = _mm256_loadu_ps(blk.add(k * R + 8));
                for t in 0..Q {
                    let qv = _mm256_broadcast_ss(&*qp[t].add(k));
                    acc[t][0] = _mm256_fmadd_ps(qv, c0, acc[t][0]);
                    acc[t][1] = _mm256_fmadd_ps(qv, c1, acc[t][1]);
                }
            }
            let n0 = _mm256_loadu_ps(block_norms.as_ptr().add(b * R));
            let n1 = _mm256_loadu_ps(block_norms.as_ptr().add(b * R + 8));
            let i0 = _mm256_add_epi32(lane, _mm256_set1_epi32((b * R) as i32));
            let i1 = _mm256_add_epi32(i0, _mm256_set1_epi32(8));
            let rc = classes.map(|(row_class, _)| {
                let p = row_class.as_ptr().add(b * R) as *const __m256i;
                (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1)))
            });
            for t in 0..Q {
                let mut d0 = _mm256_fmadd_ps(minus_two, acc[t][0], _mm256_add_ps(qnv[t], n0));
                let mut d1 = _mm256_fmadd_ps(minus_two, acc[t][1], _mm256_add_ps(qnv[t], n1));
                if let Some((rc0, rc1)) = rc {
                    // Rows of the query's own class are excluded: +inf never wins.
                    let e0 = _mm256_castsi256_ps(_mm256_cmpeq_epi32(rc0, qcv[t]));
                    let e1 = _mm256_castsi256_ps(_mm256_cmpeq_epi32(rc1, qcv[t]));
                    d0 = _mm256_blendv_ps(d0, infinity, e0);
                    d1 = _mm256_blendv_ps(d1, infinity, e1);
                }
                let m0 = _mm256_cmp_ps(d0, bv[t][0], _CMP_LT_OQ);
                let m1 = _mm256_cmp_ps(d1, bv[t][1], _CMP_LT_OQ);
                bv[t][0] = _mm256_blendv_ps(bv[t][0], d0, m0);
                bv[t][1] = _mm256_blendv_ps(bv[t][1], d1, m1);
                av[t][0] =
                    _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(av[t][0]), _mm256_castsi256_ps(i0), m0));
                av[t][1] =
                    _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(av[t][1]), _mm256_castsi256_ps(i1), m1));
            }
        }
        // Each lane kept the first of its rows at its minimum; of the lanes' minima the smallest, of equal ones
        // the lowest row.
        for t in 0..gq {
            _mm256_storeu_ps(best.as_mut_ptr(), bv[t][0]);
            _mm256_storeu_ps(best.as_mut_ptr().add(8), bv[t][1]);
            _mm256_storeu_si256(arg.as_mut_ptr() as *mut __m256i, av[t][0]);
            _mm256_storeu_si256(arg.as_mut_ptr().add(8) as *mut __m256i, av[t][1]);
            let o = &mut out[g0 + t];
            for l in 0..R {
                let (v, i) = (best[l], arg[l]);
                if i != u32::MAX && (v < o.0 || (v == o.0 && i < o.1)) {
                    *o = (v, i);
                }
            }
        }
        g0 += gq;
    }
}

/// [`nearest_fused`] for AVX-512: 12 queries x 16 rows (one register) at a time, the same ranking and ties.
///
/// # Safety
/// The CPU must support AVX-512F; `blocks` must hold `dims x 16` values per 16 values of `block_norms`.
#[allow(clippy::too_many_arguments)] // a hot kernel: its inputs as plain slices
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn nearest_fused_avx512(
    qs: &[f32],
    qn: &[f32],
    dims: usize,
    blocks: &[f32],
    block_norms: &[f32],
    passes: std::ops::Range<usize>,
    classes: Option<(&[i32], &[i32])>,
    out: &mut [(f32, u32)],
) {
    use std::arch::x86_64::*;
    const R: usize = FUSED_ROWS;
    const Q: usize = 12;
    let rows = out.len().min(qn.len()).min(qs.len() / dims.max(1));
    let nb = block_norms.len() / R;
    assert!(blocks.len() >= nb * dims * R, "nearest_fused_avx512: blocks shorter than their norms describe");
    let passes = passes.start.min(nb)..passes.end.min(nb);
    if let Some((row_class, query_class)) = classes {
        assert!(row_class.len() >= nb * R && query_class.len() >= rows, "nearest_fused_avx512: classes too short");
    }
    let infinity = _mm512_set1_ps(f32::INFINITY);
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let minus_two = _mm512_set1_ps(-2.0);
    let mut best = [0.0f32; R];
    let mut arg = [0u32; R];
    let mut g0 = 0;
    while g0 < rows {
        let gq = (rows - g0).min(Q);
        let mut qp = [qs.as_ptr(); Q];
        let mut qnv = [_mm512_setzero_ps(); Q];
        let mut qcv = [_mm512_setzero_si512(); Q];
        for t in 0..Q {
            let r = g0 + t.min(gq - 1);
            qp[t] = qs.as_ptr().add(r * dims);
            qnv[t] = _mm512_set1_ps(qn[r]);
            if let Some((_, query_class)) = classes {
                qcv[t] = _mm512_set1_epi32(query_class[r]);
            }
        }
        let mut bv = [infinity; Q];
        let mut av = [_mm512_set1_epi32(-1); Q];
        for b in passes.clone() {
            let blk = blocks.as_ptr().add(b * dims * R);
            let mut acc = [_mm512_setzero_ps(); Q];
            for k in 0..dims {
                let c = _mm512_loadu_ps(blk.add(k * R));
                for t in 0..Q {
                    acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(*qp[t].add(k)), c, acc[t]);
                }
            }
            let nrm = _mm512_loadu_ps(block_norms.as_ptr().add(b * R));
            let idx = _mm512_add_epi32(lane, _mm512_set1_epi32((b * R) as i32));
            let rc = classes.map(|(row_class, _)| _mm512_loadu_si512(row_class.as_ptr().add(b * R) as *const _));
            for t in 0..Q {
                let mut d = _mm512_fmadd_ps(minus_two, acc[t], _mm512_add_ps(qnv[t], nrm));
                if let Some(rc) = rc {
                    // Rows of the query's own class are excluded: +inf never wins.
                    d = _mm512_mask_blend_ps(_mm512_cmpeq_epi32_mask(rc, qcv[t]), d, infinity);
                }
                let m = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(d, bv[t]);
                bv[t] = _mm512_mask_blend_ps(m, bv[t], d);
                av[t] = _mm512_mask_blend_epi32(m, av[t], idx);
            }
        }
        for t in 0..gq {
            _mm512_storeu_ps(best.as_mut_ptr(), bv[t]);
            _mm512_storeu_si512(arg.as_mut_ptr() as *mut _, av[t]);
            let o = &mut out[g0 + t];
            for l in 0..R {
                let (v, i) = (best[l], arg[l]);
                if i != u32::MAX && (v < o.0 || (v == o.0 && i < o.1)) {
                    *o = (v, i);
                }
            }
        }
        g0 += gq;
    }
}

/// [`nearest_fused`] for wasm32 simd128: 4 queries x 8 rows (two 4-lane registers; the two halves of each block
/// one after the other) at a time, with the dot products accumulated by separate multiplies and adds (simd128 has
/// no fused multiply-add; as the matrix-product path of this build ranks them), the same ranking and ties:
/// `d2 = (|q|^2 + |y|^2) - 2 q.y`, strictly nearer replaces, of equal `d2` the lowest row.
///
/// # Panics
/// If `blocks` holds fewer than `dims x 16` values per 16 values of `block_norms`, or `classes` fewer values than
/// the blocks' rows and the queries.
#[allow(clippy::too_many_arguments)] // a hot kernel: its inputs as plain slices
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn nearest_fused_simd128(
    qs: &[f32],
    qn: &[f32],
    dims: usize,
    blocks: &[f32],
    block_norms: &[f32],
    passes: std::ops::Range<usize>,
    classes: Option<(&[i32], &[i32])>,
    out: &mut [(f32, u32)],
) {
    use std::arch::wasm32::*;
    const R: usize = FUSED_ROWS;
    const H: usize = 8;
    const Q: usize = 4;
    let rows = out.len().min(qn.len()).min(qs.len() / dims.max(1));
    let nb = block_norms.len() / R;
    assert!(blocks.len() >= nb * dims * R, "nearest_fused_simd128: blocks shorter than their norms describe");
    let passes = passes.start.min(nb)..passes.end.min(nb);
    if let Some((row_class, query_class)) = classes {
        assert!(row_class.len() >= nb * R && query_class.len() >= rows, "nearest_fused_simd128: classes too short");
    }
    // Four lanes of `p` from `at`. SAFETY: every load below reads inside `blocks` (block `b < nb`, offset
    // `(b * dims + k) * R + h + 8 <= nb * dims * R`) or `block_norms` (`b * R + 16 <= nb * R`), asserted above.
    let load = |p: &[f32], at: usize| {
        debug_assert!(at + 4 <= p.len());
        unsafe { v128_load(p.as_ptr().add(at) as *const v128) }
    };
    let infinity = f32x4_splat(f32::INFINITY);
    let lane = i32x4(0, 1, 2, 3);
    let mut best = [0.0f32; R];
    let mut arg = [0u32; R];
    let mut g0 = 0;
    while g0 < rows {
        let gq = (rows - g0).min(Q);
        // The group's queries, padded by repeating its last one (whose results are dropped).
        let qr: [usize; Q] = std::array::from_fn(|t| g0 + t.min(gq - 1));
        let qp: [*const f32; Q] = std::array::from_fn(|t| qs[qr[t] * dims..(qr[t] + 1) * dims].as_ptr());
        let qnv: [v128; Q] = std::array::from_fn(|t| f32x4_splat(qn[qr[t]]));
        let qcv: [v128; Q] = std::array::from_fn(|t| i32x4_splat(classes.map_or(0, |(_, qc)| qc[qr[t]])));
        let mut bv = [[infinity; 4]; Q];
        let mut av = [[i32x4_splat(-1); 4]; Q];
        for b in passes.clone() {
            for h in [0, H] {
                let mut acc = [[f32x4_splat(0.0); 2]; Q];
                for k in 0..dims {
                    let at = (b * dims + k) * R + h;
                    let (c0, c1) = (load(blocks, at), load(blocks, at + 4));
                    for t in 0..Q {
                        // SAFETY: `qp[t]` starts a query of `dims` values (sliced above) and `k < dims`.
                        let qv = f32x4_splat(unsafe { *qp[t].add(k) });
                        acc[t][0] = f32x4_add(acc[t][0], f32x4_mul(qv, c0));
                        acc[t][1] = f32x4_add(acc[t][1], f32x4_mul(qv, c1));
                    }
                }
                let at = b * R + h;
                let nrm = [load(block_norms, at), load(block_norms, at + 4)];
                let i0 = i32x4_add(lane, i32x4_splat(at as i32));
                let idx = [i0, i32x4_add(i0, i32x4_splat(4))];
                // SAFETY: as `load`: the row classes cover the blocks' rows (asserted).
                let rc = classes.map(|(rc, _)| unsafe {
                    let p = rc.as_ptr().add(at) as *const v128;
                    [v128_load(p), v128_load(p.add(1))]
                });
                for t in 0..Q {
                    for s in 0..2 {
                        // 2 q.y is exact (a doubling), so this rounds as the native kernels' fused `-2 q.y + (..)`.
                        let mut d = f32x4_sub(f32x4_add(qnv[t], nrm[s]), f32x4_add(acc[t][s], acc[t][s]));
                        if let Some(rc) = rc {
                            // Rows of the query's own class are excluded: +inf never wins.
                            d = v128_bitselect(infinity, d, i32x4_eq(rc[s], qcv[t]));
                        }
                        let m = f32x4_lt(d, bv[t][h / 4 + s]);
                        bv[t][h / 4 + s] = v128_bitselect(d, bv[t][h / 4 + s], m);
                        av[t][h / 4 + s] = v128_bitselect(idx[s], av[t][h / 4 + s], m);
                    }
                }
            }
        }
        // Each lane kept the first of its rows at its minimum; of the lanes' minima the smallest, of equal ones
        // the lowest row.
        for t in 0..gq {
            for s in 0..4 {
                // SAFETY: `best` and `arg` hold 16 lanes, four registers.
                unsafe {
                    v128_store(best.as_mut_ptr().add(s * 4) as *mut v128, bv[t][s]);
                    v128_store(arg.as_mut_ptr().add(s * 4) as *mut v128, av[t][s]);
                }
            }
            let o = &mut out[g0 + t];
            for l in 0..R {
                let (v, i) = (best[l], arg[l]);
                if i != u32::MAX && (v < o.0 || (v == o.0 && i < o.1)) {
                    *o = (v, i);
                }
            }
        }
        g0 += gq;
    }
}

/// `c[m, n] = a[m, k] . b[n, k]^T` (both row-major).
fn matmul_abt(a: &[f32], b: &[f32], m: usize, n: usize, k: usize, c: &mut [f32]) {
    crate::linalg::matmul(m, k, n, a, b, true, c);
}

impl PatchCore {
    /// Fits the memory bank on normal `patches` `[n, dims]`: [`select_coreset`] under [`PatchCoreConfig::plan`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for no patch, a ragged buffer, non-finite values or a bad config.
    pub fn fit(patches: &[f32], dims: usize, config: PatchCoreConfig) -> Result<Self> {
        Self::fit_with_sources(patches, &[], dims, config)
    }

    /// As [`PatchCore::fit`], keeping the source id of each chosen row: `sources` `[n]`, one per patch (or empty:
    /// unknown).
    ///
    /// # Errors
    /// As [`PatchCore::fit`]; [`Error::InvalidInput`] if `sources` is neither empty nor one per patch.
    pub fn fit_with_sources(patches: &[f32], sources: &[u64], dims: usize, config: PatchCoreConfig) -> Result<Self> {
        let plan = config.plan(patches.len().checked_div(dims).unwrap_or(0).max(1));
        Self::fit_with_plan(patches, sources, dims, config, plan)
    }

    /// As [`PatchCore::fit_with_sources`] under a given `plan` instead of `config.plan(n)`: how a fit that was given
    /// only the candidates of a capped plan (`plan.candidates` = all of `patches`) chooses what a fit on every patch
    /// would ([`super::FitData::Subset`]).
    ///
    /// # Errors
    /// As [`PatchCore::fit_with_sources`].
    pub fn fit_with_plan(
        patches: &[f32],
        sources: &[u64],
        dims: usize,
        config: PatchCoreConfig,
        plan: CoresetPlan,
    ) -> Result<Self> {
        config.validate()?;
        if dims == 0 || patches.is_empty() || !patches.len().is_multiple_of(dims) {
            return Err(Error::invalid(format!(
                "PatchCore needs at least one {dims}-dimensional patch, got {} values",
                patches.len()
            )));
        }
        if let Some(i) = patches.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(format!("patch value {i} is not finite")));
        }
        let n = patches.len() / dims;
        if !sources.is_empty() && sources.len() != n {
            return Err(Error::invalid(format!("{} patch sources for {n} patches", sources.len())));
        }
        #[cfg(not(target_arch = "wasm32"))]
        let started = std::time::Instant::now();
        let chosen = select_coreset(patches, dims, plan, config.projection_eps, config.seed);
        // Diagnostics for benches/fit_scaling.sh: how much of a fit the coreset selections take.
        #[cfg(not(target_arch = "wasm32"))]
        if std::env::var_os("SONOMALY_CORESET_LOG").is_some() {
            eprintln!(
                "coreset: {n} x {dims} patches, {} candidates -> {} rows in {:.3} s",
                plan.candidates,
                chosen.len(),
                started.elapsed().as_secs_f64()
            );
        }
        let mut memory_bank = Vec::with_capacity(chosen.len() * dims);
        for &i in &chosen {
            memory_bank.extend_from_slice(&patches[i * dims..(i + 1) * dims]);
        }
        let mut pc = Self::from_memory_bank(memory_bank, dims, config);
        if !sources.is_empty() {
            pc.sources = chosen.iter().map(|&i| sources[i]).collect();
        }
        Ok(pc)
    }

    /// A PatchCore from a stored memory bank `[n, dims]` (bank loading), sources unknown.
    pub fn from_memory_bank(memory_bank: Vec<f32>, dims: usize, config: PatchCoreConfig) -> Self {
        let norms = squared_norms(&memory_bank, dims);
        let (blocks, block_norms) = fused_blocks(&memory_bank, &norms, dims);
        PatchCore { config, dims, memory_bank, norms, sources: Vec::new(), blocks, block_norms }
    }

    /// Sets the source id of every row (`[n]`, see [`source_id`]; empty: unknown).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if `sources` is neither empty nor one per row.
    pub fn with_sources(mut self, sources: Vec<u64>) -> Result<Self> {
        if !sources.is_empty() && sources.len() != self.len() {
            return Err(Error::invalid(format!(
                "{} row sources for a memory bank of {} rows",
                sources.len(),
                self.len()
            )));
        }
        self.sources = sources;
        Ok(self)
    }

    /// Source id of each row `[n]`, or empty when unknown.
    pub fn sources(&self) -> &[u64] {
        &self.sources
    }

    /// The PatchCore without the rows whose source `leave_out` accepts: how a normal clip (or part) that the
    /// bank was fitted on is scored as if the bank had never seen it, for calibration. `None` if no row would
    /// remain. Without known sources, every row is kept.
    pub fn without(&self, leave_out: impl Fn(u64) -> bool) -> Option<PatchCore> {
        if self.sources.is_empty() {
            return Some(self.clone());
        }
        let d = self.dims;
        let keep: Vec<usize> = (0..self.len()).filter(|&j| !leave_out(self.sources[j])).collect();
        if keep.is_empty() {
            return None;
        }
        let mut memory_bank = Vec::with_capacity(keep.len() * d);
        for &j in &keep {
            memory_bank.extend_from_slice(&self.memory_bank[j * d..(j + 1) * d]);
        }
        let sources = keep.iter().map(|&j| self.sources[j]).collect();
        PatchCore::from_memory_bank(memory_bank, d, self.config.clone()).with_sources(sources).ok()
    }

    /// Rows in the memory bank.
    pub fn len(&self) -> usize {
        self.norms.len()
    }

    /// True for an empty memory bank.
    pub fn is_empty(&self) -> bool {
        self.norms.is_empty()
    }

    /// Nearest memory-bank patch of every query `[q, dims]`, in chunks of 256 queries x 4096 bank rows.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a ragged query buffer or a dimension other than the bank's.
    pub fn nearest(&self, queries: &[f32]) -> Result<Nearest> {
        self.nearest_where(queries, None)
    }

    /// Nearest memory-bank patch of every query `[q, dims]` among the rows whose source `same` does not match the
    /// query's source `query_sources[r]`: `same(row source, query source)` true excludes the row. A query that
    /// every row matches gets distance `inf` and row `u32::MAX`. Used to find, for a held-out clip's memory-bank
    /// rows, the nearest patch of the other clips.
    ///
    /// # Errors
    /// As [`PatchCore::nearest`]; [`Error::InvalidInput`] if the bank has no sources or `query_sources` is not one
    /// per query.
    pub fn nearest_excluding(
        &self,
        queries: &[f32],
        query_sources: &[u64],
        same: &(dyn Fn(u64, u64) -> bool + Sync),
    ) -> Result<Nearest> {
        if self.sources.len() != self.len() || query_sources.len() * self.dims != queries.len() {
            return Err(Error::invalid("excluding rows by source needs the sources of every row and every query"));
        }
        self.nearest_where(queries, Some((query_sources, same)))
    }

    fn nearest_where(&self, queries: &[f32], exclude: Exclusion<'_>) -> Result<Nearest> {
        let d = self.dims;
        if !queries.len().is_multiple_of(d) {
            return Err(Error::invalid(format!(
                "query patches have {} values, not a multiple of the bank's dimension {d}",
                queries.len()
            )));
        }
        let q = queries.len() / d;
        let n = self.len();
        let mut pairs = vec![(f32::INFINITY, 0u32); q];
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        // Exclusion by classes (an integer compare per pair) when `same` sorts the sources into classes, else by
        // calling it per pair.
        let classes = exclude.and_then(|(qsrc, same)| source_classes(&self.sources, qsrc, same));
        let row_class_blocks: Vec<i32> = match &classes {
            Some((rc, _)) if !self.blocks.is_empty() => {
                let mut v = vec![-1; self.block_norms.len()];
                v[..rc.len()].copy_from_slice(rc);
                v
            }
            _ => Vec::new(),
        };
        const QC: usize = 256;
        const BC: usize = 4096;
        for_each_chunk(&mut pairs, QC, |ci, out| {
            let rows = out.len();
            let qs = &queries[ci * QC * d..(ci * QC + rows) * d];
            let qn = squared_norms(qs, d);
            if !self.blocks.is_empty() && (exclude.is_none() || !row_class_blocks.is_empty()) {
                // The blocks exist only where a fused kernel runs (`fused_blocks`) and were made from this bank;
                // the row classes are padded to the blocks' rows.
                let cls = classes.as_ref().map(|(_, qc)| (row_class_blocks.as_slice(), &qc[ci * QC..ci * QC + rows]));
                let (nb, per, kind) = (self.block_norms.len() / FUSED_ROWS, fused_pass_blocks(d), fused_kernel());
                for b0 in (0..nb).step_by(per) {
                    let pass = b0..(b0 + per).min(nb);
                    fused_pass(kind, qs, &qn, d, &self.blocks, &self.block_norms, pass, cls, out);
                }
                self.exact_winners(qs, out);
                return;
            }
            let mut g = vec![0.0f32; rows * BC.min(n)];
            let mut b0 = 0;
            while b0 < n {
                let bn = (n - b0).min(BC);
                matmul_abt(qs, &self.memory_bank[b0 * d..(b0 + bn) * d], rows, bn, d, &mut g);
                // Excluded rows: a dot product of -inf makes their distance +inf, so they never win.
                if let Some((rc, qc)) = &classes {
                    for r in 0..rows {
                        let c = qc[ci * QC + r];
                        for (gv, &k) in g[r * bn..(r + 1) * bn].iter_mut().zip(&rc[b0..b0 + bn]) {
                            *gv = if k == c { f32::NEG_INFINITY } else { *gv };
                        }
                    }
                } else if let Some((qsrc, same)) = exclude {
                    for r in 0..rows {
                        let q = qsrc[ci * QC + r];
                        for (j, gv) in g[r * bn..(r + 1) * bn].iter_mut().enumerate() {
                            if same(self.sources[b0 + j], q) {
                                *gv = f32::NEG_INFINITY;
                            }
                        }
                    }
                }
                let norms = &self.norms[b0..b0 + bn];
                #[cfg(target_arch = "x86_64")]
                if avx2 {
                    for r in 0..rows {
                        // SAFETY: AVX2 was detected at run time.
                        unsafe { scan_avx2(qn[r], &g[r * bn..(r + 1) * bn], norms, b0 as u32, &mut out[r]) };
                    }
                    b0 += bn;
                    continue;
                }
                for r in 0..rows {
                    scan(qn[r], &g[r * bn..(r + 1) * bn], norms, b0 as u32, &mut out[r]);
                }
                b0 += bn;
            }
            self.exact_winners(qs, out);
        });
        Ok(Nearest { distance: pairs.iter().map(|p| p.0).collect(), index: pairs.iter().map(|p| p.1).collect() })
    }

    /// Replaces each ranked winner's squared distance by the exact Euclidean distance of query `r` (`qs`
    /// `[rows, dims]`) to its row; a query without a winner gets `(inf, u32::MAX)`.
    fn exact_winners(&self, qs: &[f32], out: &mut [(f32, u32)]) {
        let d = self.dims;
        for (r, best) in out.iter_mut().enumerate() {
            if best.0 == f32::INFINITY {
                *best = (f32::INFINITY, u32::MAX);
                continue;
            }
            let i = best.1 as usize;
            best.0 = exact_distance(&qs[r * d..(r + 1) * d], &self.memory_bank[i * d..(i + 1) * d]);
        }
    }

    /// Clip score from the patches `[q, dims]` of one clip and their [`Nearest`]: the largest patch distance
    /// `s*` times `1 - softmax(d)[0]`, where `d` are the distances from that patch to the `num_neighbors`
    /// memory-bank patches nearest to its own nearest neighbour `m*` (first of them `m*` itself); PatchCore eq. 7,
    /// as anomalib computes it. With one neighbour it is `s*`.
    pub fn clip_score(&self, queries: &[f32], nearest: &Nearest) -> f32 {
        let d = self.dims;
        let Some((arg, &s_star)) = nearest.distance.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) else {
            return 0.0;
        };
        let k = self.config.num_neighbors.min(self.len());
        if k <= 1 {
            return s_star;
        }
        let m_star = nearest.index[arg] as usize;
        let centre = &self.memory_bank[m_star * d..(m_star + 1) * d];
        // k nearest memory-bank rows of m* (m* itself first, at distance 0).
        let mut dist: Vec<(f32, usize)> =
            (0..self.len()).map(|j| (exact_distance(centre, &self.memory_bank[j * d..(j + 1) * d]), j)).collect();
        dist.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        dist.truncate(k);
        dist.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        if let Some(pos) = dist.iter().position(|p| p.1 == m_star) {
            dist.swap(0, pos);
        }
        let test = &queries[arg * d..(arg + 1) * d];
        let to_test: Vec<f32> =
            dist.iter().map(|&(_, j)| exact_distance(test, &self.memory_bank[j * d..(j + 1) * d])).collect();
        let mx = to_test.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let denom: f32 = to_test.iter().map(|v| (v - mx).exp()).sum();
        let softmax0 = (to_test[0] - mx).exp() / denom;
        (1.0 - softmax0) * s_star
    }
}

/// Scores normal units (clips, or parts of one clip) against a PatchCore memory bank fitted on them, as if it had
/// been fitted without each: the unit's memory-bank rows are removed and each is replaced by the nearest patch of
/// the other units among the fit's candidate patches (the pool), where a fit without the unit would most likely
/// have placed a centre covering the other units' patches the removed row covered. Without the replacement, the
/// holes left by the removed rows make held-out normal scores higher and wider-spread than a new normal clip's
/// against the bank (on MIMII fan, 11 of 20 faulty clips flagged instead of 18; RESULTS.md).
pub struct LeaveRowsOut<'a> {
    bank: &'a PatchCore,
    pool: PatchCore,
    /// Per memory-bank row: the nearest pool patch of another source (`u32::MAX`: none).
    replacement: Vec<u32>,
}

impl<'a> LeaveRowsOut<'a> {
    /// `patches` `[n, dims]` with `sources` `[n]`: the patches of the units at hand, of which the pool keeps those
    /// a fit of `bank`'s config chooses its memory bank among (all, or the seeded candidates of
    /// [`PatchCoreConfig::plan`] when capped). `same(a, b)`: sources `a` and `b` belong to the same unit.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a ragged pool, another dimension than the bank's, or not one source per patch.
    pub fn new(
        bank: &'a PatchCore,
        patches: Vec<f32>,
        sources: Vec<u64>,
        same: &(dyn Fn(u64, u64) -> bool + Sync),
    ) -> Result<Self> {
        let d = bank.dims;
        if !patches.len().is_multiple_of(d) || sources.len() != patches.len() / d {
            return Err(Error::invalid(
                "the calibration pool needs whole patches of the bank's dimension, one source each",
            ));
        }
        let n = sources.len();
        let plan = bank.config.plan(n.max(1));
        let pool = if plan.candidates >= n {
            PatchCore::from_memory_bank(patches, d, bank.config.clone()).with_sources(sources)?
        } else {
            let chosen = random_subset(n, plan.candidates, bank.config.seed);
            let mut rows = Vec::with_capacity(chosen.len() * d);
            for &j in &chosen {
                rows.extend_from_slice(&patches[j * d..(j + 1) * d]);
            }
            PatchCore::from_memory_bank(rows, d, bank.config.clone())
                .with_sources(chosen.iter().map(|&j| sources[j]).collect())?
        };
        let replacement = if bank.sources.is_empty() || pool.is_empty() {
            vec![u32::MAX; bank.len()]
        } else {
            pool.nearest_excluding(&bank.memory_bank, &bank.sources, same)?.index
        };
        Ok(LeaveRowsOut { bank, pool, replacement })
    }

    /// The detector without the memory-bank rows of unit `unit` (by `same`), with their replacements (each pool
    /// patch once). `None` if nothing would remain.
    pub fn without(&self, unit: u64, same: &dyn Fn(u64, u64) -> bool) -> Option<super::Detector> {
        let bank = self.bank;
        if bank.sources.is_empty() {
            return Some(super::Detector::Patchcore(bank.clone()));
        }
        let d = bank.dims;
        let mut rows = Vec::with_capacity(bank.memory_bank.len());
        let mut added = Vec::new();
        for (j, row) in bank.memory_bank.chunks_exact(d).enumerate() {
            if !same(bank.sources[j], unit) {
                rows.extend_from_slice(row);
            } else if self.replacement[j] != u32::MAX {
                added.push(self.replacement[j]);
            }
        }
        added.sort_unstable();
        added.dedup();
        for &p in &added {
            rows.extend_from_slice(&self.pool.memory_bank[p as usize * d..(p as usize + 1) * d]);
        }
        (!rows.is_empty())
            .then(|| super::Detector::Patchcore(PatchCore::from_memory_bank(rows, d, bank.config.clone())))
    }
}

/// The memory bank of a merge of banks fitted on shards: each shard's rows multiplied column by column by its
/// scale `[dims]`, their union kept whole when it has at most `max_bank_rows` rows (a coreset of coresets already
/// holds `coreset_ratio` of the corpus's patches, as a single fit would), otherwise `max_bank_rows` rows chosen by
/// the capped greedy ([`select_coreset`]) among `min(n, ceil(max_bank_rows / coreset_ratio))` seeded random
/// candidates, exactly as a single fit caps its memory bank. Row sources are kept when every shard knows them.
///
/// # Errors
/// [`Error::InvalidInput`] for a bad config, no rows, or shards of different dimensions.
pub fn merge_memory_banks(shards: &[(&PatchCore, &[f32])], config: &PatchCoreConfig) -> Result<PatchCore> {
    config.validate()?;
    let dims = shards.first().map_or(0, |s| s.0.dims);
    if dims == 0 || shards.iter().any(|(p, scale)| p.dims != dims || scale.len() != dims) {
        return Err(Error::invalid("the banks' memory banks have different dimensions"));
    }
    let sourced = shards.iter().all(|(p, _)| !p.sources.is_empty());
    let mut union = Vec::new();
    let mut sources = Vec::new();
    for (p, scale) in shards {
        for row in p.memory_bank.chunks_exact(dims) {
            union.extend(row.iter().zip(scale.iter()).map(|(v, s)| v * s));
        }
        if sourced {
            sources.extend_from_slice(&p.sources);
        }
    }
    let n = union.len() / dims;
    if n == 0 {
        return Err(Error::invalid("the banks' memory banks are empty"));
    }
    let cap = match config.max_bank_rows {
        Some(cap) if n > cap => cap,
        _ => return PatchCore::from_memory_bank(union, dims, config.clone()).with_sources(sources),
    };
    // As a single fit under the cap: `cap` rows among `cap / coreset_ratio` candidates (the ratio read back as the
    // decimal it was written as, as `CoresetPlan::new` does).
    let ratio = (config.coreset_ratio as f64 * 1e7).round() / 1e7;
    let candidates = ((cap as f64 / ratio).ceil() as usize).clamp(cap, n);
    let chosen =
        select_coreset(&union, dims, CoresetPlan { size: cap, candidates }, config.projection_eps, config.seed);
    let mut rows = Vec::with_capacity(chosen.len() * dims);
    for &i in &chosen {
        rows.extend_from_slice(&union[i * dims..(i + 1) * dims]);
    }
    let sources = if sources.is_empty() { Vec::new() } else { chosen.iter().map(|&i| sources[i]).collect() };
    PatchCore::from_memory_bank(rows, dims, config.clone()).with_sources(sources)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect()
    }

    #[test]
    fn nearest_matches_brute_force() {
        let d = 17;
        let bank = random(5000 * d, 1);
        let q = random(300 * d, 2);
        let pc = PatchCore::from_memory_bank(bank.clone(), d, PatchCoreConfig::default());
        let nn = pc.nearest(&q).unwrap();
        for i in 0..300 {
            let (mut bd, mut bj) = (f32::INFINITY, 0);
            for j in 0..5000 {
                let dd = exact_distance(&q[i * d..(i + 1) * d], &bank[j * d..(j + 1) * d]);
                if dd < bd {
                    bd = dd;
                    bj = j;
                }
            }
            assert!((nn.distance[i] - bd).abs() < 1e-5, "query {i}");
            assert_eq!(nn.index[i] as usize, bj);
        }
    }

    /// Brute-force nearest row of each query among the rows `keep(row, query)` accepts: (exact distance, row),
    /// the lowest row of equal distance; `(inf, u32::MAX)` when none is kept.
    fn brute_force(bank: &[f32], q: &[f32], d: usize, keep: impl Fn(usize, usize) -> bool) -> Vec<(f32, u32)> {
        (0..q.len() / d)
            .map(|i| {
                let mut best = (f32::INFINITY, u32::MAX);
                for j in 0..bank.len() / d {
                    let dd = exact_distance(&q[i * d..(i + 1) * d], &bank[j * d..(j + 1) * d]);
                    if keep(j, i) && dd < best.0 {
                        best = (dd, j as u32);
                    }
                }
                best
            })
            .collect()
    }

    fn assert_matches(nn: &Nearest, want: &[(f32, u32)], what: &str) {
        for (i, w) in want.iter().enumerate() {
            assert_eq!(nn.index[i], w.1, "{what}: query {i}");
            assert!(nn.distance[i] == w.0 || (nn.distance[i] - w.0).abs() < 1e-5, "{what}: query {i}");
        }
    }

    #[test]
    fn every_dimension_and_remainder_ranks_as_brute_force() {
        // Dimensions on both sides of FUSED_MAX_DIMS; rows and queries not multiples of the kernel's blocks
        // (16 rows, 6 queries); duplicated rows, of which the lowest must win.
        for d in [1, 3, 10, 16, FUSED_MAX_DIMS, FUSED_MAX_DIMS + 1, 113] {
            let mut bank = random(1013 * d, d as u64);
            let dup: Vec<f32> = bank[5 * d..6 * d].to_vec();
            bank.extend_from_slice(&dup);
            let mut q = random(107 * d, 100 + d as u64);
            q[..d].copy_from_slice(&dup);
            let pc = PatchCore::from_memory_bank(bank.clone(), d, PatchCoreConfig::default());
            let nn = pc.nearest(&q).unwrap();
            assert_matches(&nn, &brute_force(&bank, &q, d, |_, _| true), &format!("{d} dims"));
            assert_eq!(nn.index[0], 5, "{d} dims: of two equal rows the first wins");
            assert_eq!(nn.distance[0], 0.0);
        }
    }

    /// Both fused kernels, wherever the CPU runs them (the search uses only the widest), rank as brute force, in one
    /// pass over the blocks or in two.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn each_fused_kernel_ranks_as_brute_force() {
        let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        for d in [1, 10, 32, 113] {
            let bank = random(517 * d, 30 + d as u64);
            let q = random(29 * d, 40 + d as u64);
            let norms = squared_norms(&bank, d);
            let qn = squared_norms(&q, d);
            let (blocks, block_norms) = block_layout(&bank, &norms, d);
            let row_class: Vec<i32> = (0..block_norms.len()).map(|j| (j % 5) as i32).collect();
            let query_class: Vec<i32> = (0..29).map(|i| i % 7 - 1).collect();
            let pc = PatchCore::from_memory_bank(bank.clone(), d, PatchCoreConfig::default());
            for classes in [None, Some((row_class.as_slice(), query_class.as_slice()))] {
                let keep = |j: usize, i: usize| classes.is_none() || row_class[j] != query_class[i];
                let want = brute_force(&bank, &q, d, keep);
                let mut runs = Vec::new();
                if avx2 {
                    let mut out = vec![(f32::INFINITY, 0u32); 29];
                    // SAFETY: AVX2 and FMA were detected; the blocks and classes cover the bank.
                    unsafe { nearest_fused(&q, &qn, d, &blocks, &block_norms, 0..3, classes, &mut out) };
                    unsafe { nearest_fused(&q, &qn, d, &blocks, &block_norms, 3..usize::MAX, classes, &mut out) };
                    runs.push(("AVX2", out));
                }
                if avx512 {
                    let mut out = vec![(f32::INFINITY, 0u32); 29];
                    // SAFETY: AVX-512F was detected; the blocks and classes cover the bank.
                    unsafe {
                        nearest_fused_avx512(&q, &qn, d, &blocks, &block_norms, 0..usize::MAX, classes, &mut out)
                    };
                    runs.push(("AVX-512", out));
                }
                for (what, mut out) in runs {
                    pc.exact_winners(&q, &mut out);
                    let nn = Nearest {
                        distance: out.iter().map(|p| p.0).collect(),
                        index: out.iter().map(|p| p.1).collect(),
                    };
                    assert_matches(&nn, &want, &format!("{what}, {d} dims, classes {}", classes.is_some()));
                }
            }
        }
    }

    #[test]
    fn excluding_by_source_ranks_as_brute_force() {
        for d in [10, 40] {
            let n = 800;
            let bank = random(n * d, 7);
            let sources: Vec<u64> = (0..n).map(|j| source_id((j as u64 % 9) << 8, j % 3)).collect();
            let pc = PatchCore::from_memory_bank(bank.clone(), d, PatchCoreConfig::default())
                .with_sources(sources.clone())
                .unwrap();
            let q = random(50 * d, 8);
            let qsrc: Vec<u64> = (0..50).map(|i| source_id(((i as u64 * 5) % 11) << 8, i % 2)).collect();
            let equal = |a: u64, b: u64| a == b;
            let less = |a: u64, b: u64| a < b;
            type Same<'a> = &'a (dyn Fn(u64, u64) -> bool + Sync);
            let cases: [(&str, Same<'_>); 3] =
                [("same source", &equal), ("same clip", &same_clip), ("not classes", &less)];
            for (what, same) in cases {
                let nn = pc.nearest_excluding(&q, &qsrc, same).unwrap();
                let want = brute_force(&bank, &q, d, |j, i| !same(sources[j], qsrc[i]));
                assert_matches(&nn, &want, &format!("{what}, {d} dims"));
            }
            // Every row excluded: no winner.
            let all = |_: u64, _: u64| true;
            let nn = pc.nearest_excluding(&q, &qsrc, &all).unwrap();
            assert!(nn.index.iter().all(|&i| i == u32::MAX) && nn.distance.iter().all(|v| v.is_infinite()));
        }
    }

    #[test]
    fn source_classes_only_for_relations_that_sort_into_classes() {
        let rows = [1u64, 2, 2, 3, 9];
        let (rc, qc) = source_classes(&rows, &[2, 3, 4], &|a, b| a == b).unwrap();
        assert_eq!(rc[1], rc[2]);
        assert_eq!(qc[0], rc[1]);
        assert_eq!(qc[1], rc[3]);
        assert_eq!(qc[2], -2, "a query no row matches excludes nothing");
        assert!(rc.iter().all(|&c| c >= 0));
        // Odd and even: two classes of rows.
        let (rc, qc) = source_classes(&rows, &[5, 6], &|a, b| a % 2 == b % 2).unwrap();
        assert_eq!((rc[0], rc[3], rc[4]), (qc[0], qc[0], qc[0]));
        assert_eq!((rc[1], rc[2]), (qc[1], qc[1]));
        assert!(source_classes(&rows, &[2, 3], &|a, b| a < b).is_none(), "overlapping sets are not classes");
    }

    #[test]
    fn coreset_keeps_the_first_centre_and_covers_clusters() {
        // Three tight clusters: a coreset of 3 must take one point from each.
        let mut x = Vec::new();
        for c in 0..3 {
            for i in 0..50 {
                x.extend_from_slice(&[c as f32 * 100.0 + i as f32 * 1e-3, 0.0]);
            }
        }
        let idx = k_center_greedy(&x, 2, 3, 7);
        let mut clusters: Vec<usize> = idx.iter().map(|i| i / 50).collect();
        clusters.sort();
        assert_eq!(clusters, vec![0, 1, 2]);
        let first = ChaCha8Rng::seed_from_u64(7 ^ 0x9E37_79B9_7F4A_7C15).random_range(0..150);
        assert_eq!(idx[0], first);
    }

    /// The rows `fit_subset` names, given alone as `FitData::Subset`, fit the memory bank (rows, order and sources)
    /// that all the patches fit, for caps that bind at ratios whose `cap / ratio` is and is not a whole number, and
    /// without a cap; a subset of another size is refused.
    #[test]
    fn a_fit_on_the_subset_alone_is_the_fit_on_every_patch() {
        use super::super::{Detector, DetectorConfig, FitData};
        let d = 7;
        let n = 3000;
        let x = random(n * d, 11);
        let sources: Vec<u64> = (0..n as u64).map(|i| source_id(i / 100, 0)).collect();
        for (ratio, cap) in [(0.1, Some(64)), (0.3, Some(100)), (0.07, Some(33)), (0.1, None)] {
            let pc = PatchCoreConfig { coreset_ratio: ratio, max_bank_rows: cap, seed: 5, ..Default::default() };
            let cfg = DetectorConfig::Patchcore(pc.clone());
            let full = PatchCore::fit_with_sources(&x, &sources, d, pc).unwrap();
            let subset = cfg.fit_subset(n);
            assert_eq!(subset.is_some(), cap.is_some(), "ratio {ratio}, cap {cap:?}");
            let idx = subset.unwrap_or_else(|| (0..n).collect());
            let rows: Vec<f32> = idx.iter().flat_map(|&i| x[i * d..(i + 1) * d].iter().copied()).collect();
            let srcs: Vec<u64> = idx.iter().map(|&i| sources[i]).collect();
            let data = FitData::Subset { patches: &rows, sources: &srcs, of: n };
            let Detector::Patchcore(part) = Detector::fit_on(&cfg, data, d).unwrap() else { panic!("not PatchCore") };
            assert_eq!(part.memory_bank, full.memory_bank, "ratio {ratio}, cap {cap:?}");
            assert_eq!(part.sources(), full.sources(), "ratio {ratio}, cap {cap:?}");
            let short = FitData::Subset { patches: &rows[d..], sources: &srcs[1..], of: n };
            assert!(Detector::fit_on(&cfg, short, d).is_err());
        }
    }

    #[test]
    fn fit_rejects_bad_input() {
        assert!(PatchCore::fit(&[], 4, PatchCoreConfig::default()).is_err());
        assert!(PatchCore::fit(&[1.0, f32::NAN, 0.0, 0.0], 4, PatchCoreConfig::default()).is_err());
        assert!(PatchCore::fit(&[1.0; 5], 4, PatchCoreConfig::default()).is_err());
        let cfg = PatchCoreConfig { coreset_ratio: 0.0, ..Default::default() };
        assert!(PatchCore::fit(&[1.0; 8], 4, cfg).is_err());
    }

    #[test]
    fn clip_score_is_reweighted_max() {
        let d = 2;
        let bank = vec![0.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        let pc = PatchCore::from_memory_bank(bank, d, PatchCoreConfig { num_neighbors: 3, ..Default::default() });
        let q = vec![0.1, 0.0, 3.0, 0.0];
        let nn = pc.nearest(&q).unwrap();
        assert_eq!(nn.index, vec![0, 1]);
        let s = pc.clip_score(&q, &nn);
        // s* = 2 (patch (3,0) to bank (1,0)); support of (1,0): itself (d 2), (0,0) (d 3), (0,1) (d sqrt 10).
        let d = [2.0f32, 3.0, 10f32.sqrt()];
        let e: Vec<f32> = d.iter().map(|v| v.exp()).collect();
        let w = 1.0 - e[0] / e.iter().sum::<f32>();
        assert!((s - w * 2.0).abs() < 1e-6, "{s}");
    }
}
