//! A decision threshold from normal scores only.
//!
//! As in the DCASE 2020-2023 Task 2 baselines, the scores of held-out normal clips are modelled by a gamma
//! distribution and the threshold is its 90th percentile. The gamma is fitted by the method of moments
//! (`shape = mean^2 / var`, `scale = var / mean`, location 0), which is stable for the handful of scores a
//! small fit has (the baseline's `scipy.stats.gamma.fit` also frees the location, which needs many scores).
//!
//! A few unusual normal clips dominate a gamma fitted by moments. Banks of format version 2 therefore turn each
//! member's scores into robust z-scores ([`Norm::robust`]: median and scaled median absolute deviation, which
//! ignore up to half the clips being unusual; Rousseeuw & Croux, "Alternatives to the Median Absolute Deviation",
//! JASA 1993) and set the threshold as a number of those deviations ([`ThresholdRule`]).

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

/// Consistency factor of the median absolute deviation for normal data: `1 / Phi^-1(3/4)`.
pub const MAD_TO_SIGMA: f64 = 1.482_602_218_505_602;

/// Smallest robust scale as a fraction of the median's magnitude: keeps z-scores finite and meaningful when the
/// normal clips score almost alike (a constant hum, a handful of clips with tied scores).
pub const MIN_RELATIVE_SCALE: f64 = 0.05;

/// An affine map from raw scores to z-scores, `z = (x - loc) / scale`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Norm {
    /// Location subtracted, raw units.
    pub loc: f32,
    /// Scale divided by, raw units (> 0).
    pub scale: f32,
}

impl Norm {
    /// No change (`z = x`): banks of format version 1, whose scores are raw distances.
    pub const IDENTITY: Norm = Norm { loc: 0.0, scale: 1.0 };

    /// Median and `1.4826 x` median absolute deviation of `scores`. The scale is at least
    /// [`MIN_RELATIVE_SCALE`] of the median's magnitude (and at least the smallest positive normal f32 when the
    /// median is 0), so that nearly identical normal scores do not make every other score look extreme.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for no score or a non-finite one.
    pub fn robust(scores: &[f32]) -> Result<Norm> {
        if scores.is_empty() {
            return Err(Error::invalid("no normal score to normalise by"));
        }
        if let Some(s) = scores.iter().find(|s| !s.is_finite()) {
            return Err(Error::invalid(format!("normal score {s} is not a finite number")));
        }
        let mut v: Vec<f64> = scores.iter().map(|&s| s as f64).collect();
        let med = median(&mut v);
        let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
        let mad = median(&mut dev);
        let scale = (MAD_TO_SIGMA * mad).max(MIN_RELATIVE_SCALE * med.abs()).max(f32::MIN_POSITIVE as f64);
        Ok(Norm { loc: med as f32, scale: scale as f32 })
    }

    /// `(x - loc) / scale`.
    pub fn z(&self, x: f32) -> f32 {
        (x - self.loc) / self.scale
    }

    /// The raw value whose z-score is `z`.
    pub fn raw(&self, z: f32) -> f32 {
        self.loc + z * self.scale
    }
}

/// Median of `v` (sorted in place); `v` must not be empty.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// How a bank's thresholds were set from its held-out normal scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum ThresholdRule {
    /// The `quantile` of a gamma fitted by moments to the held-out normal scores (DCASE Task 2 baselines; banks
    /// of format version 1).
    Gamma {
        /// Quantile, e.g. 0.9.
        quantile: f32,
    },
    /// A fixed number of robust standard deviations: scores are z-scores against the held-out normal scores
    /// ([`Norm::robust`]), and the clip is anomalous above `clip_z`; the temporal curve's segments start above
    /// `segment_z`.
    RobustZ {
        /// Clip threshold, z units.
        clip_z: f32,
        /// Segment threshold on the temporal curve, z units.
        segment_z: f32,
    },
}

/// Fewest normal clips a bank's threshold should be set from: with fewer, the share of normal clips a bank flags
/// at its own threshold swings widely from one choice of clips to another (RESULTS.md, "Small banks").
pub const STEADY_CLIPS: usize = 10;

/// Fewest seconds of normal audio a bank's threshold should be set from (RESULTS.md, "Small banks").
pub const STEADY_SECONDS: f64 = 100.0;

/// What a bank's threshold rests on and whether it can be trusted: the one rule behind every face's warning
/// (`sonomaly fit`, `merge` and `info`, the Python package, the page).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdSupport {
    /// Held-out normal clips the threshold was set from (each scored without what it gave the bank); the smaller
    /// of the clips and the held-out units (a bank fitted on one clip holds out parts of it).
    pub held_out_clips: usize,
    /// Seconds of normal audio fitted.
    pub seconds: f64,
    /// True when the threshold rests on fewer than [`STEADY_CLIPS`] clips or [`STEADY_SECONDS`] seconds.
    pub rough: bool,
    /// For a rough threshold, the sentence to show (what is rough, why, and how much more normal audio to give;
    /// without a `warning:` prefix); `None` otherwise.
    pub note: Option<String>,
}

