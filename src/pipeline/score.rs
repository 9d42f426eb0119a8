//! Scoring: member scores per window, their maps, the fusion of members into one map and score, and whole clips.

use crate::anomaly_map::{gaussian_blur, segments, temporal_curve, window_map, Segment};
use crate::bank::{BandLevels, Bank};
use crate::detector::{Detector, WindowScore};
use crate::error::{Error, Result};
use crate::spectrogram::Spectrogram;

use super::windows::{ownership, window_starts, Window};
use super::{
    ClipResult, MemberScore, Model, DISPLAY_BELOW_Z, FAR_SHARE, FAR_Z, LEVEL_DISTANCE_LIMIT, MAP_SIGMA, WINDOW_BATCH,
};

/// One member's owned map rows `[owned frames, M]` of one window (raw units; bins above the grid's band limit
/// stay 0) with the window's scores.
pub(super) fn member_rows(
    detector: &Detector,
    win: &Window,
    member: usize,
    mel_bins: usize,
    window_frames: usize,
    grid_stride: usize,
) -> Result<(Vec<f32>, WindowScore)> {
    let mp = &win.members[member];
    let ws = detector.score_window(&mp.grid, mp.owned_patches.clone())?;
    // A band-limited grid covers the mel bins of its columns; the bins above stay 0.
    let bins = if mp.grid.freq >= mel_bins / grid_stride { mel_bins } else { mp.grid.freq * grid_stride };
    let wm = window_map(&ws.patch, mp.grid.time, mp.grid.freq, window_frames, bins, MAP_SIGMA);
    let (a, b) = (win.owned.start - win.start, win.owned.end - win.start);
    let mut rows = vec![0.0f32; (b - a) * mel_bins];
    for (r, out) in rows.chunks_exact_mut(mel_bins).enumerate() {
        out[..bins].copy_from_slice(&wm[(a + r) * bins..(a + r + 1) * bins]);
    }
    Ok((rows, ws))
}

/// The running clip score of one member over windows: the re-weighted score of the window holding the largest
/// owned patch score.
#[derive(Debug, Clone, Copy)]
pub(super) struct Best {
    max_owned: f32,
    clip: f32,
}

impl Default for Best {
    fn default() -> Self {
        Best { max_owned: f32::NEG_INFINITY, clip: 0.0 }
    }
}

impl Best {
    /// Takes a window's scores into account.
    pub fn update(&mut self, ws: &WindowScore) {
        if ws.max_owned > self.max_owned {
            *self = Best { max_owned: ws.max_owned, clip: ws.clip };
        }
    }
    /// The clip score so far (raw units, at least 0).
    pub fn score(&self) -> f32 {
        self.clip.max(0.0)
    }
}

/// Raw map `[T, M]` and raw clip score of one patch member over analysed windows.
pub(super) fn assemble(
    detector: &Detector,
    windows: &[Window],
    member: usize,
    frames: usize,
    mel_bins: usize,
    window_frames: usize,
    grid_stride: usize,
) -> Result<(Vec<f32>, f32)> {
    let mut map = vec![0.0f32; frames * mel_bins];
    let mut best = Best::default();
    for win in windows {
        let (rows, ws) = member_rows(detector, win, member, mel_bins, window_frames, grid_stride)?;
        map[win.owned.start * mel_bins..win.owned.end * mel_bins].copy_from_slice(&rows);
        best.update(&ws);
    }
    Ok((map, best.score()))
}

/// Map `[T, M]` (smoothed like every map) and clip score, raw units, of a detector that judges whole log-mels
/// ([`crate::detector::FitInput::ClipLogMels`]: the baseline); `None` for the others, which score windows.
pub(super) fn clip_level_map(
    detector: &Detector,
    lm: &[f32],
    frames: usize,
    mel_bins: usize,
) -> Option<(Vec<f32>, f32)> {
    let (score, raw) = detector.score_logmel(lm)?;
    Some((gaussian_blur(&raw, frames, mel_bins, MAP_SIGMA), score))
}

