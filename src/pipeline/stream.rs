//! [`StreamScorer`]: audio scored as it arrives, window by window, with bounded memory.

use std::ops::Range;

use serde::Serialize;

use crate::anomaly_map::temporal_curve;
use crate::bank::Bank;
use crate::error::{Error, Result};

use super::score::{fuse_rows, fuse_scores, level_distance_of_sums, member_rows, out_of_distribution, Best};
use super::windows::{ownership, window_starts};
use super::Model;

/// What a [`StreamScorer`] emits for each newly judged stretch of audio.
#[derive(Debug, Clone, Serialize)]
pub struct StreamUpdate {
    /// First frame of this stretch, counted from the start of the stream.
    pub start_frame: usize,
    /// Frames in this stretch `n`.
    pub frames: usize,
    /// Mel bins `M`.
    pub mel_bins: usize,
    /// Seconds per frame.
    pub hop_s: f64,
    /// Log-mel `[n, M]`.
    #[serde(skip)]
    pub logmel: Vec<f32>,
    /// Anomaly map `[n, M]`, the bank's units.
    #[serde(skip)]
    pub map: Vec<f32>,
    /// Temporal curve `[n]`.
    #[serde(skip)]
    pub curve: Vec<f32>,
    /// Score of the analysis window this stretch came from (largest member z-score of the window's scores).
    pub window_score: f32,
    /// Clip score of everything so far (as [`super::score_clip`] would give for the stream up to here).
    pub score: f32,
}

/// Scores audio as it arrives, with bounded memory: mono samples at `input_rate` go in, [`StreamUpdate`]s come
/// out about one window hop (`spec.window_hop` frames) behind the input. The concatenated updates after
/// [`StreamScorer::finish`] equal [`super::score_clip`] on the whole recording, up to the streaming resampler's
/// chunk boundaries.
pub struct StreamScorer {
    resampler: Option<crate::audio::StreamResampler>,
    front: crate::spectrogram::LogMelStream,
    buf: Vec<f32>,
    buf_start: usize,
    total: usize,
    next_start: usize,
    owned_from: usize,
    best: Vec<Best>,
    finished: bool,
    cols: Vec<usize>,
    valid_bins: usize,
    mel_bins: usize,
    /// Each band's sum of log-mel values over every frame received (for the band-level check).
    band_sums: Vec<f64>,
    band_limit_hz: f32,
    /// Samples received, at `input_rate`.
    samples_in: u64,
    input_rate: u32,
}

/// The verdict on a whole stream once [`StreamScorer::finish`] has run: what [`super::ClipResult`] says besides its
/// arrays, in the bank's units.
#[derive(Debug, Clone, Serialize)]
pub struct StreamVerdict {
    /// Clip score (largest member z-score for banks of format version 2).
    pub score: f32,
    /// The bank's clip threshold.
    pub threshold: f32,
    /// `score > threshold`.
    pub is_anomaly: bool,
    /// The bank's segment threshold.
    pub segment_threshold: f32,
    /// Runs of the curve above the segment threshold, ends clamped to the stream's length.
    pub segments: Vec<super::Segment>,
    /// Each member's clip score.
    pub members: Vec<super::MemberScore>,
    /// `"z"` or `"distance"`.
    pub units: &'static str,
    /// Heatmap range (as [`super::display_range`]).
    pub display_floor: f32,
    /// Heatmap range top.
    pub display_ceiling: f32,
    /// Median band-level distance from the normal clips, in their spreads (banks that record band levels).
    pub level_distance: Option<f32>,
    /// The sentence for a stream far outside what the bank learned, as for a clip.
    pub out_of_distribution: Option<String>,
    /// Seconds of audio received (samples / input rate; a clip's [`super::ClipResult::duration_s`] counts whole
    /// frames, up to one hop more).
    pub duration_s: f64,
    /// Highest frequency judged, Hz.
    pub band_limit_hz: f32,
}

