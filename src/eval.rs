//! Evaluation the way the reference paper (Barusco et al., arXiv 2502.18328) reports it, with confidence intervals.
//!
//! A labelled test list ([`read_test_csv`]: `path,label` and optionally `onset_s,offset_s,snr_db,mask`) is scored
//! with a bank, then:
//!
//! - **sample-level**: one score per clip; ROC-AUC, pAUC (FPR <= 0.1, McClish-standardised as scikit-learn's
//!   `roc_auc_score(max_fpr=0.1)`, the DCASE Task 2 definition) and F1-max; 95 % intervals by the stratified
//!   percentile bootstrap of [`crate::metrics::bootstrap`].
//! - **temporal-level**: ROC-AUC of the temporal curve per frame against the onset/offset ground truth (frame `t`
//!   at `t * hop_s` seconds is anomalous when `onset <= t * hop_s < offset`; every frame of a normal clip is
//!   normal). Only clips whose ground truth is known take part: normal clips and anomalous clips with an onset.
//! - **spectrogram-level**: ROC-AUC of the anomaly map per time-frequency pixel against the mask (normal clips:
//!   an empty mask); clips with a mask and normal clips take part.
//! - **Faithfulness** at q in {5, 10, 20} %: on the anomalous clips, the top-q % pixels of the anomaly map are
//!   replaced in the log-mel by the clip's median level of their mel band, and the clip is scored again; the
//!   relative score drop `(s - s') / s` is compared with the drop for a region of the same size and shape at a
//!   random place (the same pixel set shifted cyclically by a random time and frequency offset). A faithful map
//!   gives a larger drop for its own region than for the random one.
//!
//! Frame- and pixel-level intervals resample *clips* (stratified by the clip's label), not frames or pixels,
//! since neighbouring frames are not independent; the AUC of each resample is computed in one pass over the
//! pooled values sorted once, with each clip weighted by how often it was drawn.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::audio::{decode_file, to_mono, ChannelSelect};
use crate::bank::Bank;
use crate::error::{Error, Result};
use crate::metrics::{bootstrap, f1_max, partial_auc, roc_auc, roc_curve, WithInterval};
use crate::pipeline::{score_clip, score_logmel, ClipResult, Model};
use crate::spectrogram::Spectrogram;

/// Faithfulness region sizes, percent of the spectrogram's pixels.
pub const FAITHFULNESS_Q: [f64; 3] = [5.0, 10.0, 20.0];

/// One labelled test clip.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestItem {
    /// Audio file.
    pub path: PathBuf,
    /// Anomalous.
    pub anomaly: bool,
    /// Event onset, seconds.
    pub onset_s: Option<f64>,
    /// Event offset, seconds.
    pub offset_s: Option<f64>,
    /// SNR of the inserted event, dB (EnvMix).
    pub snr_db: Option<f64>,
    /// Spectrogram-level mask (PGM from `sonomaly mix`).
    pub mask: Option<PathBuf>,
}

/// Splits one CSV line (double quotes, doubled quotes inside).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Parses a label: `normal`, `ok`, `0`, `false` or `anomaly`, `anomalous`, `abnormal`, `1`, `true`.
pub fn parse_label(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "normal" | "ok" | "0" | "false" => Some(false),
        "anomaly" | "anomalous" | "abnormal" | "1" | "true" => Some(true),
        _ => None,
    }
}

/// Reads a test list: a header with at least `path` and `label`; optional `onset_s`, `offset_s`, `snr_db`, `mask`.
/// Relative paths are relative to the CSV's folder.
///
/// # Errors
/// [`Error::Io`] for an unreadable file; [`Error::InvalidInput`] naming the line for a missing column or a bad
/// value.
pub fn read_test_csv(path: &Path) -> Result<Vec<TestItem>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = csv_fields(lines.next().unwrap_or("")).iter().map(|s| s.trim().to_string()).collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(pc), Some(lc)) = (col("path"), col("label")) else {
        return Err(Error::invalid(format!("{}: the header needs 'path' and 'label' columns", path.display())));
    };
    let num = |f: &[String], c: Option<usize>, n: usize| -> Result<Option<f64>> {
        match c.and_then(|c| f.get(c)).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| Error::invalid(format!("{} line {n}: '{s}' is not a number", path.display()))),
        }
    };
    let resolve = |p: &str| {
        let p = PathBuf::from(p.trim());
        if p.is_absolute() {
            p
        } else {
            base.join(p)
        }
    };
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let f = csv_fields(line);
        let get = |c: usize| f.get(c).map(|s| s.as_str()).unwrap_or("");
        let anomaly = parse_label(get(lc))
            .ok_or_else(|| Error::invalid(format!("{} line {n}: unknown label '{}'", path.display(), get(lc))))?;
        let mask = col("mask").map(get).map(str::trim).filter(|s| !s.is_empty()).map(resolve);
        out.push(TestItem {
            path: resolve(get(pc)),
            anomaly,
            onset_s: num(&f, col("onset_s"), n)?,
            offset_s: num(&f, col("offset_s"), n)?,
            snr_db: num(&f, col("snr_db"), n)?,
            mask,
        });
    }
    if out.is_empty() {
        return Err(Error::invalid(format!("{}: no test clip listed", path.display())));
    }
    Ok(out)
}

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalConfig {
    /// Bootstrap resamples.
    pub bootstrap_rounds: usize,
    /// Seed of the bootstrap and the random faithfulness regions.
    pub seed: u64,
    /// Largest number of anomalous clips used for faithfulness (each costs 2 re-scorings per q); 0 = none.
    pub faithfulness_clips: usize,
    /// Channel of multi-channel files.
    pub channel: ChannelSelect,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig { bootstrap_rounds: 1000, seed: 0, faithfulness_clips: 30, channel: ChannelSelect::Mix }
    }
}

