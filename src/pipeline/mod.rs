//! The whole path from samples to an anomaly map, for one clip, a stream, or a fit.
//!
//! [`Model`] = front end + backbone, planned for the patch embeddings of a bank's members (what a bank must
//! match). [`score_clip`] scores a whole mono clip; [`StreamScorer`] scores audio as it arrives with bounded
//! memory; [`score_recording`] reads a decoder to its end and scores the recording whole or as a stream by its
//! length ([`LONG_RECORDING_S`]); [`Fitter`] collects the patches of normal clips and builds a
//! [`Bank`](crate::bank::Bank).
//!
//! Windows (`pipeline/windows.rs`): the log-mel `[T, M]` is cut into windows of `W = spec.window_frames` frames every
//! `H = spec.window_hop` frames, the last one aligned to the end of the clip (a clip shorter than `W` is repeated
//! to fill one window). Each frame belongs to the window whose centre is nearest, so every frame is judged with
//! as much context on both sides as the windows give. Per window the backbone runs once; each member makes its
//! patches `[W/s, M/s]` from the shared feature maps -> patch scores -> bilinear upsampling to `[W, M]` ->
//! Gaussian blur -> z-scores ([`crate::threshold::Norm`]) -> the owned frames go into the member's map. The
//! clip's map is the largest member z-score per pixel; its score the largest member clip z-score, where a
//! member's clip score is the re-weighted score (PatchCore eq. 7) of the window that holds the member's largest
//! owned patch distance. Streaming does exactly the same, window by window.

mod analysed;
mod fit;
mod model;
mod recording;
mod score;
mod spill;
mod stream;
mod windows;

use serde::Serialize;

pub use crate::anomaly_map::Segment;
pub use fit::{
    calibrate, clip_fingerprint, AnalysedClip, FitConfig, FitPreset, Fitter, HeldOut, MemberConfig, SPILL_ABOVE_BYTES,
};
pub use model::{Model, AISFX_SPEC, DEFAULT_SPEC, EFFICIENTAT_SPEC};
#[cfg(not(target_arch = "wasm32"))]
pub use model::{AISFX_ONNX, DEFAULT_ONNX, EFFICIENTAT_ONNX};
pub use recording::{score_recording, Recording, LONG_RECORDING_S};
pub use score::{
    display_range, score_clip, score_clip_from_parts, score_clip_with_progress, score_logmel, score_window_range,
    score_window_share, segments_for, window_count, WindowPart,
};
pub use spill::release_freed_memory;
pub use stream::{StreamScorer, StreamUpdate, StreamVerdict};

/// Analysis windows go through the backbone this many at a time. A range of windows scored on its own
/// ([`score_window_range`], by one of the page's pool of workers) starts at a multiple of it, so that its batches
/// are the whole clip's and its numbers bit-identical.
pub const WINDOW_BATCH: usize = 4;
/// The fit preset used when none is chosen (see [`FitPreset`]).
pub const DEFAULT_PRESET: &str = "both";
/// Gaussian smoothing of the anomaly map, in spectrogram pixels (anomalib: 4).
pub const MAP_SIGMA: f32 = 4.0;
/// Fewest spectrogram frames a clip must have to be scored, whatever the front end: shorter clips give a patch or
/// two and no meaningful score.
pub const MIN_FRAMES: usize = 16;
/// Shortest clip that is scored or fitted on, seconds (and at least [`MIN_FRAMES`] frames; see
/// [`Model::min_frames`]).
pub const MIN_SECONDS: f64 = 0.37;
/// Largest absolute sample value accepted; PCM and float audio stay within about 1. Larger values are taken for a
/// wrongly scaled file rather than squared into infinities.
pub const MAX_ABS_SAMPLE: f32 = 1.0e4;
/// Cost of one grid column of frequency distance, as a fraction of the RMS norm of the normal patches. Measured
/// on MIMII fan id_00 with the aisfx front end (fit normal 0-9, test normal 10-19 vs abnormal 0-19, `logmel`):
/// fraction 0 gives ROC-AUC 1.000 but scores digital silence 0.057, below every normal clip, because silent
/// patches match the fan's quiet high bands; 0.01 -> 1.000 with silence 0.134 at the threshold (0.135); 0.02 ->
/// 0.975 with silence 0.249, flagged; 0.1 -> 0.925; 1.0 -> 0.880.
pub const POSITION_FRACTION: f32 = 0.02;
/// Quantile of the gamma fitted to held-out normal scores, kept in every member's statistics (the threshold of
/// version 1 banks; DCASE baseline).
pub const THRESHOLD_QUANTILE: f32 = 0.9;
/// Default clip threshold of new banks, in robust z units of the held-out normal clip scores (see RESULTS.md,
/// "Threshold", for the measurement that chose it).
pub const CLIP_Z: f32 = 2.0;
/// Default segment threshold of new banks on the temporal curve, robust z units of the held-out curve peaks.
pub const SEGMENT_Z: f32 = 2.0;
/// The heatmap is painted from this many z units below the segment threshold (z-scored banks).
pub const DISPLAY_BELOW_Z: f32 = 1.0;
/// Smallest spread of a band's level over normal clips, as a fraction of the normal clips' frame-to-frame
/// standard deviation of the log-mel (so that a few very similar clips do not make every other level look
/// foreign).
pub const LEVEL_STD_FLOOR: f32 = 0.1;
/// A clip whose band levels lie more than this many of the normal clips' spreads from theirs (median over the
/// judged bands) is reported as unlike the sound the bank learned.
pub const LEVEL_DISTANCE_LIMIT: f32 = 6.0;
/// A z-scored clip this far above the clip threshold, with its temporal curve above the segment threshold over at
/// least [`FAR_SHARE`] of its length, is reported as lying outside what the bank learned throughout.
pub const FAR_Z: f32 = 4.0;
/// See [`FAR_Z`].
pub const FAR_SHARE: f32 = 0.8;

