//! A baseline without a backbone, so that every table shows what the patch features add.
//!
//! Each clip is described by the mean and the standard deviation over time of each log-mel band (`2 M` numbers);
//! its score is the mean Euclidean distance to its `k` nearest normal clips (default `k = 1`, the label-free
//! sanity check of `../shared/data/SOURCES.md`). It also gives a map, so that the temporal and spectrogram levels
//! can be measured for it: per pixel, the absolute z-score of the log-mel against the normal clips' pooled mean
//! and standard deviation of that band (then smoothed like every map).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Baseline parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineConfig {
    /// Nearest normal clips averaged for the score.
    pub k: usize,
    /// Mel bins `M` of the front end (set by the fitter).
    pub mel_bins: usize,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig { k: 1, mel_bins: 0 }
    }
}

impl BaselineConfig {
    /// Floats per stored row: `2 M`.
    pub fn state_cols(&self) -> usize {
        2 * self.mel_bins
    }

    /// Checks ranges.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for `k = 0` or no mel bins.
    pub fn validate(&self) -> Result<()> {
        if self.k == 0 || self.mel_bins == 0 {
            return Err(Error::invalid("baseline: k and the number of mel bins must be > 0"));
        }
        Ok(())
    }
}

/// Clip features: mean `[M]` then standard deviation `[M]` of each band over the frames of `lm` `[T, M]`.
pub fn clip_features(lm: &[f32], mel_bins: usize) -> Vec<f32> {
    let t = (lm.len() / mel_bins.max(1)).max(1);
    let mut mean = vec![0.0f64; mel_bins];
    let mut sq = vec![0.0f64; mel_bins];
    for row in lm.chunks_exact(mel_bins) {
        for (m, &v) in row.iter().enumerate() {
            mean[m] += v as f64;
            sq[m] += (v as f64) * (v as f64);
        }
    }
    let mut out: Vec<f32> = mean.iter().map(|s| (s / t as f64) as f32).collect();
    out.extend(mean.iter().zip(&sq).map(|(s, q)| {
        let mu = s / t as f64;
        (q / t as f64 - mu * mu).max(0.0).sqrt() as f32
    }));
    out
}

/// A fitted baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// Parameters.
    pub config: BaselineConfig,
    /// Patch dimension of the bank's embedding (kept for bank compatibility checks; unused for scoring).
    pub dims: usize,
    /// Row 0: pooled band mean `[M]` and standard deviation `[M]` of the normal frames; rows 1..: the normal
    /// clips' features `[2 M]`.
    pub state: Vec<f32>,
}

impl Baseline {
    /// Fits on the log-mels `[T_i, M]` of normal clips.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad config or no clip.
    pub fn fit(logmels: &[&[f32]], dims: usize, config: BaselineConfig) -> Result<Self> {
        config.validate()?;
        let m = config.mel_bins;
        if logmels.is_empty() || logmels.iter().any(|l| l.is_empty() || l.len() % m != 0) {
            return Err(Error::invalid("baseline: no normal clip, or a log-mel of the wrong width"));
        }
        let mut sum = vec![0.0f64; m];
        let mut sq = vec![0.0f64; m];
        let mut n = 0usize;
        for l in logmels {
            for row in l.chunks_exact(m) {
                for (b, &v) in row.iter().enumerate() {
                    sum[b] += v as f64;
                    sq[b] += (v as f64) * (v as f64);
                }
                n += 1;
            }
        }
        let mut state: Vec<f32> = sum.iter().map(|s| (s / n as f64) as f32).collect();
        state.extend(sum.iter().zip(&sq).map(|(s, q)| {
            let mu = s / n as f64;
            ((q / n as f64 - mu * mu).max(0.0).sqrt() as f32).max(1e-6)
        }));
        for l in logmels {
            state.extend(clip_features(l, m));
        }
        Ok(Baseline { config, dims, state })
    }

    /// Rebuilds from a bank's state `[clips + 1, 2 M]`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad config or size.
    pub fn from_state(state: Vec<f32>, dims: usize, config: BaselineConfig) -> Result<Self> {
        config.validate()?;
        let c = config.state_cols();
        if state.len() < 2 * c || !state.len().is_multiple_of(c) {
            return Err(Error::invalid("baseline state has the wrong size"));
        }
        Ok(Baseline { config, dims, state })
    }

    /// Rows of the state (normal clips + 1).
    pub fn rows(&self) -> usize {
        self.state.len() / self.config.state_cols()
    }

    /// Clip score and unsmoothed map `[T, M]` of a log-mel `[T, M]`.
    pub fn score(&self, lm: &[f32]) -> (f32, Vec<f32>) {
        let m = self.config.mel_bins;
        let c = self.config.state_cols();
        let f = clip_features(lm, m);
        let mut d: Vec<f32> = self.state[c..]
            .chunks_exact(c)
            .map(|r| r.iter().zip(&f).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt())
            .collect();
        d.sort_by(f32::total_cmp);
        let k = self.config.k.min(d.len()).max(1);
        let score = d[..k].iter().sum::<f32>() / k as f32;
        let (mu, sd) = (&self.state[..m], &self.state[m..2 * m]);
        let map = lm.iter().enumerate().map(|(i, v)| ((v - mu[i % m]) / sd[i % m]).abs()).collect();
        (score, map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_clip_distance() {
        let cfg = BaselineConfig { k: 1, mel_bins: 2 };
        let a = [0.0f32, 1.0, 0.0, 1.0];
        let b = [1.0f32, 1.0, 1.0, 1.0];
        let base = Baseline::fit(&[&a, &b], 9, cfg.clone()).unwrap();
        assert_eq!(base.rows(), 3);
        let (s, map) = base.score(&a);
        assert_eq!(s, 0.0);
        assert_eq!(map.len(), 4);
        let (s, _) = base.score(&[3.0, 1.0, 3.0, 1.0]);
        assert!((s - 2.0).abs() < 1e-6);
        assert_eq!(Baseline::from_state(base.state.clone(), 9, cfg).unwrap(), base);
    }
}
