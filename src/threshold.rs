//! A decision threshold from normal scores only.
//!
//! As in the DCASE 2020-2023 Task 2 baselines, the scores of held-out normal clips are modelled by a gamma
//! distribution and the threshold is its 90th percentile. The gamma is fitted by the method of moments
//! (`shape = mean^2 / var`, `scale = var / mean`, location 0), which is stable for the handful of scores a
//! small fit has (the baseline's `scipy.stats.gamma.fit` also frees the location, which needs many scores).

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Gamma};

use crate::error::{Error, Result};

/// Statistics of the normal (held-out) scores and the threshold derived from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NormalStats {
    /// The held-out normal scores.
    pub scores: Vec<f32>,
    /// Their mean.
    pub mean: f32,
    /// Their standard deviation.
    pub std: f32,
    /// Gamma shape `k` (method of moments); 0 when the fallback was used.
    pub gamma_shape: f32,
    /// Gamma scale `theta`; 0 when the fallback was used.
    pub gamma_scale: f32,
    /// Quantile used, e.g. 0.9.
    pub quantile: f32,
    /// The threshold: the gamma's `quantile`, or `1.1 x max` when the scores cannot support a fit (fewer than
    /// three, or no spread).
    pub threshold: f32,
}

/// Fits a gamma to `scores` and returns its `quantile`.
///
/// # Errors
/// [`Error::InvalidInput`] for no score, a non-finite or negative score, or a quantile outside (0, 1).
pub fn gamma_threshold(scores: &[f32], quantile: f32) -> Result<NormalStats> {
    if scores.is_empty() {
        return Err(Error::invalid("no normal score to set a threshold from"));
    }
    if !(quantile > 0.0 && quantile < 1.0) {
        return Err(Error::invalid(format!("threshold quantile must be in (0, 1), got {quantile}")));
    }
    if let Some(s) = scores.iter().find(|s| !s.is_finite() || **s < 0.0) {
        return Err(Error::invalid(format!("normal score {s} is not a finite non-negative number")));
    }
    let n = scores.len() as f64;
    let mean = scores.iter().map(|&s| s as f64).sum::<f64>() / n;
    let var =
        if scores.len() > 1 { scores.iter().map(|&s| (s as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    let max = scores.iter().cloned().fold(0.0f32, f32::max);
    let fallback = NormalStats {
        scores: scores.to_vec(),
        mean: mean as f32,
        std: var.sqrt() as f32,
        gamma_shape: 0.0,
        gamma_scale: 0.0,
        quantile,
        threshold: max * 1.1,
    };
    if scores.len() < 3 || var <= 1e-12 * mean * mean || mean <= 0.0 {
        return Ok(fallback);
    }
    let shape = mean * mean / var;
    let scale = var / mean;
    let Ok(g) = Gamma::new(shape, 1.0 / scale) else { return Ok(fallback) };
    let t = g.inverse_cdf(quantile as f64);
    if !t.is_finite() {
        return Ok(fallback);
    }
    Ok(NormalStats { gamma_shape: shape as f32, gamma_scale: scale as f32, threshold: t as f32, ..fallback })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_quantile_matches_scipy() {
        // scipy.stats.gamma.ppf(0.9, a=4.0, scale=0.5) = 3.3383...; scores with mean 2, var 1 give a=4, scale=0.5.
        let s = [1.0f32, 2.0, 3.0, 2.0, 1.0, 3.0];
        // mean 2, sample var = (1+0+1+0+1+1)/5 = 0.8 -> shape 5, scale 0.4; scipy: gamma.ppf(0.9, 5, scale=0.4)
        let st = gamma_threshold(&s, 0.9).unwrap();
        assert!((st.gamma_shape - 5.0).abs() < 1e-5);
        assert!((st.gamma_scale - 0.4).abs() < 1e-6);
        // scipy.stats.gamma.ppf(0.9, 5, scale=0.4) = 3.1974...
        assert!((st.threshold - 3.19741).abs() < 1e-3, "{}", st.threshold);
    }

    #[test]
    fn degenerate_scores_fall_back() {
        let st = gamma_threshold(&[2.0, 2.0, 2.0], 0.9).unwrap();
        assert!((st.threshold - 2.2).abs() < 1e-6);
        assert!(gamma_threshold(&[], 0.9).is_err());
        assert!(gamma_threshold(&[f32::NAN], 0.9).is_err());
    }
}