/// Metrics of one subset of the test clips.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// Normal clips.
    pub normal: usize,
    /// Anomalous clips.
    pub anomalous: usize,
    /// Sample-level ROC-AUC.
    pub sample_auc: WithInterval,
    /// Sample-level pAUC, FPR <= 0.1.
    pub sample_pauc: WithInterval,
    /// Sample-level F1-max.
    pub sample_f1_max: WithInterval,
    /// Temporal-level ROC-AUC (None without onset/offset ground truth).
    pub temporal_auc: Option<WithInterval>,
    /// Spectrogram-level ROC-AUC (None without masks).
    pub spectrogram_auc: Option<WithInterval>,
    /// Share of the anomalous clips the bank's own threshold flags (true positive rate at the threshold).
    pub flagged_anomalous: f64,
    /// Share of the normal clips the bank's own threshold flags (false positive rate at the threshold).
    pub flagged_normal: f64,
    /// Mean share of a normal clip's judged pixels that the page paints (map at or above the display floor).
    pub painted_normal: f64,
    /// The same for the anomalous clips.
    pub painted_anomalous: f64,
    /// Sample-level ROC-AUC of each member's own clip score `(name, AUC)`, for banks of several members.
    pub member_sample_auc: Vec<(String, f64)>,
}

/// Faithfulness at one q.
#[derive(Debug, Clone, Serialize)]
pub struct Faithfulness {
    /// Percent of pixels replaced.
    pub q: f64,
    /// Clips measured.
    pub clips: usize,
    /// Mean relative score drop when the heatmap's top-q % region is replaced, percent.
    pub drop_top: WithInterval,
    /// Mean relative score drop for a random region of the same size and shape, percent.
    pub drop_random: WithInterval,
    /// `drop_top - drop_random`, percentage points.
    pub difference: WithInterval,
}

/// One clip's result in the report.
#[derive(Debug, Clone, Serialize)]
pub struct ClipScore {
    /// File.
    pub path: String,
    /// Anomalous.
    pub anomaly: bool,
    /// SNR, dB.
    pub snr_db: Option<f64>,
    /// Clip score.
    pub score: f32,
    /// Flagged by the bank's threshold.
    pub is_anomaly: bool,
    /// Each member's clip score (bank units).
    pub members: Vec<f32>,
    /// Share of the judged pixels painted at the default display.
    pub painted: f32,
    /// Distance of the clip's band levels from the normal clips' (see [`ClipResult::level_distance`]).
    pub level_distance: Option<f32>,
}

/// Points of a ROC curve for plotting.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    /// Which level.
    pub name: String,
    /// `(fpr, tpr)` points, at most about 200.
    pub points: Vec<(f64, f64)>,
}