/// Turns the members' raw map rows (each `[n, M]`) into the bank's map rows: the largest member z-score per
/// pixel; bins from `valid_bins` up (not judged) hold [`map_floor`].
pub(super) fn fuse_rows(bank: &Bank, raw: &[Vec<f32>], mel_bins: usize, valid_bins: usize) -> Vec<f32> {
    let floor = map_floor(bank);
    let n = raw.first().map_or(0, |r| r.len());
    let mut out = vec![f32::NEG_INFINITY; n];
    for (rows, m) in raw.iter().zip(&bank.meta.members) {
        let z = m.map_norm;
        for (o, &v) in out.iter_mut().zip(rows) {
            *o = o.max(z.z(v));
        }
    }
    for row in out.chunks_exact_mut(mel_bins) {
        row[valid_bins.min(mel_bins)..].iter_mut().for_each(|v| *v = floor);
    }
    out
}

/// The lowest value a bank's map can hold: the largest member z-score of a raw 0 (0 for version 1 banks).
pub(super) fn map_floor(bank: &Bank) -> f32 {
    bank.meta.members.iter().map(|m| m.map_norm.z(0.0)).fold(f32::NEG_INFINITY, f32::max)
}

/// Members' clip scores from their raw scores, and the fused clip score (the largest member z-score).
pub(super) fn fuse_scores(bank: &Bank, raw: &[f32]) -> (Vec<MemberScore>, f32) {
    let members: Vec<MemberScore> = bank
        .meta
        .members
        .iter()
        .zip(raw)
        .map(|(m, &r)| MemberScore { name: m.name.clone(), score: m.score_norm.z(r), raw: r })
        .collect();
    let fused = members.iter().map(|m| m.score).fold(f32::NEG_INFINITY, f32::max);
    (members, fused)
}

/// `(floor, ceiling)` of the heatmap's colour ramp for a bank with segment threshold `segment_threshold`:
/// transparent below the floor, full colour from the ceiling up. Raw-distance banks (version 1): 60 % and 140 %
/// of the segment threshold; z-scored banks: [`DISPLAY_BELOW_Z`] below and above it.
pub fn display_range(bank: &Bank, segment_threshold: f32) -> (f32, f32) {
    if bank.is_z_scored() {
        (segment_threshold - DISPLAY_BELOW_Z, segment_threshold + DISPLAY_BELOW_Z)
    } else {
        (0.6 * segment_threshold, 1.4 * segment_threshold)
    }
}

/// Segments of a temporal curve with the bank's rule (runs above `threshold`, gaps of up to 2 frames merged,
/// ends clamped to `duration_s`).
pub fn segments_for(curve: &[f32], hop_s: f64, threshold: f32, duration_s: f64) -> Vec<Segment> {
    let mut segs = segments(curve, hop_s, threshold, 2);
    for s in &mut segs {
        s.end_s = s.end_s.min(duration_s);
    }
    segs.retain(|s| s.end_s > s.start_s);
    segs
}

/// Median over the judged bands of `|clip level - normal level| / normal spread`, where a band's level is its
/// mean log-mel value over the clip.
pub(super) fn level_distance(levels: &BandLevels, lm: &[f32], mel_bins: usize, valid_bins: usize) -> Option<f32> {
    let frames = lm.len() / mel_bins;
    let mut sums = vec![0.0f64; mel_bins];
    for row in lm.chunks_exact(mel_bins) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += v as f64;
        }
    }
    level_distance_of_sums(levels, &sums, frames, valid_bins)
}

