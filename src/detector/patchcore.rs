//! PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022).
//!
//! Fitting keeps a coreset of the normal patches (greedy k-center selection on a seeded sparse random projection,
//! as anomalib's `KCenterGreedy`, except that the first, random centre is part of the coreset), at most
//! [`PatchCoreConfig::max_bank_rows`] rows of it: beyond that the greedy runs on a seeded random subset of the
//! patches (see [`super::coreset`]), so the cost of fitting grows linearly with the normal audio. Scoring finds
//! each query patch's nearest memory-bank patch; distances are ranked with the expansion
//! `|x|^2 - 2 x.y + |y|^2` as matrix products in chunks (bounded memory), and the winner's distance is then
//! recomputed exactly. The clip score is the largest patch distance re-weighted by the paper's eq. 7 with
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
        config.validate()?;
        if dims == 0 || patches.is_empty() || patches.len() % dims != 0 {
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
        let plan = config.plan(n);
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
        PatchCore { config, dims, memory_bank, norms, sources: Vec::new() }
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
        let norms = keep.iter().map(|&j| self.norms[j]).collect();
        let sources = keep.iter().map(|&j| self.sources[j]).collect();
        Some(PatchCore { config: self.config.clone(), dims: d, memory_bank, norms, sources })
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
        if queries.len() % d != 0 {
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
        const QC: usize = 256;
        const BC: usize = 4096;
        for_each_chunk(&mut pairs, QC, |ci, out| {
            let rows = out.len();
            let qs = &queries[ci * QC * d..(ci * QC + rows) * d];
            let qn = squared_norms(qs, d);
            let mut g = vec![0.0f32; rows * BC.min(n)];
            let mut b0 = 0;
            while b0 < n {
                let bn = (n - b0).min(BC);
                matmul_abt(qs, &self.memory_bank[b0 * d..(b0 + bn) * d], rows, bn, d, &mut g);
                if let Some((qsrc, same)) = exclude {
                    // Excluded rows: a dot product of -inf makes their distance +inf, so they never win.
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
            for (r, best) in out.iter_mut().enumerate() {
                if best.0 == f32::INFINITY {
                    *best = (f32::INFINITY, u32::MAX);
                    continue;
                }
                let i = best.1 as usize;
                best.0 = exact_distance(&qs[r * d..(r + 1) * d], &self.memory_bank[i * d..(i + 1) * d]);
            }
        });
        Ok(Nearest { distance: pairs.iter().map(|p| p.0).collect(), index: pairs.iter().map(|p| p.1).collect() })
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
        if patches.len() % d != 0 || sources.len() != patches.len() / d {
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
