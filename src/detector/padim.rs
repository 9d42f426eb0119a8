//! PaDiM (Defard et al., "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and
//! Localization", ICPR 2021), in two variants.
//!
//! Both keep a seeded random subset of `d` patch channels (anomalib draws 100 of resnet18's 448), fit a Gaussian
//! (mean, covariance + 0.01 I) and score each patch by its Mahalanobis distance
//! `sqrt((x - mu)^T S^-1 (x - mu))`. The covariance is inverted by a Cholesky factorisation in f64
//! (`S = L L^T`, `S^-1 = L^-T L^-1`; `S` is symmetric positive definite thanks to the `0.01 I` term).
//!
//! - [`PadimVariant::Full`] (the paper's): one Gaussian per patch position of the analysis window's grid
//!   `[T', F']`. Images are aligned, audio is not: an event can happen at any time, and windows of a clip start
//!   anywhere, so the per-time-position Gaussians mostly learn the same thing from fewer samples each.
//! - [`PadimVariant::Frequency`]: one Gaussian per frequency row of the grid, pooled over every time position of
//!   every window. It needs no alignment in time, works for any clip length and for streaming, and has `T'`
//!   times more samples per Gaussian.
//!
//! Default `d`: 100 (anomalib's choice for resnet18), capped at the patch dimension, so the default `logmel`
//! patch (9 dims) keeps all its channels; for `conv_block2,3,4` (896 dims) it keeps the state at `d + d^2` floats
//! per Gaussian: 24 Gaussians x 40 KB = 1 MB for the frequency variant, 600 x 40 KB = 24 MB for the full one.
//! The clip score is the largest patch distance (anomalib: the maximum of the anomaly map).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which Gaussians PaDiM fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadimVariant {
    /// One per position of the window's patch grid (the paper's).
    Full,
    /// One per frequency row of the grid, pooled over time.
    Frequency,
}

/// PaDiM's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PadimConfig {
    /// Channels kept (capped at the patch dimension).
    pub d: usize,
    /// Seed of the channel subset.
    pub seed: u64,
    /// Full or frequency-conditioned.
    pub variant: PadimVariant,
    /// Regularisation added to the covariance diagonal (0.01 in the paper and anomalib).
    pub epsilon: f32,
    /// Time rows of the window's patch grid `T'` (set by the fitter).
    pub grid_time: usize,
    /// Frequency columns of the window's patch grid `F'` (set by the fitter).
    pub grid_freq: usize,
}

impl Default for PadimConfig {
    fn default() -> Self {
        PadimConfig { d: 100, seed: 0, variant: PadimVariant::Frequency, epsilon: 0.01, grid_time: 0, grid_freq: 0 }
    }
}

impl PadimConfig {
    /// Number of Gaussians.
    pub fn positions(&self) -> usize {
        match self.variant {
            PadimVariant::Full => self.grid_time * self.grid_freq,
            PadimVariant::Frequency => self.grid_freq,
        }
    }

    /// Channels kept for patches of `dims` dimensions.
    pub fn kept(&self, dims: usize) -> usize {
        self.d.min(dims)
    }