/// [`level_distance`] from each band's sum of log-mel values `sums` `[M]` over `frames` frames (a stream's).
pub(super) fn level_distance_of_sums(
    levels: &BandLevels,
    sums: &[f64],
    frames: usize,
    valid_bins: usize,
) -> Option<f32> {
    let mel_bins = sums.len();
    let bins = valid_bins.min(mel_bins).min(levels.mean.len());
    if frames == 0 || bins == 0 || levels.mean.len() != mel_bins {
        return None;
    }
    let mut d: Vec<f32> = (0..bins)
        .map(|b| ((sums[b] / frames as f64) as f32 - levels.mean[b]).abs() / levels.std[b])
        .filter(|v| v.is_finite())
        .collect();
    if d.is_empty() {
        return None;
    }
    d.sort_by(f32::total_cmp);
    Some(d[d.len() / 2])
}

/// The sentence for a clip that lies far outside what the bank learned: its band levels `distance` spreads from
/// the normal clips', or (z-scored banks) a score [`FAR_Z`] above the threshold with the curve above the segment
/// threshold over `share_above` of the clip.
pub(super) fn out_of_distribution(bank: &Bank, distance: Option<f32>, score: f32, share_above: f32) -> Option<String> {
    if let Some(d) = distance.filter(|&d| d > LEVEL_DISTANCE_LIMIT) {
        return Some(format!(
            "this recording does not sound like the normal recordings the bank was fitted on (its band levels lie \
             {d:.0} times their usual spread away), so the verdict compares it with another sound; fit a bank on \
             normal recordings of this machine or place"
        ));
    }
    if bank.is_z_scored() && score > bank.meta.threshold + FAR_Z && share_above >= FAR_SHARE {
        return Some(format!(
            "the whole recording lies far outside the normal sound the bank learned ({:.0} % of it above the segment \
             threshold): either it sounds different throughout, or the bank was fitted on another sound; check that \
             the bank was fitted on this machine or place",
            100.0 * share_above
        ));
    }
    None
}

/// Scores one mono clip (`samples` at `sample_rate` Hz, resampled inside).
///
/// # Errors
/// [`Error::Audio`] for empty, non-finite or too short audio; [`Error::InvalidInput`] if `model` was not
/// prepared for `bank` ([`Model::prepare_for`]).
pub fn score_clip(model: &Model, bank: &Bank, samples: &[f32], sample_rate: u32) -> Result<ClipResult> {
    score_clip_with_progress(model, bank, samples, sample_rate, &mut |_, _| {})
}

/// [`score_clip`] with a callback `(windows done, windows in all)`.
///
/// # Errors
/// As [`score_clip`].
pub fn score_clip_with_progress(
    model: &Model,
    bank: &Bank,
    samples: &[f32],
    sample_rate: u32,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ClipResult> {
    let (lm, limit) = clip_logmel(model, bank, samples, sample_rate)?;
    let r = score_logmel_band_limited(model, bank, &lm, limit, progress)?;
    Ok(with_duration(r, samples.len() as f64 / sample_rate as f64))
}

/// The log-mel of a clip and the highest frequency judged in it, as [`score_clip`] computes them.
fn clip_logmel(model: &Model, bank: &Bank, samples: &[f32], sample_rate: u32) -> Result<(Spectrogram, f32)> {
    model.check_ready(bank)?;
    let lm = model.logmel_of(samples, sample_rate)?;
    let limit = bank.band_limit_hz().min(model.nyquist(sample_rate));
    Ok((lm, limit))
}

/// A clip's result with its duration, seconds, from the samples (the frames can overrun it by part of a hop):
/// segments end with the audio.
fn with_duration(mut r: ClipResult, duration_s: f64) -> ClipResult {
    r.duration_s = duration_s;
    r.segments = segments_for(&r.curve, r.hop_s, r.segment_threshold, r.duration_s);
    r
}

fn needs_windows(bank: &Bank) -> bool {
    bank.detectors.iter().any(|d| !d.config().is_clip_level())
}

/// One member's share of one analysed window, raw units: the map rows of the frames the window owns
/// (`[owned frames, M]`, row-major; empty for a member that needs no windows) and the window's scores. What one of
/// the page's pool of workers computes for a range of a clip's windows ([`score_window_range`]) and one worker
/// merges ([`score_clip_from_parts`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowPart {
    /// Owned map rows `[owned frames, M]`, raw units.
    pub rows: Vec<f32>,
    /// The window's clip score from its owned patches (PatchCore: re-weighted, eq. 7), raw units.
    pub clip: f32,
    /// The largest owned patch score (`-inf` when the window owns none).
    pub max_owned: f32,
}