/// One member's part of a clip's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberScore {
    /// The member's name, e.g. `logmel`.
    pub name: String,
    /// Its clip score in the bank's units (z for version 2 banks).
    pub score: f32,
    /// Its clip score in the detector's raw units (patch distance or Mahalanobis distance).
    pub raw: f32,
}

/// Everything scoring one clip produces.
#[derive(Debug, Clone, Serialize)]
pub struct ClipResult {
    /// Clip score: the largest member z-score (raw distance for a version 1 bank).
    pub score: f32,
    /// The bank's clip threshold the verdict used.
    pub threshold: f32,
    /// `score > threshold`.
    pub is_anomaly: bool,
    /// The bank's threshold for the temporal curve.
    pub segment_threshold: f32,
    /// Runs of frames where the temporal curve exceeds `segment_threshold`.
    pub segments: Vec<Segment>,
    /// Each member's clip score.
    pub members: Vec<MemberScore>,
    /// `z` (robust z-scores against held-out normal clips) or `distance` (version 1 banks).
    pub units: &'static str,
    /// Map values below this are not painted (transparent) in the page and the PNG.
    pub display_floor: f32,
    /// Map values at or above this get the full colour.
    pub display_ceiling: f32,
    /// How far the clip's band levels lie from the normal clips', in their spreads (median over the judged
    /// bands); `None` for banks without band levels.
    pub level_distance: Option<f32>,
    /// A sentence when the recording does not sound like what the bank was fitted on (so the verdict compares it
    /// with another sound), else `None`.
    pub out_of_distribution: Option<String>,
    /// Number of spectrogram frames `T`.
    pub frames: usize,
    /// Number of mel bins `M`.
    pub mel_bins: usize,
    /// Seconds between frames (hop length / sample rate).
    pub hop_s: f64,
    /// Duration of the audio, seconds.
    pub duration_s: f64,
    /// Highest frequency judged, Hz: the lower of the clip's and the bank's Nyquist frequencies (mel bands above it
    /// hold no signal and are left out of the map and the score).
    pub band_limit_hz: f32,
    /// Log-mel spectrogram `[T, M]` row-major (the model's front end).
    #[serde(skip)]
    pub logmel: Vec<f32>,
    /// Anomaly map `[T, M]` row-major, in the bank's units (bins above the band limit hold the map's floor).
    #[serde(skip)]
    pub map: Vec<f32>,
    /// Temporal curve `[T]`: the largest map value over mel bins at each frame.
    #[serde(skip)]
    pub curve: Vec<f32>,
    /// Centre frequency of each mel bin, Hz, `[M]`.
    #[serde(skip)]
    pub mel_hz: Vec<f32>,
}

impl ClipResult {
    /// The verdict without the arrays, in the form a streamed recording gives it ([`StreamVerdict`]).
    pub fn verdict(&self) -> StreamVerdict {
        StreamVerdict {
            score: self.score,
            threshold: self.threshold,
            is_anomaly: self.is_anomaly,
            segment_threshold: self.segment_threshold,
            segments: self.segments.clone(),
            members: self.members.clone(),
            units: self.units,
            display_floor: self.display_floor,
            display_ceiling: self.display_ceiling,
            level_distance: self.level_distance,
            out_of_distribution: self.out_of_distribution.clone(),
            duration_s: self.duration_s,
            band_limit_hz: self.band_limit_hz,
        }
    }

    /// Share of the map's judged pixels at or above [`ClipResult::display_floor`] (what the page paints), in
    /// `[0, 1]`.
    pub fn painted_fraction(&self) -> f32 {
        let bins = self.mel_hz.iter().take_while(|&&hz| hz <= self.band_limit_hz).count().max(1).min(self.mel_bins);
        let mut n = 0usize;
        for row in self.map.chunks_exact(self.mel_bins) {
            n += row[..bins].iter().filter(|&&v| v >= self.display_floor).count();
        }
        n as f32 / (self.frames * bins).max(1) as f32
    }
}

/// Progress of a long operation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Progress {
    /// What is being done: `calibrating` or `fitting`.
    pub stage: &'static str,
    /// Steps done.
    pub done: usize,
    /// Steps in all.
    pub total: usize,
}