impl ThresholdSupport {
    /// The rule for a threshold set from `held_out_clips` normal clips holding `seconds` of audio in all.
    pub fn new(held_out_clips: usize, seconds: f64) -> Self {
        let seconds = if seconds.is_finite() { seconds.max(0.0) } else { 0.0 };
        let rough = held_out_clips < STEADY_CLIPS || seconds < STEADY_SECONDS;
        let note = rough.then(|| {
            let clips = if held_out_clips == 1 { "1 clip".to_string() } else { format!("{held_out_clips} clips") };
            let mut more = Vec::new();
            if held_out_clips < STEADY_CLIPS {
                let n = STEADY_CLIPS - held_out_clips;
                more.push(if n == 1 { "1 more clip".to_string() } else { format!("{n} more clips") });
            }
            if seconds < STEADY_SECONDS {
                more.push(format!("{:.0} s more", (STEADY_SECONDS - seconds).ceil()));
            }
            format!(
                "the threshold is rough: it was set from {clips} ({seconds:.1} s) of normal sound, and with fewer \
                 than {STEADY_CLIPS} clips or {STEADY_SECONDS:.0} s the share of normal clips flagged at it depends \
                 on which clips were given (from none to nearly all with 5 clips or fewer); fit on {STEADY_CLIPS} or \
                 more clips of normal sound, {STEADY_SECONDS:.0} s or more in all ({})",
                more.join(" and ")
            )
        });
        ThresholdSupport { held_out_clips, seconds, rough, note }
    }
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
    fn robust_norm_ignores_outliers() {
        // numpy: np.median([1,2,3,4,100]) = 3; MAD = median(|x-3|) = median([2,1,0,1,97]) = 1.
        let n = Norm::robust(&[1.0, 2.0, 3.0, 4.0, 100.0]).unwrap();
        assert_eq!(n.loc, 3.0);
        assert!((n.scale as f64 - MAD_TO_SIGMA).abs() < 1e-6);
        assert!((n.z(100.0) - 97.0 / MAD_TO_SIGMA as f32).abs() < 1e-4);
        assert!((n.raw(n.z(7.5)) - 7.5).abs() < 1e-5);
        // Even count: median of [1,2,3,10] = 2.5, deviations [1.5,0.5,0.5,7.5] -> MAD 1.
        let n = Norm::robust(&[10.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(n.loc, 2.5);
        assert!((n.scale as f64 - MAD_TO_SIGMA).abs() < 1e-6);
    }

    #[test]
    fn robust_norm_of_ties_keeps_a_scale() {
        let n = Norm::robust(&[2.0, 2.0, 2.0, 2.1]).unwrap();
        assert!((n.scale - 0.1).abs() < 1e-6, "{n:?}");
        let n = Norm::robust(&[0.0, 0.0]).unwrap();
        assert!(n.scale > 0.0 && n.z(1.0).is_finite());
        assert!(Norm::robust(&[]).is_err());
        assert!(Norm::robust(&[1.0, f32::INFINITY]).is_err());
    }

    #[test]
    fn degenerate_scores_fall_back() {
        let st = gamma_threshold(&[2.0, 2.0, 2.0], 0.9).unwrap();
        assert!((st.threshold - 2.2).abs() < 1e-6);
        assert!(gamma_threshold(&[], 0.9).is_err());
        assert!(gamma_threshold(&[f32::NAN], 0.9).is_err());
    }

    #[test]
    fn threshold_support_at_its_bounds() {
        let steady = ThresholdSupport::new(STEADY_CLIPS, STEADY_SECONDS);
        assert!(!steady.rough && steady.note.is_none(), "{steady:?}");
        let few = ThresholdSupport::new(STEADY_CLIPS - 1, STEADY_SECONDS);
        assert!(few.rough);
        let note = few.note.unwrap();
        assert!(note.starts_with("the threshold is rough"), "{note}");
        assert!(note.contains(&format!("{} clips", STEADY_CLIPS - 1)) && note.contains("(1 more clip)"), "{note}");
        let short = ThresholdSupport::new(STEADY_CLIPS, STEADY_SECONDS - 0.5);
        assert!(short.rough && short.note.unwrap().contains("(1 s more)"));
        let one = ThresholdSupport::new(1, 3.0).note.unwrap();
        assert!(one.contains("from 1 clip (3.0 s)"), "{one}");
        assert!(
            one.contains(&format!("{} more clips and {:.0} s more", STEADY_CLIPS - 1, STEADY_SECONDS - 3.0)),
            "{one}"
        );
        assert!(ThresholdSupport::new(40, f64::NAN).rough);
    }
}