/// Number of analysis windows [`score_clip`] runs over this clip: 0 when no member of the bank needs them (the
/// baseline).
///
/// # Errors
/// As [`score_clip`].
pub fn window_count(model: &Model, bank: &Bank, samples: &[f32], sample_rate: u32) -> Result<usize> {
    let (lm, _) = clip_logmel(model, bank, samples, sample_rate)?;
    check_logmel(model, &lm)?;
    Ok(windows_of(model, bank, &lm))
}

/// The number of analysis windows of a log-mel, 0 when the bank needs none.
fn windows_of(model: &Model, bank: &Bank, lm: &Spectrogram) -> usize {
    if !needs_windows(bank) {
        return 0;
    }
    window_starts(lm.frames, model.spec.window_frames, model.spec.window_hop).len()
}

/// The parts of windows `range` of a clip (`[window][member]`, windows counted as [`window_count`] does): the
/// same numbers as [`score_clip`] computes for them, when `range` starts at a multiple of [`WINDOW_BATCH`].
///
/// # Errors
/// As [`score_clip`]; [`Error::InvalidInput`] for a range that is empty, past the clip's windows, or that does
/// not start at a multiple of [`WINDOW_BATCH`].
pub fn score_window_range(
    model: &Model,
    bank: &Bank,
    samples: &[f32],
    sample_rate: u32,
    range: std::ops::Range<usize>,
) -> Result<Vec<Vec<WindowPart>>> {
    let (lm, limit) = clip_logmel(model, bank, samples, sample_rate)?;
    check_logmel(model, &lm)?;
    let n = windows_of(model, bank, &lm);
    if range.is_empty() || range.end > n || !range.start.is_multiple_of(WINDOW_BATCH) {
        return Err(Error::invalid(format!(
            "windows {}..{} of a clip of {} windows: a range must be within them, not empty, and start at a \
             multiple of {WINDOW_BATCH}",
            range.start, range.end, n
        )));
    }
    window_parts(model, bank, &lm, limit, range)
}

/// Share `share` of `shares` of a clip's windows, in whole batches of [`WINDOW_BATCH`] (the batches dealt out in
/// order, as evenly as they go): `(windows of the clip, the range of this share, its parts)`. A share can be
/// empty (fewer batches than shares). The shares `0..shares` cover the clip's windows in order, and their parts
/// merge as [`score_clip_from_parts`] takes them; the log-mel is computed once.
///
/// # Errors
/// As [`score_clip`]; [`Error::InvalidInput`] when `share` is not below `shares`.
pub fn score_window_share(
    model: &Model,
    bank: &Bank,
    samples: &[f32],
    sample_rate: u32,
    share: usize,
    shares: usize,
) -> Result<(usize, std::ops::Range<usize>, Vec<Vec<WindowPart>>)> {
    if share >= shares {
        return Err(Error::invalid(format!("share {share} of {shares}: a share is counted from 0 to shares - 1")));
    }
    let (lm, limit) = clip_logmel(model, bank, samples, sample_rate)?;
    check_logmel(model, &lm)?;
    let n = windows_of(model, bank, &lm);
    let batches = n.div_ceil(WINDOW_BATCH);
    let from = (share * batches / shares * WINDOW_BATCH).min(n);
    let to = ((share + 1) * batches / shares * WINDOW_BATCH).min(n);
    let parts = if from < to { window_parts(model, bank, &lm, limit, from..to)? } else { Vec::new() };
    Ok((n, from..to, parts))
}