    /// Floats of state per Gaussian: mean `[d]` and inverse covariance `[d, d]`.
    pub fn state_cols(&self, dims: usize) -> usize {
        let k = self.kept(dims);
        k + k * k
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for `d = 0`, a non-positive epsilon or an unset grid.
    pub fn validate(&self) -> Result<()> {
        if self.d == 0 {
            return Err(Error::invalid("PaDiM needs at least one channel (d > 0)"));
        }
        if !(self.epsilon > 0.0 && self.epsilon.is_finite()) {
            return Err(Error::invalid("PaDiM's covariance regularisation must be a positive number"));
        }
        if self.positions() == 0 {
            return Err(Error::invalid("PaDiM's patch grid is not set"));
        }
        Ok(())
    }
}

/// Seeded random subset of `k` of `dims` channels, sorted (all channels, in order, when `k >= dims`).
pub fn channel_subset(dims: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..dims).collect();
    if k >= dims {
        return idx;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in 0..k {
        let j = rng.random_range(i..dims);
        idx.swap(i, j);
    }
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

/// Inverse of a symmetric positive definite `[n, n]` matrix by Cholesky factorisation.
///
/// # Errors
/// [`Error::InvalidInput`] if the matrix is not positive definite.
pub fn spd_inverse(a: &[f64], n: usize) -> Result<Vec<f64>> {
    // L (lower) with A = L L^T.
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s.is_nan() || s <= 0.0 {
                    return Err(Error::invalid("PaDiM: covariance is not positive definite"));
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    // M = L^-1 (lower triangular), by forward substitution column by column.
    let mut m = vec![0.0f64; n * n];
    for c in 0..n {
        for i in c..n {
            let mut s = if i == c { 1.0 } else { 0.0 };
            for k in c..i {
                s -= l[i * n + k] * m[k * n + c];
            }
            m[i * n + c] = s / l[i * n + i];
        }
    }
    // A^-1 = M^T M.
    let mut inv = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (i.max(j)..n).map(|k| m[k * n + i] * m[k * n + j]).sum();
            inv[i * n + j] = s;
            inv[j * n + i] = s;
        }
    }
    Ok(inv)
}

/// A fitted PaDiM.
#[derive(Debug, Clone, PartialEq)]
pub struct Padim {
    /// Parameters.
    pub config: PadimConfig,
    /// Patch dimension `D`.
    pub dims: usize,
    channels: Vec<usize>,
    /// Per Gaussian: mean `[k]` then inverse covariance `[k, k]`, row-major: `[positions, k + k^2]`.
    pub state: Vec<f32>,
}

impl Padim {
    /// Gaussian of patch `i` of a window (or of a row-aligned run of its patches).
    fn position(&self, i: usize) -> usize {
        i % self.config.positions()
    }