/// Everything an evaluation measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    /// Free label (e.g. the set's name).
    pub name: String,
    /// Detector kind.
    pub detector: String,
    /// Layers of the patches.
    pub layers: String,
    /// Bank size, e.g. `1234 x 9` (stored rows x patch dimensions).
    pub bank: String,
    /// Floats of detector state in the bank (PatchCore: rows x dims; PaDiM: Gaussians x (d + d^2)).
    pub bank_floats: usize,
    /// Clips fitted.
    pub fit_clips: usize,
    /// Units of scores and thresholds: `z` or `distance`.
    pub units: String,
    /// The bank's clip threshold.
    pub threshold: f32,
    /// The bank's segment threshold.
    pub segment_threshold: f32,
    /// Held-out normal clip scores of the bank (its calibration), bank units.
    pub calibration_scores: Vec<f32>,
    /// Bootstrap resamples.
    pub bootstrap_rounds: usize,
    /// Metrics on all test clips.
    pub overall: Metrics,
    /// Metrics per SNR (normal clips + the anomalous clips of that SNR).
    pub per_snr: Vec<(f64, Metrics)>,
    /// Faithfulness at each q.
    pub faithfulness: Vec<Faithfulness>,
    /// Per-clip scores.
    pub clips: Vec<ClipScore>,
    /// ROC curves (sample, temporal, spectrogram).
    pub curves: Vec<Curve>,
    /// Seconds spent scoring.
    pub score_seconds: f64,
    /// Seconds spent on faithfulness.
    pub faithfulness_seconds: f64,
    /// Example heatmaps (PNG bytes, base64) with captions, for the HTML report.
    #[serde(skip)]
    pub examples: Vec<(String, String)>,
}

/// Pooled per-unit (frame or pixel) scores of several clips, sorted once for fast weighted AUCs.
struct Pooled {
    /// `(score, label, clip)` sorted by descending score.
    items: Vec<(f32, bool, u32)>,
    clip_label: Vec<bool>,
}

impl Pooled {
    fn new(mut items: Vec<(f32, bool, u32)>, clip_label: Vec<bool>) -> Self {
        items.sort_by(|a, b| b.0.total_cmp(&a.0));
        Pooled { items, clip_label }
    }

    /// Weighted ROC-AUC (ties count one half), and optionally the curve.
    fn auc(&self, w: &[f64], curve: Option<&mut Vec<(f64, f64)>>) -> Option<f64> {
        let (mut p, mut n) = (0.0, 0.0);
        for &(_, l, c) in &self.items {
            if l {
                p += w[c as usize];
            } else {
                n += w[c as usize];
            }
        }
        if p == 0.0 || n == 0.0 {
            return None;
        }
        let (mut tp, mut fp, mut area) = (0.0f64, 0.0f64, 0.0f64);
        let mut pts = Vec::new();
        let mut i = 0;
        while i < self.items.len() {
            let s = self.items[i].0;
            let (tp0, fp0) = (tp, fp);
            while i < self.items.len() && self.items[i].0 == s {
                let (_, l, c) = self.items[i];
                if l {
                    tp += w[c as usize];
                } else {
                    fp += w[c as usize];
                }
                i += 1;
            }
            area += (fp - fp0) * (tp + tp0) / 2.0;
            pts.push((fp / n, tp / p));
        }
        if let Some(out) = curve {
            let step = (pts.len() / 200).max(1);
            out.push((0.0, 0.0));
            out.extend(pts.iter().step_by(step).cloned());
            out.push((1.0, 1.0));
        }
        Some(area / (p * n))
    }

    /// AUC with a clip-resampling (stratified) percentile bootstrap interval.
    fn auc_interval(&self, rounds: usize, seed: u64) -> Option<WithInterval> {
        let ones = vec![1.0; self.clip_label.len()];
        let value = self.auc(&ones, None)?;
        let pos: Vec<usize> = (0..self.clip_label.len()).filter(|&i| self.clip_label[i]).collect();
        let neg: Vec<usize> = (0..self.clip_label.len()).filter(|&i| !self.clip_label[i]).collect();
        let vals: Vec<f64> = (0..rounds as u64)
            .into_par_iter()
            .filter_map(|r| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(r.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
                let mut w = vec![0.0; self.clip_label.len()];
                for g in [&pos, &neg] {
                    for _ in 0..g.len() {
                        w[g[rng.random_range(0..g.len())]] += 1.0;
                    }
                }
                self.auc(&w, None)
            })
            .collect();
        Some(interval(value, vals))
    }
}

fn interval(value: f64, mut vals: Vec<f64>) -> WithInterval {
    if vals.is_empty() {
        return WithInterval { value, low: value, high: value };
    }
    vals.sort_by(f64::total_cmp);
    let q = |p: f64| vals[((p * (vals.len() - 1) as f64).round() as usize).min(vals.len() - 1)];
    WithInterval { value, low: q(0.025), high: q(0.975) }
}

/// Mean with a percentile bootstrap interval over the values.
fn mean_interval(x: &[f64], rounds: usize, seed: u64) -> WithInterval {
    if x.is_empty() {
        return WithInterval { value: f64::NAN, low: f64::NAN, high: f64::NAN };
    }
    let mean = |v: &mut dyn Iterator<Item = f64>| {
        let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
        s / n as f64
    };
    let value = mean(&mut x.iter().cloned());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let vals = (0..rounds).map(|_| mean(&mut (0..x.len()).map(|_| x[rng.random_range(0..x.len())]))).collect();
    interval(value, vals)
}