/// The parts of windows `range` (within the clip's, starting at a multiple of [`WINDOW_BATCH`]).
fn window_parts(
    model: &Model,
    bank: &Bank,
    lm: &Spectrogram,
    limit: f32,
    range: std::ops::Range<usize>,
) -> Result<Vec<Vec<WindowPart>>> {
    let (w, h, m) = (model.spec.window_frames, model.spec.window_hop, lm.mel_bins);
    let starts = window_starts(lm.frames, w, h);
    let owned = ownership(&starts, w, lm.frames);
    let cols = model.member_columns(limit);
    let windows =
        model.analyse_windows(&lm.data, 0, lm.frames, &starts[range.clone()], &owned[range], &cols, &mut |_, _| {})?;
    windows
        .iter()
        .map(|win| {
            bank.detectors
                .iter()
                .zip(model.embeddings())
                .enumerate()
                .map(|(i, (det, e))| {
                    if det.config().is_clip_level() {
                        return Ok(WindowPart { rows: Vec::new(), clip: 0.0, max_owned: f32::NEG_INFINITY });
                    }
                    let (rows, ws) = member_rows(det, win, i, m, w, e.grid_stride)?;
                    Ok(WindowPart { rows, clip: ws.clip, max_owned: ws.max_owned })
                })
                .collect()
        })
        .collect()
}

/// The result of a clip from the parts of all its windows, in window order ([`score_window_range`] over ranges
/// that cover them): bit-identical to [`score_clip`]'s.
///
/// # Errors
/// As [`score_clip`]; [`Error::InvalidInput`] when the parts do not cover the clip's windows, member by member,
/// with rows of the frames each window owns.
pub fn score_clip_from_parts(
    model: &Model,
    bank: &Bank,
    samples: &[f32],
    sample_rate: u32,
    parts: &[Vec<WindowPart>],
) -> Result<ClipResult> {
    let (lm, limit) = clip_logmel(model, bank, samples, sample_rate)?;
    check_logmel(model, &lm)?;
    let (w, m) = (model.spec.window_frames, lm.mel_bins);
    let starts = if needs_windows(bank) { window_starts(lm.frames, w, model.spec.window_hop) } else { Vec::new() };
    let owned = ownership(&starts, w, lm.frames);
    if parts.len() != starts.len() {
        return Err(Error::invalid(format!("parts of {} windows, but the clip has {}", parts.len(), starts.len())));
    }
    let mut raw_maps = Vec::with_capacity(bank.detectors.len());
    let mut raw_scores = Vec::with_capacity(bank.detectors.len());
    for (i, det) in bank.detectors.iter().enumerate() {
        let (map, score) = match clip_level_map(det, &lm.data, lm.frames, m) {
            Some(r) => r,
            None => {
                let mut map = vec![0.0f32; lm.frames * m];
                let mut best = Best::default();
                for (k, (window, own)) in parts.iter().zip(&owned).enumerate() {
                    let p = window.get(i).filter(|p| p.rows.len() == own.len() * m).ok_or_else(|| {
                        Error::invalid(format!(
                            "the parts of window {k} do not hold member {i}'s rows of its {} frames",
                            own.len()
                        ))
                    })?;
                    map[own.start * m..own.end * m].copy_from_slice(&p.rows);
                    best.update(&WindowScore { patch: Vec::new(), clip: p.clip, max_owned: p.max_owned });
                }
                (map, best.score())
            }
        };
        raw_maps.push(map);
        raw_scores.push(score);
    }
    let r = finish(model, bank, &lm, limit, raw_maps, raw_scores);
    Ok(with_duration(r, samples.len() as f64 / sample_rate as f64))
}