impl StreamScorer {
    /// A scorer for `model` (already prepared for `bank`) fed at `input_rate` Hz.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a zero rate, a model not prepared for the bank, a bank with a clip-level
    /// member (the baseline), or a peak-normalised front end (the peak of a stream is unknown in advance).
    pub fn new(model: &Model, bank: &Bank, input_rate: u32) -> Result<Self> {
        model.check_ready(bank)?;
        if bank.detectors.iter().any(|d| d.config().is_clip_level()) {
            return Err(Error::invalid(
                "the baseline detector judges whole clips and cannot score a stream; score the recording whole",
            ));
        }
        if input_rate == 0 {
            return Err(Error::invalid("input sample rate is 0 Hz"));
        }
        let resampler = if input_rate == model.sample_rate() {
            None
        } else {
            Some(crate::audio::StreamResampler::new(input_rate, model.sample_rate())?)
        };
        let limit = bank.band_limit_hz().min(model.nyquist(input_rate));
        Ok(StreamScorer {
            resampler,
            front: crate::spectrogram::LogMelStream::new(model.logmel.config().clone())?,
            buf: Vec::new(),
            buf_start: 0,
            total: 0,
            next_start: 0,
            owned_from: 0,
            best: vec![Best::default(); bank.detectors.len()],
            finished: false,
            cols: model.member_columns(limit),
            valid_bins: model.valid_bins(limit),
            mel_bins: model.logmel.config().n_mels,
            band_sums: vec![0.0; model.logmel.config().n_mels],
            band_limit_hz: limit.min(model.sample_rate() as f32 / 2.0),
            samples_in: 0,
            input_rate,
        })
    }

    /// Frames received so far.
    pub fn frames(&self) -> usize {
        self.total
    }

    /// The log-mel of the frames still held, from frame `from` (counted from the start of the stream) to the last
    /// frame received: `(first frame, [n, M] row-major)`, for showing the spectrogram before its windows are
    /// judged. Frames are held from the start of the next window to judge on (at least the last
    /// `spec.window_frames` frames), so when `from` is older than that the first frame returned is later than
    /// `from`; when `from` is at or past the last frame received, the slice is empty.
    pub fn recent_logmel(&self, from: usize) -> (usize, &[f32]) {
        let first = from.clamp(self.buf_start, self.total);
        (first, &self.buf[(first - self.buf_start) * self.mel_bins..])
    }

    /// Clip score so far, in the bank's units.
    pub fn score(&self, bank: &Bank) -> f32 {
        let raw: Vec<f32> = self.best.iter().map(|b| b.score()).collect();
        fuse_scores(bank, &raw).1
    }

    /// The verdict on the whole stream, given its temporal `curve` (the concatenated updates' curves): score,
    /// segments (as [`super::segments_for`]), members, display range, band-level distance and the
    /// other-sound sentence, exactly as [`super::score_clip`] gives them for a clip.
    pub fn verdict(&self, model: &Model, bank: &Bank, curve: &[f32]) -> StreamVerdict {
        let hop_s = model.hop_s();
        let duration_s = self.samples_in as f64 / self.input_rate as f64;
        let (members, score) = {
            let raw: Vec<f32> = self.best.iter().map(|b| b.score()).collect();
            fuse_scores(bank, &raw)
        };
        let thr = bank.meta.segment_threshold;
        let (display_floor, display_ceiling) = super::display_range(bank, thr);
        let level_distance = bank
            .meta
            .band_levels
            .as_ref()
            .and_then(|l| level_distance_of_sums(l, &self.band_sums, self.total, self.valid_bins));
        let share_above = curve.iter().filter(|&&v| v > thr).count() as f32 / curve.len().max(1) as f32;
        StreamVerdict {
            score,
            threshold: bank.meta.threshold,
            is_anomaly: score > bank.meta.threshold,
            segment_threshold: thr,
            segments: super::segments_for(curve, hop_s, thr, duration_s),
            members,
            units: if bank.is_z_scored() { "z" } else { "distance" },
            display_floor,
            display_ceiling,
            level_distance,
            out_of_distribution: out_of_distribution(bank, level_distance, score, share_above),
            duration_s,
            band_limit_hz: self.band_limit_hz,
        }
    }

    /// Each member's clip score so far.
    pub fn member_scores(&self, bank: &Bank) -> Vec<super::MemberScore> {
        let raw: Vec<f32> = self.best.iter().map(|b| b.score()).collect();
        fuse_scores(bank, &raw).0
    }

