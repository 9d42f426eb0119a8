//! Evaluation metrics: ROC-AUC (ties counted half, as scikit-learn's `roc_auc_score`), DCASE pAUC, F1-max, and
//! percentile bootstrap confidence intervals.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::error::{Error, Result};

fn check(labels: &[bool], scores: &[f32]) -> Result<(usize, usize)> {
    if labels.len() != scores.len() {
        return Err(Error::invalid(format!("{} labels but {} scores", labels.len(), scores.len())));
    }
    if scores.iter().any(|s| !s.is_finite()) {
        return Err(Error::invalid("a score is NaN or infinite"));
    }
    let pos = labels.iter().filter(|&&l| l).count();
    let neg = labels.len() - pos;
    if pos == 0 || neg == 0 {
        return Err(Error::invalid(format!(
            "ROC-AUC needs both classes; got {pos} anomalous and {neg} normal examples"
        )));
    }
    Ok((pos, neg))
}

/// Cumulative `(threshold, true positives, false positives)` at each distinct score, from the highest down (every
/// example scoring at least `threshold` is called anomalous).
fn cumulative_counts(labels: &[bool], scores: &[f32]) -> Vec<(f32, usize, usize)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut out = Vec::new();
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if labels[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        out.push((s, tp, fp));
    }
    out
}

/// ROC curve points `(fpr, tpr)` from the highest threshold down, one point per distinct score (scikit-learn
/// `roc_curve` with `drop_intermediate=False`), starting at `(0, 0)`.
///
/// # Errors
/// [`Error::InvalidInput`] for mismatched lengths, non-finite scores, or a single class.
pub fn roc_curve(labels: &[bool], scores: &[f32]) -> Result<Vec<(f64, f64)>> {
    let (pos, neg) = check(labels, scores)?;
    let mut pts = vec![(0.0, 0.0)];
    pts.extend(
        cumulative_counts(labels, scores)
            .into_iter()
            .map(|(_, tp, fp)| (fp as f64 / neg as f64, tp as f64 / pos as f64)),
    );
    Ok(pts)
}

/// Area under the ROC curve (trapezoids over distinct scores, so ties count one half).
///
/// # Errors
/// As [`roc_curve`].
pub fn roc_auc(labels: &[bool], scores: &[f32]) -> Result<f64> {
    let pts = roc_curve(labels, scores)?;
    Ok(pts.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).sum())
}

/// Partial AUC over FPR in `[0, max_fpr]`, McClish-standardised as scikit-learn's
/// `roc_auc_score(max_fpr=...)`, which the DCASE Task 2 evaluator uses with `max_fpr = 0.1`.
///
/// # Errors
/// As [`roc_curve`], and for `max_fpr` outside (0, 1].
pub fn partial_auc(labels: &[bool], scores: &[f32], max_fpr: f64) -> Result<f64> {
    if !(max_fpr > 0.0 && max_fpr <= 1.0) {
        return Err(Error::invalid(format!("max_fpr must be in (0, 1], got {max_fpr}")));
    }
    let pts = roc_curve(labels, scores)?;
    if max_fpr == 1.0 {
        return roc_auc(labels, scores);
    }
    let mut area = 0.0;
    for w in pts.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x0 >= max_fpr {
            break;
        }
        if x1 <= max_fpr {
            area += (x1 - x0) * (y0 + y1) / 2.0;
        } else {
            let y = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0);
            area += (max_fpr - x0) * (y0 + y) / 2.0;
            break;
        }
    }
    let min_area = 0.5 * max_fpr * max_fpr;
    Ok(0.5 * (1.0 + (area - min_area) / (max_fpr - min_area)))
}

/// Largest F1 score over all thresholds (predict anomalous when `score >= threshold`), with that threshold.
///
/// # Errors
/// As [`roc_curve`].
pub fn f1_max(labels: &[bool], scores: &[f32]) -> Result<(f64, f32)> {
    let (pos, _) = check(labels, scores)?;
    let mut best = (0.0, f32::INFINITY);
    for (s, tp, fp) in cumulative_counts(labels, scores) {
        let f1 = 2.0 * tp as f64 / (2 * tp + fp + (pos - tp)) as f64;
        if f1 > best.0 {
            best = (f1, s);
        }
    }
    Ok(best)
}

/// A metric with its percentile bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WithInterval {
    /// The metric on the whole set.
    pub value: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end of the interval.
    pub high: f64,
}

/// Percentile bootstrap interval (`level`, e.g. 0.95) of `metric` over `rounds` resamples of the examples
/// (stratified: normal and anomalous examples are resampled separately, so every resample has both classes).
/// With `rounds` 0 there is no interval: `low` and `high` are the value itself.
///
/// # Errors
/// As `metric` on the full set.
pub fn bootstrap(
    labels: &[bool],
    scores: &[f32],
    metric: impl Fn(&[bool], &[f32]) -> Result<f64>,
    rounds: usize,
    level: f64,
    seed: u64,
) -> Result<WithInterval> {
    let value = metric(labels, scores)?;
    if rounds == 0 {
        return Ok(WithInterval { value, low: value, high: value });
    }
    let pos: Vec<usize> = (0..labels.len()).filter(|&i| labels[i]).collect();
    let neg: Vec<usize> = (0..labels.len()).filter(|&i| !labels[i]).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut vals = Vec::with_capacity(rounds);
    let (mut l, mut s) = (Vec::with_capacity(labels.len()), Vec::with_capacity(labels.len()));
    for _ in 0..rounds {
        l.clear();
        s.clear();
        for group in [&pos, &neg] {
            for _ in 0..group.len() {
                let i = group[rng.random_range(0..group.len())];
                l.push(labels[i]);
                s.push(scores[i]);
            }
        }
        vals.push(metric(&l, &s)?);
    }
    vals.sort_by(f64::total_cmp);
    let q = |p: f64| vals[((p * (vals.len() - 1) as f64).round() as usize).min(vals.len() - 1)];
    let a = (1.0 - level) / 2.0;
    Ok(WithInterval { value, low: q(a), high: q(1.0 - a) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_sklearn_with_ties() {
        // sklearn.metrics.roc_auc_score([0,0,1,1,0,1], [0.1,0.4,0.35,0.8,0.4,0.4]) = 0.6666666666666667
        let l = [false, false, true, true, false, true];
        let s = [0.1, 0.4, 0.35, 0.8, 0.4, 0.4];
        assert!((roc_auc(&l, &s).unwrap() - 0.666_666_666_666_666_7).abs() < 1e-12);
        // sklearn.metrics.roc_auc_score(..., max_fpr=0.1) = 0.6622807017543859
        assert!((partial_auc(&l, &s, 0.1).unwrap() - 0.662_280_701_754_385_9).abs() < 1e-12);
        assert!(roc_auc(&[true, true], &[0.1, 0.2]).is_err());
        assert!(roc_auc(&[true, false], &[0.1, f32::NAN]).is_err());
    }

    #[test]
    fn no_bootstrap_rounds_give_the_value_alone() {
        let l = [false, true, false, true];
        let s = [0.1, 0.9, 0.3, 0.2];
        let r = bootstrap(&l, &s, roc_auc, 0, 0.95, 1).unwrap();
        assert_eq!((r.value, r.low, r.high), (0.75, 0.75, 0.75));
    }

    #[test]
    fn f1_max_small() {
        let (f1, t) = f1_max(&[false, true, true], &[0.1, 0.5, 0.9]).unwrap();
        assert_eq!((f1, t), (1.0, 0.5));
    }
}