    /// Fits on normal patches `[n, dims]`: whole window grids (full variant) or row-aligned runs of them.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad config, empty or non-finite patches, or a Gaussian without samples.
    pub fn fit(patches: &[f32], dims: usize, config: PadimConfig) -> Result<Self> {
        config.validate()?;
        if dims == 0 || patches.is_empty() || !patches.len().is_multiple_of(dims) {
            return Err(Error::invalid("PaDiM: no normal patches, or a length that is not a multiple of dims"));
        }
        if patches.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid("PaDiM: a normal patch holds a non-finite value"));
        }
        let k = config.kept(dims);
        let channels = channel_subset(dims, k, config.seed);
        let p = config.positions();
        let mut sum = vec![0.0f64; p * k];
        let mut outer = vec![0.0f64; p * k * k];
        let mut count = vec![0usize; p];
        let mut x = vec![0.0f64; k];
        for (i, row) in patches.chunks_exact(dims).enumerate() {
            let pos = i % p;
            for (a, &c) in channels.iter().enumerate() {
                x[a] = row[c] as f64;
            }
            count[pos] += 1;
            let s = &mut sum[pos * k..(pos + 1) * k];
            let o = &mut outer[pos * k * k..(pos + 1) * k * k];
            for a in 0..k {
                s[a] += x[a];
                for b in 0..=a {
                    o[a * k + b] += x[a] * x[b];
                }
            }
        }
        let cols = k + k * k;
        let mut state = vec![0.0f32; p * cols];
        for pos in 0..p {
            let n = count[pos];
            if n == 0 {
                return Err(Error::invalid(format!("PaDiM: patch position {pos} has no normal sample")));
            }
            let mean: Vec<f64> = sum[pos * k..(pos + 1) * k].iter().map(|s| s / n as f64).collect();
            let o = &outer[pos * k * k..(pos + 1) * k * k];
            let denom = (n.max(2) - 1) as f64;
            let mut cov = vec![0.0f64; k * k];
            for a in 0..k {
                for b in 0..=a {
                    let c = (o[a * k + b] - n as f64 * mean[a] * mean[b]) / denom;
                    cov[a * k + b] = c;
                    cov[b * k + a] = c;
                }
                cov[a * k + a] += config.epsilon as f64;
            }
            let inv = spd_inverse(&cov, k)?;
            let st = &mut state[pos * cols..(pos + 1) * cols];
            for a in 0..k {
                st[a] = mean[a] as f32;
            }
            for (j, v) in inv.iter().enumerate() {
                st[k + j] = *v as f32;
            }
        }
        Ok(Padim { config, dims, channels, state })
    }

    /// Rebuilds a fitted PaDiM from its state `[positions, k + k^2]` (from a bank).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad config or a state of the wrong size.
    pub fn from_state(state: Vec<f32>, dims: usize, config: PadimConfig) -> Result<Self> {
        config.validate()?;
        let need = config.positions() * config.state_cols(dims);
        if state.len() != need {
            return Err(Error::invalid(format!("PaDiM state has {} values, expected {need}", state.len())));
        }
        let channels = channel_subset(dims, config.kept(dims), config.seed);
        Ok(Padim { config, dims, channels, state })
    }

    /// Number of Gaussians.
    pub fn len(&self) -> usize {
        self.config.positions()
    }

    /// True if there is no Gaussian.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Mahalanobis distances of a window's patch grid `[rows, cols, dims]` (`cols` may be fewer than the fitted
    /// grid's, for a band-limited clip: the columns are the lowest frequencies).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad length or more columns than fitted.
    pub fn score_grid(&self, patches: &[f32], cols: usize) -> Result<Vec<f32>> {
        let (gt, gf) = (self.config.grid_time, self.config.grid_freq);
        if cols == 0 || cols > gf || !patches.len().is_multiple_of(self.dims * cols) {
            return Err(Error::invalid(format!("PaDiM: a grid of {cols} columns does not fit the fitted {gf}")));
        }
        let pos: Vec<usize> = (0..patches.len() / self.dims)
            .map(|i| {
                let (t, f) = (i / cols, i % cols);
                match self.config.variant {
                    PadimVariant::Full => (t.min(gt.saturating_sub(1))) * gf + f,
                    PadimVariant::Frequency => f,
                }
            })
            .collect();
        self.score_at(patches, &pos)
    }

    /// Mahalanobis distance of each patch `[n, dims]` to the Gaussian of its position (patch `i` of whole window
    /// grids, or of row-aligned runs of them).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the length is not a multiple of the fitted dimension.
    pub fn score(&self, patches: &[f32]) -> Result<Vec<f32>> {
        let pos: Vec<usize> = (0..patches.len() / self.dims.max(1)).map(|i| self.position(i)).collect();
        self.score_at(patches, &pos)
    }

    fn score_at(&self, patches: &[f32], pos: &[usize]) -> Result<Vec<f32>> {
        if !patches.len().is_multiple_of(self.dims) {
            return Err(Error::invalid(format!(
                "patches of {} values are not a multiple of the bank's {} dimensions",
                patches.len(),
                self.dims
            )));
        }
        let k = self.channels.len();
        let cols = k + k * k;
        let mut diff = vec![0.0f32; k];
        Ok(patches
            .chunks_exact(self.dims)
            .enumerate()
            .map(|(i, row)| {
                let st = &self.state[pos[i] * cols..(pos[i] + 1) * cols];
                for (a, &c) in self.channels.iter().enumerate() {
                    diff[a] = row[c] - st[a];
                }
                let inv = &st[k..];
                let mut q = 0.0f32;
                for a in 0..k {
                    let r = &inv[a * k..(a + 1) * k];
                    q += diff[a] * r.iter().zip(&diff).map(|(x, y)| x * y).sum::<f32>();
                }
                q.max(0.0).sqrt()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_of_spd() {
        let a = [4.0, 2.0, 0.6, 2.0, 2.0, 0.5, 0.6, 0.5, 3.0];
        let inv = spd_inverse(&a, 3).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| a[i * 3 + k] * inv[k * 3 + j]).sum();
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert!(spd_inverse(&[1.0, 2.0, 2.0, 1.0], 2).is_err());
    }

    #[test]
    fn mahalanobis_of_a_known_gaussian() {
        // Two positions (frequency variant, grid_freq = 2), 2-D patches.
        let cfg = PadimConfig { d: 100, grid_time: 3, grid_freq: 2, ..Default::default() };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut x = Vec::new();
        for _ in 0..4000 {
            for pos in 0..2 {
                let s = if pos == 0 { 1.0 } else { 3.0 };
                x.push(s * (rng.random::<f32>() - 0.5) * 12f32.sqrt());
                x.push(s * (rng.random::<f32>() - 0.5) * 12f32.sqrt());
            }
        }
        let p = Padim::fit(&x, 2, cfg.clone()).unwrap();
        let d = p.score(&[1.0, 0.0, 3.0, 0.0]).unwrap();
        assert!((d[0] - 1.0).abs() < 0.05 && (d[1] - 1.0).abs() < 0.05, "{d:?}");
        let q = Padim::from_state(p.state.clone(), 2, cfg).unwrap();
        assert_eq!(q.score(&[1.0, 0.0, 3.0, 0.0]).unwrap(), d);
        assert_eq!(channel_subset(10, 4, 7).len(), 4);
        assert_eq!(channel_subset(3, 9, 7), vec![0, 1, 2]);
    }
}