/// Scores a log-mel spectrogram `[T, M]` computed by `model`'s front end.
///
/// # Errors
/// [`Error::InvalidInput`] if the spectrogram has another number of mel bins than the front end, or the model is
/// not prepared for the bank; [`Error::Audio`] for fewer than [`Model::min_frames`] frames.
pub fn score_logmel(
    model: &Model,
    bank: &Bank,
    lm: &Spectrogram,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ClipResult> {
    score_logmel_band_limited(model, bank, lm, bank.band_limit_hz(), progress)
}

fn score_logmel_band_limited(
    model: &Model,
    bank: &Bank,
    lm: &Spectrogram,
    band_limit_hz: f32,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ClipResult> {
    model.check_ready(bank)?;
    check_logmel(model, lm)?;
    let m = lm.mel_bins;
    let cols = model.member_columns(band_limit_hz);
    let windows = if needs_windows(bank) { model.analyse(lm, &cols, progress)? } else { Vec::new() };
    let mut raw_maps = Vec::with_capacity(bank.detectors.len());
    let mut raw_scores = Vec::with_capacity(bank.detectors.len());
    for (i, (det, e)) in bank.detectors.iter().zip(model.embeddings()).enumerate() {
        let (map, score) = match clip_level_map(det, &lm.data, lm.frames, m) {
            Some(r) => r,
            None => assemble(det, &windows, i, lm.frames, m, model.spec.window_frames, e.grid_stride)?,
        };
        raw_maps.push(map);
        raw_scores.push(score);
    }
    Ok(finish(model, bank, lm, band_limit_hz, raw_maps, raw_scores))
}

/// A spectrogram of the front end's mel bins, long enough to judge.
fn check_logmel(model: &Model, lm: &Spectrogram) -> Result<()> {
    let m = model.logmel.config().n_mels;
    if lm.mel_bins != m || lm.data.len() != lm.frames * m {
        return Err(Error::invalid(format!("the spectrogram has {} mel bins, the front end {m}", lm.mel_bins)));
    }
    let min = model.min_frames();
    if lm.frames < min {
        return Err(Error::audio(format!(
            "the clip is too short to judge: {:.2} s, at least {:.2} s are needed",
            lm.frames as f64 * model.hop_s(),
            min as f64 * model.hop_s()
        )));
    }
    Ok(())
}

/// The clip's result from its members' raw maps `[T, M]` and raw clip scores: fusion, curve, segments, verdict.
fn finish(
    model: &Model,
    bank: &Bank,
    lm: &Spectrogram,
    band_limit_hz: f32,
    raw_maps: Vec<Vec<f32>>,
    raw_scores: Vec<f32>,
) -> ClipResult {
    let m = lm.mel_bins;
    let valid_bins = model.valid_bins(band_limit_hz);
    let map = fuse_rows(bank, &raw_maps, m, valid_bins);
    drop(raw_maps);
    let (members, score) = fuse_scores(bank, &raw_scores);
    let curve = temporal_curve(&map, m);
    let hop_s = model.hop_s();
    let duration_s = lm.frames as f64 * hop_s;
    let segs = segments_for(&curve, hop_s, bank.meta.segment_threshold, duration_s);
    let (display_floor, display_ceiling) = display_range(bank, bank.meta.segment_threshold);
    let level_distance = bank.meta.band_levels.as_ref().and_then(|l| level_distance(l, &lm.data, m, valid_bins));
    let share_above =
        curve.iter().filter(|&&v| v > bank.meta.segment_threshold).count() as f32 / curve.len().max(1) as f32;
    ClipResult {
        score,
        threshold: bank.meta.threshold,
        is_anomaly: score > bank.meta.threshold,
        segment_threshold: bank.meta.segment_threshold,
        segments: segs,
        members,
        units: if bank.is_z_scored() { "z" } else { "distance" },
        display_floor,
        display_ceiling,
        level_distance,
        out_of_distribution: out_of_distribution(bank, level_distance, score, share_above),
        frames: lm.frames,
        mel_bins: m,
        hop_s,
        duration_s,
        band_limit_hz: band_limit_hz.min(model.sample_rate() as f32 / 2.0),
        logmel: lm.data.clone(),
        map,
        curve,
        mel_hz: model.logmel.mel_frequencies_hz(),
    }
}