    fn run(
        &mut self,
        model: &Model,
        bank: &Bank,
        starts: &[usize],
        owned: &[Range<usize>],
    ) -> Result<Vec<StreamUpdate>> {
        let m = model.logmel.config().n_mels;
        let w = model.spec.window_frames;
        let wins =
            model.analyse_windows(&self.buf, self.buf_start, self.total, starts, owned, &self.cols, &mut |_, _| {})?;
        let mut out = Vec::with_capacity(wins.len());
        for win in &wins {
            let mut raw_rows = Vec::with_capacity(bank.detectors.len());
            let mut window_raw = Vec::with_capacity(bank.detectors.len());
            for (i, (det, e)) in bank.detectors.iter().zip(model.embeddings()).enumerate() {
                let (rows, ws) = member_rows(det, win, i, m, w, e.grid_stride)?;
                self.best[i].update(&ws);
                window_raw.push(ws.clip.max(0.0));
                raw_rows.push(rows);
            }
            let map = fuse_rows(bank, &raw_rows, m, self.valid_bins);
            let (a, b) = (win.owned.start - self.buf_start, win.owned.end - self.buf_start);
            out.push(StreamUpdate {
                start_frame: win.owned.start,
                frames: win.owned.len(),
                mel_bins: m,
                hop_s: model.hop_s(),
                logmel: self.buf[a * m..b * m].to_vec(),
                curve: temporal_curve(&map, m),
                map,
                window_score: fuse_scores(bank, &window_raw).1,
                score: self.score(bank),
            });
        }
        Ok(out)
    }

    fn take_frames(&mut self, frames: Vec<f32>, m: usize) {
        self.total += frames.len() / m;
        for row in frames.chunks_exact(m) {
            for (s, &v) in self.band_sums.iter_mut().zip(row) {
                *s += v as f64;
            }
        }
        self.buf.extend_from_slice(&frames);
    }

    /// Feeds mono samples at the input rate; returns the stretches judged so far (often none).
    ///
    /// # Errors
    /// [`Error::Audio`] for non-finite samples; [`Error::InvalidInput`] after [`StreamScorer::finish`].
    pub fn push(&mut self, model: &Model, bank: &Bank, samples: &[f32]) -> Result<Vec<StreamUpdate>> {
        if self.finished {
            return Err(Error::invalid("the stream is finished; start a new StreamScorer"));
        }
        if let Some(i) = samples.iter().position(|v| !v.is_finite()) {
            return Err(Error::audio(format!("sample {i} of this block is not a finite number")));
        }
        self.samples_in += samples.len() as u64;
        let m = model.logmel.config().n_mels;
        let x = match &mut self.resampler {
            Some(r) => {
                let mut v = Vec::new();
                r.push(samples, &mut v)?;
                v
            }
            None => samples.to_vec(),
        };
        let frames = self.front.push(&x)?;
        self.take_frames(frames, m);
        let (w, h) = (model.spec.window_frames, model.spec.window_hop);
        let mut out = Vec::new();
        // A window is judged once the next regular window fits too, so its owned range is final.
        while self.next_start + h + w <= self.total {
            let s = self.next_start;
            let end = (s + (s + h) + w) / 2;
            let owned = self.owned_from..end;
            out.extend(self.run(model, bank, &[s], std::slice::from_ref(&owned))?);
            self.owned_from = end;
            self.next_start = s + h;
            // Frames before the next window are no longer needed.
            let drop = self.next_start - self.buf_start;
            self.buf.drain(..drop * m);
            self.buf_start = self.next_start;
        }
        Ok(out)
    }

    /// Ends the stream: judges the remaining frames (the last window aligned to the end).
    ///
    /// # Errors
    /// [`Error::Audio`] if the stream gave fewer than [`Model::min_frames`] frames.
    pub fn finish(&mut self, model: &Model, bank: &Bank) -> Result<Vec<StreamUpdate>> {
        if self.finished {
            return Ok(Vec::new());
        }
        self.finished = true;
        let m = model.logmel.config().n_mels;
        if let Some(r) = &mut self.resampler {
            let mut v = Vec::new();
            r.finish(&mut v)?;
            let frames = self.front.push(&v)?;
            self.take_frames(frames, m);
        }
        let frames = self.front.finish()?;
        self.take_frames(frames, m);
        if self.total < model.min_frames() {
            return Err(Error::audio(format!(
                "the stream ended after {:.2} s; at least {:.2} s are needed to judge it",
                self.total as f64 * model.hop_s(),
                model.min_frames() as f64 * model.hop_s()
            )));
        }
        let (w, h) = (model.spec.window_frames, model.spec.window_hop);
        let all = window_starts(self.total, w, h);
        let owned_all = ownership(&all, w, self.total);
        let keep: Vec<usize> = (0..all.len()).filter(|&i| all[i] >= self.next_start).collect();
        let starts: Vec<usize> = keep.iter().map(|&i| all[i]).collect();
        let mut owned: Vec<Range<usize>> = keep.iter().map(|&i| owned_all[i].clone()).collect();
        if let Some(first) = owned.first_mut() {
            first.start = self.owned_from;
        }
        self.run(model, bank, &starts, &owned)
    }
}