/// Frame `t`'s label from onset/offset: `onset <= t * hop_s < offset`.
fn frame_label(item: &TestItem, t: usize, hop_s: f64) -> Option<bool> {
    if !item.anomaly {
        return Some(false);
    }
    let (a, b) = (item.onset_s?, item.offset_s?);
    let time = t as f64 * hop_s;
    Some(time >= a && time < b)
}

/// The mask `[T, M]` of `item` resized (nearest) to `frames x mel_bins`; normal clips: empty.
fn mask_for(item: &TestItem, frames: usize, mel_bins: usize) -> Result<Option<Vec<u8>>> {
    if !item.anomaly {
        return Ok(Some(vec![0; frames * mel_bins]));
    }
    let Some(p) = &item.mask else { return Ok(None) };
    let (m, rows, cols) = crate::mix::read_mask_pgm(p)?;
    if rows == frames && cols == mel_bins {
        return Ok(Some(m));
    }
    let mut out = vec![0u8; frames * mel_bins];
    for t in 0..frames {
        let r = (t * rows / frames.max(1)).min(rows.saturating_sub(1));
        for f in 0..mel_bins {
            let c = (f * cols / mel_bins.max(1)).min(cols.saturating_sub(1));
            out[t * mel_bins + f] = m[r * cols + c];
        }
    }
    Ok(Some(out))
}

fn metrics_of(
    items: &[TestItem],
    results: &[ClipResult],
    masks: &[Option<Vec<u8>>],
    subset: &[usize],
    rounds: usize,
    seed: u64,
    curves: Option<&mut Vec<Curve>>,
) -> Result<Metrics> {
    let labels: Vec<bool> = subset.iter().map(|&i| items[i].anomaly).collect();
    let scores: Vec<f32> = subset.iter().map(|&i| results[i].score).collect();
    let sample_auc = bootstrap(&labels, &scores, roc_auc, rounds, 0.95, seed)?;
    let sample_pauc = bootstrap(&labels, &scores, |l, s| partial_auc(l, s, 0.1), rounds, 0.95, seed)?;
    let sample_f1_max = bootstrap(&labels, &scores, |l, s| f1_max(l, s).map(|x| x.0), rounds, 0.95, seed)?;
    // Temporal.
    let mut frames = Vec::new();
    let mut clip_label = Vec::new();
    for &i in subset {
        let r = &results[i];
        if frame_label(&items[i], 0, r.hop_s).is_none() {
            continue;
        }
        let c = clip_label.len() as u32;
        clip_label.push(items[i].anomaly);
        for (t, &v) in r.curve.iter().enumerate() {
            frames.push((v, frame_label(&items[i], t, r.hop_s).unwrap_or(false), c));
        }
    }
    let temporal = Pooled::new(frames, clip_label);
    let temporal_auc = temporal.auc_interval(rounds.min(400), seed);
    // Spectrogram.
    // The interval resamples clips on every second frame and mel bin (the maps are smooth, sigma 4 pixels), the
    // value uses every pixel.
    let (mut pixels, mut sub) = (Vec::new(), Vec::new());
    let mut clip_label = Vec::new();
    for &i in subset {
        let Some(m) = &masks[i] else { continue };
        let c = clip_label.len() as u32;
        clip_label.push(items[i].anomaly);
        let bins = results[i].mel_bins;
        for (p, (&v, &l)) in results[i].map.iter().zip(m).enumerate() {
            pixels.push((v, l > 0, c));
            if (p / bins).is_multiple_of(2) && (p % bins).is_multiple_of(2) {
                sub.push((v, l > 0, c));
            }
        }
    }
    let share = |anomaly: bool, f: &dyn Fn(&ClipResult) -> f64| -> f64 {
        let v: Vec<f64> = subset.iter().filter(|&&i| items[i].anomaly == anomaly).map(|&i| f(&results[i])).collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let flag = |r: &ClipResult| if r.is_anomaly { 1.0 } else { 0.0 };
    let painted = |r: &ClipResult| r.painted_fraction() as f64;
    let n_members = subset.first().map_or(0, |&i| results[i].members.len());
    let member_sample_auc = if n_members > 1 {
        (0..n_members)
            .map(|k| {
                let s: Vec<f32> = subset.iter().map(|&i| results[i].members[k].score).collect();
                Ok((results[subset[0]].members[k].name.clone(), roc_auc(&labels, &s).unwrap_or(f64::NAN)))
            })
            .collect::<Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let spectral_sub = Pooled::new(sub, clip_label.clone());
    let spectral = Pooled::new(pixels, clip_label);
    let spectrogram_auc = spectral_sub.auc_interval(rounds.min(200), seed).and_then(|w| {
        let v = spectral.auc(&vec![1.0; spectral.clip_label.len()], None)?;
        Some(WithInterval { value: v, low: w.low.min(v), high: w.high.max(v) })
    });
    if let Some(curves) = curves {
        curves.push(Curve { name: "sample".into(), points: roc_curve(&labels, &scores)? });
        let ones = vec![1.0; subset.len()];
        let mut pts = Vec::new();
        if temporal.auc(&ones, Some(&mut pts)).is_some() {
            curves.push(Curve { name: "temporal".into(), points: pts });
        }
        let mut pts = Vec::new();
        if spectral.auc(&ones, Some(&mut pts)).is_some() {
            curves.push(Curve { name: "spectrogram".into(), points: pts });
        }
    }
    Ok(Metrics {
        normal: labels.iter().filter(|l| !**l).count(),
        anomalous: labels.iter().filter(|l| **l).count(),
        sample_auc,
        sample_pauc,
        sample_f1_max,
        temporal_auc: temporal_auc.filter(|_| temporal.clip_label.iter().any(|l| *l)),
        spectrogram_auc: spectrogram_auc.filter(|_| spectral.clip_label.iter().any(|l| *l)),
        flagged_anomalous: share(true, &flag),
        flagged_normal: share(false, &flag),
        painted_normal: share(false, &painted),
        painted_anomalous: share(true, &painted),
        member_sample_auc,
    })
}

/// The log-mel with the pixels of `region` replaced by the median level of their band over the clip.
fn replace_region(lm: &[f32], frames: usize, mel_bins: usize, region: &[usize]) -> Vec<f32> {
    let mut medians = vec![0.0f32; mel_bins];
    for (f, med) in medians.iter_mut().enumerate() {
        let mut col: Vec<f32> = (0..frames).map(|t| lm[t * mel_bins + f]).collect();
        col.sort_by(f32::total_cmp);
        *med = col[col.len() / 2];
    }
    let mut out = lm.to_vec();
    for &p in region {
        out[p] = medians[p % mel_bins];
    }
    out
}

fn faithfulness(
    model: &Model,
    bank: &Bank,
    items: &[TestItem],
    results: &[ClipResult],
    cfg: &EvalConfig,
) -> Result<Vec<Faithfulness>> {
    let chosen: Vec<usize> = (0..items.len()).filter(|&i| items[i].anomaly).take(cfg.faithfulness_clips).collect();
    if chosen.is_empty() {
        return Ok(Vec::new());
    }
    // drops[q][clip] = (top, random)
    let per_clip: Vec<Result<Vec<(f64, f64)>>> = chosen
        .par_iter()
        .map(|&i| {
            let r = &results[i];
            let (t, m) = (r.frames, r.mel_bins);
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut order: Vec<usize> = (0..t * m).collect();
            order.sort_by(|&a, &b| r.map[b].total_cmp(&r.map[a]));
            let s0 = r.score as f64;
            // Relative to the lowest score the bank can give (0 for raw distances; the largest member z-score of
            // a raw 0 for z-scored banks), so that the drop is the share of the clip's evidence removed.
            let floor = score_floor(bank);
            let mut out = Vec::new();
            for q in FAITHFULNESS_Q {
                let k = ((q / 100.0) * (t * m) as f64).round() as usize;
                let top = &order[..k];
                let (dt, df) = (rng.random_range(0..t.max(1)), rng.random_range(0..m.max(1)));
                let random: Vec<usize> = top.iter().map(|&p| ((p / m + dt) % t) * m + (p % m + df) % m).collect();
                let drop = |region: &[usize]| -> Result<f64> {
                    let data = replace_region(&r.logmel, t, m, region);
                    let lm = Spectrogram { frames: t, mel_bins: m, data };
                    let s = score_logmel(model, bank, &lm, &mut |_, _| {})?.score as f64;
                    Ok(if s0 > floor { 100.0 * (s0 - s) / (s0 - floor) } else { 0.0 })
                };
                out.push((drop(top)?, drop(&random)?));
            }
            Ok(out)
        })
        .collect();
    let per_clip: Vec<Vec<(f64, f64)>> = per_clip.into_iter().collect::<Result<_>>()?;
    let rounds = cfg.bootstrap_rounds;
    Ok(FAITHFULNESS_Q
        .iter()
        .enumerate()
        .map(|(qi, &q)| {
            let top: Vec<f64> = per_clip.iter().map(|c| c[qi].0).collect();
            let rnd: Vec<f64> = per_clip.iter().map(|c| c[qi].1).collect();
            let diff: Vec<f64> = top.iter().zip(&rnd).map(|(a, b)| a - b).collect();
            Faithfulness {
                q,
                clips: top.len(),
                drop_top: mean_interval(&top, rounds, cfg.seed),
                drop_random: mean_interval(&rnd, rounds, cfg.seed),
                difference: mean_interval(&diff, rounds, cfg.seed),
            }
        })
        .collect())
}

/// The lowest clip score `bank` can give: the largest member z-score of a raw score of 0.
fn score_floor(bank: &Bank) -> f64 {
    bank.meta.members.iter().map(|m| m.score_norm.z(0.0) as f64).fold(f64::NEG_INFINITY, f64::max)
}

fn png_base64(r: &ClipResult) -> String {
    let img = crate::render::render(r);
    let mut bytes = Vec::new();
    let _ = img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png);
    base64(&bytes)
}

/// Standard base64 with padding.
pub fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                s.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Scores `items` with `bank` (in parallel) and measures everything. `name` labels the report.
///
/// # Errors
/// [`Error::InvalidInput`] when the test set lacks one of the classes; the first unreadable clip's error.
pub fn evaluate(model: &Model, bank: &Bank, items: &[TestItem], cfg: &EvalConfig, name: &str) -> Result<EvalReport> {
    let start = std::time::Instant::now();
    let results: Vec<Result<ClipResult>> = items
        .par_iter()
        .map(|it| {
            let a = decode_file(&it.path)?;
            let x = to_mono(&a, cfg.channel)?;
            score_clip(model, bank, &x, a.sample_rate)
                .map_err(|e| Error::invalid(format!("{}: {e}", it.path.display())))
        })
        .collect();
    let results: Vec<ClipResult> = results.into_iter().collect::<Result<_>>()?;
    let score_seconds = start.elapsed().as_secs_f64();
    let masks: Vec<Option<Vec<u8>>> =
        items.iter().zip(&results).map(|(it, r)| mask_for(it, r.frames, r.mel_bins)).collect::<Result<_>>()?;
    let all: Vec<usize> = (0..items.len()).collect();
    let rounds = cfg.bootstrap_rounds;
    let mut curves = Vec::new();
    let overall = metrics_of(items, &results, &masks, &all, rounds, cfg.seed, Some(&mut curves))?;
    let mut snrs: Vec<f64> = items.iter().filter_map(|i| i.snr_db).collect();
    snrs.sort_by(f64::total_cmp);
    snrs.dedup();
    let mut per_snr = Vec::new();
    if snrs.len() > 1 {
        for &s in &snrs {
            let subset: Vec<usize> =
                (0..items.len()).filter(|&i| !items[i].anomaly || items[i].snr_db == Some(s)).collect();
            per_snr.push((s, metrics_of(items, &results, &masks, &subset, rounds, cfg.seed, None)?));
        }
    }
    let fstart = std::time::Instant::now();
    let faithfulness = faithfulness(model, bank, items, &results, cfg)?;
    let faithfulness_seconds = fstart.elapsed().as_secs_f64();
    // Examples: best and worst anomalous, worst and best normal.
    let pick = |anomaly: bool, highest: bool| -> Option<usize> {
        let mut v: Vec<usize> = (0..items.len()).filter(|&i| items[i].anomaly == anomaly).collect();
        v.sort_by(|&a, &b| results[a].score.total_cmp(&results[b].score));
        if highest {
            v.last().copied()
        } else {
            v.first().copied()
        }
    };
    let mut examples = Vec::new();
    for (what, i) in [
        ("highest-scored anomalous clip", pick(true, true)),
        ("lowest-scored anomalous clip (the likeliest miss)", pick(true, false)),
        ("highest-scored normal clip (the likeliest false alarm)", pick(false, true)),
        ("lowest-scored normal clip", pick(false, false)),
    ] {
        if let Some(i) = i {
            let it = &items[i];
            let gt = match (it.onset_s, it.offset_s) {
                (Some(a), Some(b)) => format!(", event {a:.2}-{b:.2} s"),
                _ => String::new(),
            };
            let snr = it.snr_db.map(|s| format!(", SNR {s:+} dB")).unwrap_or_default();
            examples.push((
                format!("{what}: {} (score {:.4}{gt}{snr})", it.path.display(), results[i].score),
                png_base64(&results[i]),
            ));
        }
    }
    let info = bank.info();
    Ok(EvalReport {
        name: name.to_string(),
        detector: info.detector,
        layers: info.layers,
        bank: info.memory_bank,
        bank_floats: bank.state_floats(),
        fit_clips: info.clips_fitted,
        units: info.units.clone(),
        threshold: bank.meta.threshold,
        segment_threshold: bank.meta.segment_threshold,
        calibration_scores: bank.meta.fused_scores.clone(),
        bootstrap_rounds: rounds,
        overall,
        per_snr,
        faithfulness,
        clips: items
            .iter()
            .zip(&results)
            .map(|(it, r)| ClipScore {
                path: it.path.display().to_string(),
                anomaly: it.anomaly,
                snr_db: it.snr_db,
                score: r.score,
                is_anomaly: r.is_anomaly,
                members: r.members.iter().map(|m| m.score).collect(),
                painted: r.painted_fraction(),
                level_distance: r.level_distance,
            })
            .collect(),
        curves,
        score_seconds,
        faithfulness_seconds,
        examples,
    })
}

/// `0.905 [0.725, 1.000]`, or `-`.
pub fn fmt_ci(w: Option<&WithInterval>) -> String {
    match w {
        Some(w) if w.value.is_finite() => format!("{:.3} [{:.3}, {:.3}]", w.value, w.low, w.high),
        _ => "-".to_string(),
    }
}

fn fmt_pct(w: &WithInterval) -> String {
    format!("{:.1} [{:.1}, {:.1}]", w.value, w.low, w.high)
}

/// Markdown header of [`markdown_row`]s.
pub const MARKDOWN_HEADER: &str =
    "| set | detector | layers | sample ROC-AUC | sample pAUC (FPR<=0.1) | sample F1-max | \
temporal ROC-AUC | spectrogram ROC-AUC | flagged: anomalous / normal | painted: anomalous / normal |\n\
|---|---|---|---|---|---|---|---|---|---|\n";

/// One Markdown table row for the overall metrics (or a subset's).
pub fn markdown_row(set: &str, detector: &str, layers: &str, m: &Metrics) -> String {
    format!(
        "| {set} | {detector} | {layers} | {} | {} | {} | {} | {} | {:.0} % / {:.0} % | {:.1} % / {:.1} % |\n",
        fmt_ci(Some(&m.sample_auc)),
        fmt_ci(Some(&m.sample_pauc)),
        fmt_ci(Some(&m.sample_f1_max)),
        fmt_ci(m.temporal_auc.as_ref()),
        fmt_ci(m.spectrogram_auc.as_ref()),
        100.0 * m.flagged_anomalous,
        100.0 * m.flagged_normal,
        100.0 * m.painted_anomalous,
        100.0 * m.painted_normal
    )
}

/// The whole report as Markdown: overall, per SNR, faithfulness.
pub fn markdown(r: &EvalReport) -> String {
    let mut s = format!(
        "### {} — {} ({}; bank {}; {} clips fitted; threshold {:.3}, segment threshold {:.3}, {} units)\n\n\
         {MARKDOWN_HEADER}",
        r.name, r.detector, r.layers, r.bank, r.fit_clips, r.threshold, r.segment_threshold, r.units
    );
    s += &markdown_row(
        &format!("all ({} normal, {} anomalous)", r.overall.normal, r.overall.anomalous),
        &r.detector,
        &r.layers,
        &r.overall,
    );
    for (snr, m) in &r.per_snr {
        s += &markdown_row(&format!("SNR {snr:+} dB ({} anomalous)", m.anomalous), &r.detector, &r.layers, m);
    }
    if !r.overall.member_sample_auc.is_empty() {
        s += "\nSample ROC-AUC of each member alone (its own z-score): ";
        s += &r.overall.member_sample_auc.iter().map(|(n, a)| format!("`{n}` {:.3}", a)).collect::<Vec<_>>().join(", ");
        s += "\n";
    }
    if !r.faithfulness.is_empty() {
        s += "\nFaithfulness (relative clip-score drop, %, when the region is replaced by the band's median level):\n\n\
              | q | clips | drop, heatmap's top-q % | drop, random region | difference (points) |\n|---|---|---|---|---|\n";
        for f in &r.faithfulness {
            s += &format!(
                "| {}% | {} | {} | {} | {} |\n",
                f.q,
                f.clips,
                fmt_pct(&f.drop_top),
                fmt_pct(&f.drop_random),
                fmt_pct(&f.difference)
            );
        }
    }
    s += &format!(
        "\n95 % bootstrap intervals ({} resamples; frame and pixel levels resample clips). Scoring took {:.1} s, \
         faithfulness {:.1} s.\n",
        r.bootstrap_rounds, r.score_seconds, r.faithfulness_seconds
    );
    s
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn svg_roc(curves: &[Curve]) -> String {
    let colours = ["#d6336c", "#1c7ed6", "#2b8a3e"];
    let (w, h, pad) = (320.0, 320.0, 36.0);
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' viewBox='0 0 {w} {h}' \
         font-family='sans-serif' font-size='11'><rect x='{pad}' y='4' width='{}' height='{}' fill='none' \
         stroke='#888'/><line x1='{pad}' y1='{}' x2='{}' y2='4' stroke='#ccc' stroke-dasharray='4'/>\
         <text x='{}' y='{}' text-anchor='middle'>false positive rate</text>\
         <text x='10' y='{}' transform='rotate(-90 10 {})' text-anchor='middle'>true positive rate</text>",
        w - pad - 4.0,
        h - pad - 4.0,
        h - pad,
        w - 4.0,
        (w + pad) / 2.0,
        h - 8.0,
        h / 2.0,
        h / 2.0
    );
    for (k, c) in curves.iter().enumerate() {
        let pts: Vec<String> = c
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", pad + x * (w - pad - 4.0), 4.0 + (1.0 - y) * (h - pad - 4.0)))
            .collect();
        let col = colours[k % colours.len()];
        s += &format!("<polyline fill='none' stroke='{col}' stroke-width='2' points='{}'/>", pts.join(" "));
        s +=
            &format!("<text x='{}' y='{}' fill='{col}'>{}</text>", w - 110.0, h - pad - 10.0 - 14.0 * k as f64, c.name);
    }
    s + "</svg>"
}

/// A self-contained HTML report (inline CSS, SVG ROC curves, PNG heatmaps as data URLs).
pub fn html(reports: &[EvalReport]) -> String {
    let mut s = String::from(
        "<!doctype html><html><head><meta charset='utf-8'><title>sonomaly evaluation</title><style>\
         body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
         table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}\
         th{background:#f3f3f3}figure{display:inline-block;margin:0.5em;max-width:520px}img{max-width:100%}\
         figcaption{font-size:12px}</style></head><body><h1>sonomaly evaluation</h1>",
    );
    for r in reports {
        let md = markdown(r);
        s += &format!("<h2>{} — {}</h2>", html_escape(&r.name), html_escape(&r.detector));
        s += &md_tables_to_html(&md);
        s += "<h3>ROC curves (all test clips)</h3>";
        s += &svg_roc(&r.curves);
        s += "<h3>Examples</h3>";
        for (cap, png) in &r.examples {
            s += &format!(
                "<figure><img alt='heatmap' src='data:image/png;base64,{png}'><figcaption>{}</figcaption></figure>",
                html_escape(cap)
            );
        }
    }
    s + "</body></html>\n"
}

/// Turns the Markdown of [`markdown`] into HTML (tables and paragraphs only).
fn md_tables_to_html(md: &str) -> String {
    let mut s = String::new();
    let mut in_table = false;
    for line in md.lines() {
        if line.starts_with('|') {
            if line.starts_with("|---") {
                continue;
            }
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let tag = if in_table { "td" } else { "th" };
            if !in_table {
                s += "<table>";
                in_table = true;
            }
            s += "<tr>";
            for c in cells {
                s += &format!("<{tag}>{}</{tag}>", html_escape(c));
            }
            s += "</tr>";
        } else {
            if in_table {
                s += "</table>";
                in_table = false;
            }
            let t = line.trim_start_matches('#').trim();
            if !t.is_empty() {
                s += &format!("<p>{}</p>", html_escape(t));
            }
        }
    }
    if in_table {
        s += "</table>";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_auc_equals_plain_auc() {
        let labels = [false, false, true, true, false, true];
        let scores = [0.1f32, 0.4, 0.35, 0.8, 0.4, 0.4];
        let items: Vec<(f32, bool, u32)> =
            scores.iter().zip(labels).enumerate().map(|(i, (&s, l))| (s, l, i as u32)).collect();
        let p = Pooled::new(items, labels.to_vec());
        let a = p.auc(&[1.0; 6], None).unwrap();
        assert!((a - roc_auc(&labels, &scores).unwrap()).abs() < 1e-12);
        // Weight 2 on a clip equals duplicating it.
        let w = [2.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let mut l2 = labels.to_vec();
        let mut s2 = scores.to_vec();
        l2.push(labels[0]);
        s2.push(scores[0]);
        assert!((p.auc(&w, None).unwrap() - roc_auc(&l2, &s2).unwrap()).abs() < 1e-12);
    }

    #[test]
    fn csv_and_base64() {
        assert_eq!(csv_fields("a,\"b,c\",,\"d\"\"e\""), vec!["a", "b,c", "", "d\"e"]);
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
    }
}
