//! The whole path from samples to an anomaly map, for one clip, a stream, or a fit.
//!
//! [`Model`] = front end + backbone + embedding config (what a bank must match). [`score_clip`] scores a whole
//! mono clip; [`StreamScorer`] scores audio as it arrives with bounded memory; [`Fitter`] collects the patches of
//! normal clips and builds a [`Bank`].
//!
//! Windows: the log-mel `[T, M]` is cut into windows of `W = spec.window_frames` frames every
//! `H = spec.window_hop` frames, the last one aligned to the end of the clip (a clip shorter than `W` is repeated
//! to fill one window). Each frame belongs to the window whose centre is nearest, so every frame is judged with
//! as much context on both sides as the windows give. Per window: backbone -> patches `[W/s, M/s]` -> patch
//! scores -> bilinear upsampling to `[W, M]` -> Gaussian blur -> the owned frames go into the clip's map. The
//! clip score is the re-weighted score (PatchCore eq. 7) of the window that holds the clip's largest owned patch
//! distance. Streaming does exactly the same, window by window.

use std::ops::Range;
use std::sync::Arc;

use serde::Serialize;

pub use crate::anomaly_map::Segment;
use crate::anomaly_map::{segments, temporal_curve, window_map};
use crate::backbone::{Backbone, BackboneIdentity, BackboneSpec};
use crate::bank::{now_iso8601, Bank, BankMeta, FORMAT, VERSION};
use crate::detector::{Detector, DetectorConfig, PatchScores};
use crate::embedding::{embed, EmbeddingConfig, PatchGrid};
use crate::error::{Error, Result};
use crate::spectrogram::{LogCompression, LogMel, LogMelConfig, Spectrogram};
use crate::threshold::gamma_threshold;

/// Gaussian smoothing of the anomaly map, in spectrogram pixels (anomalib: 4).
pub const MAP_SIGMA: f32 = 4.0;
/// Fewest spectrogram frames a clip must have to be scored (about 0.37 s with the aisfx front end): shorter
/// clips give a patch or two and no meaningful score.
pub const MIN_FRAMES: usize = 16;
/// Largest absolute sample value accepted; PCM and float audio stay within about 1. Larger values are taken for a
/// wrongly scaled file rather than squared into infinities.
pub const MAX_ABS_SAMPLE: f32 = 1.0e4;
/// Cost of one grid column of frequency distance, as a fraction of the RMS norm of the normal patches. Measured
/// on MIMII fan id_00 (fit normal 0-9, test normal 10-19 vs abnormal 0-19, `logmel`): fraction 0 gives ROC-AUC
/// 1.000 but scores digital silence 0.057, below every normal clip, because silent patches match the fan's quiet
/// high bands; 0.01 -> 1.000 with silence 0.134 at the threshold (0.135); 0.02 -> 0.975 with silence 0.249,
/// flagged; 0.1 -> 0.925; 1.0 -> 0.880.
pub const POSITION_FRACTION: f32 = 0.02;
/// Quantile of the gamma fitted to held-out normal scores that becomes the default threshold (DCASE baseline).
pub const THRESHOLD_QUANTILE: f32 = 0.9;

/// Everything scoring one clip produces.
#[derive(Debug, Clone, Serialize)]
pub struct ClipResult {
    /// Clip score (PatchCore: re-weighted largest patch distance).
    pub score: f32,
    /// The bank's clip threshold the verdict used.
    pub threshold: f32,
    /// `score > threshold`.
    pub is_anomaly: bool,
    /// The bank's threshold for the temporal curve.
    pub segment_threshold: f32,
    /// Runs of frames where the temporal curve exceeds `segment_threshold`.
    pub segments: Vec<Segment>,
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
    /// Anomaly map `[T, M]` row-major, in patch-distance units.
    #[serde(skip)]
    pub map: Vec<f32>,
    /// Temporal curve `[T]`: the largest map value over mel bins at each frame.
    #[serde(skip)]
    pub curve: Vec<f32>,
    /// Centre frequency of each mel bin, Hz, `[M]`.
    #[serde(skip)]
    pub mel_hz: Vec<f32>,
}

/// A front end, a backbone and an embedding config: everything between samples and patches.
pub struct Model {
    onnx: Arc<Vec<u8>>,
    spec: BackboneSpec,
    identity: BackboneIdentity,
    logmel: LogMel,
    embedding: EmbeddingConfig,
    backbone: Option<Backbone>,
    pad_value: f32,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("spec", &self.spec.name).field("embedding", &self.embedding).finish()
    }
}

/// The embedded default backbone (native builds): aisfx CNN14 conv_block1..4, `models/aisfx-cnn14/`.
#[cfg(not(target_arch = "wasm32"))]
pub const DEFAULT_ONNX: &[u8] = include_bytes!("../models/aisfx-cnn14/model.onnx");
/// The embedded default backbone's spec JSON.
pub const DEFAULT_SPEC: &str = include_str!("../models/aisfx-cnn14/spec.json");

/// Log-compressed value of zero power, used to pad windows.
fn silence_value(c: &LogMelConfig) -> f32 {
    match c.log {
        LogCompression::Log1p { .. } => 0.0,
        LogCompression::Db { amin, reference, .. } => 10.0 * amin.log10() - 10.0 * amin.max(reference).log10(),
    }
}

/// One analysed window.
struct Window {
    /// First frame of the window in the clip.
    start: usize,
    /// Frames of the clip this window owns (absolute).
    owned: Range<usize>,
    /// Patches of the whole window.
    grid: PatchGrid,
    /// Patch indices (rows of `grid.data`) whose centre lies in `owned`.
    owned_patches: Range<usize>,
}

/// Window starts for `t` frames: `0, H, 2H, ...` and a last one ending at the clip's end.
fn window_starts(t: usize, w: usize, h: usize) -> Vec<usize> {
    if t <= w {
        return vec![0];
    }
    let mut s: Vec<usize> = (0..).map(|i| i * h).take_while(|&s| s + w < t).collect();
    s.push(t - w);
    s
}

/// Owned frame range of each window: frames nearest to its centre.
fn ownership(starts: &[usize], w: usize, t: usize) -> Vec<Range<usize>> {
    let mut out = Vec::with_capacity(starts.len());
    let mut lo = 0;
    for i in 0..starts.len() {
        let hi = if i + 1 < starts.len() { (starts[i] + starts[i + 1] + w) / 2 } else { t };
        let hi = hi.min(t).max(lo);
        out.push(lo..hi);
        lo = hi;
    }
    out
}

impl Model {
    /// Loads a backbone (`onnx` bytes + spec JSON) with the default embedding.
    ///
    /// # Errors
    /// [`Error::Model`] for an unreadable model or spec.
    pub fn from_bytes(onnx: &[u8], spec_json: &str) -> Result<Model> {
        Self::with_embedding(onnx, spec_json, EmbeddingConfig::default())
    }

    /// Loads a backbone with the given embedding.
    ///
    /// # Errors
    /// [`Error::Model`] for an unreadable model or spec; [`Error::InvalidInput`] for an embedding that does not
    /// fit the backbone.
    pub fn with_embedding(onnx: &[u8], spec_json: &str, embedding: EmbeddingConfig) -> Result<Model> {
        let spec = BackboneSpec::from_json(spec_json)?;
        embedding.validate(&spec)?;
        let logmel = LogMel::new(spec.front_end_config())?;
        let pad_value = silence_value(logmel.config());
        let mut model = Model {
            onnx: Arc::new(onnx.to_vec()),
            identity: BackboneIdentity {
                name: spec.name.clone(),
                sha256: crate::backbone::sha256_hex(onnx),
                outputs: spec.outputs.iter().map(|o| o.name.clone()).collect(),
            },
            spec,
            logmel,
            embedding: embedding.clone(),
            backbone: None,
            pad_value,
        };
        model.plan_backbone()?;
        Ok(model)
    }

    /// The embedded default model (aisfx CNN14) with the default embedding.
    ///
    /// # Errors
    /// [`Error::Model`] if the embedded model fails to load (a build problem).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn embedded_default() -> Result<Model> {
        Self::from_bytes(DEFAULT_ONNX, DEFAULT_SPEC)
    }

    /// Loads `model.onnx` and `spec.json` from a directory.
    ///
    /// # Errors
    /// [`Error::Io`] naming the missing file; [`Error::Model`] for unreadable content.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path) -> Result<Model> {
        let onnx_path = dir.join("model.onnx");
        let spec_path = dir.join("spec.json");
        let onnx = std::fs::read(&onnx_path).map_err(|e| Error::io(format!("reading {}", onnx_path.display()), e))?;
        let spec = std::fs::read_to_string(&spec_path)
            .map_err(|e| Error::io(format!("reading {}", spec_path.display()), e))?;
        Self::from_bytes(&onnx, &spec)
    }

    fn plan_backbone(&mut self) -> Result<()> {
        let layers = self.embedding.backbone_layers();
        self.backbone =
            if layers.is_empty() { None } else { Some(Backbone::from_bytes(&self.onnx, self.spec.clone(), &layers)?) };
        Ok(())
    }

    /// Switches to another embedding (re-plans the backbone for the layers it needs).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the embedding does not fit this backbone.
    pub fn set_embedding(&mut self, embedding: EmbeddingConfig) -> Result<()> {
        embedding.validate(&self.spec)?;
        let replan = embedding.backbone_layers() != self.embedding.backbone_layers();
        self.embedding = embedding;
        if replan {
            self.plan_backbone()?;
        }
        Ok(())
    }

    /// Sets aisfx-style peak normalisation of each clip (or stream window) before the front end.
    pub fn set_peak_normalize(&mut self, on: bool) -> Result<()> {
        let mut c = self.logmel.config().clone();
        c.peak_normalize = on;
        self.logmel = LogMel::new(c)?;
        Ok(())
    }

    /// Makes this model score with `bank`: checks the backbone and front end, then adopts the bank's embedding
    /// and peak normalisation.
    ///
    /// # Errors
    /// [`Error::Bank`] if the bank was fitted with another backbone or front end (naming both).
    pub fn prepare_for(&mut self, bank: &Bank) -> Result<()> {
        let mut front = self.logmel.config().clone();
        front.peak_normalize = bank.meta.front_end.peak_normalize;
        bank.check_compatible(&self.identity, &front)?;
        if self.logmel.config().peak_normalize != front.peak_normalize {
            self.logmel = LogMel::new(front)?;
        }
        if bank.meta.embedding != self.embedding {
            self.set_embedding(bank.meta.embedding.clone())?;
        }
        if self.embedding.dims(&self.spec) != bank.detector.dims() {
            return Err(Error::bank(format!(
                "the bank's patches have {} dimensions but its embedding gives {}",
                bank.detector.dims(),
                self.embedding.dims(&self.spec)
            )));
        }
        Ok(())
    }

    fn check_ready(&self, bank: &Bank) -> Result<()> {
        if bank.meta.embedding != self.embedding
            || bank.meta.front_end != *self.logmel.config()
            || bank.meta.backbone.sha256 != self.identity.sha256
        {
            return Err(Error::invalid(
                "the model is not prepared for this bank: call Model::prepare_for(&bank) first",
            ));
        }
        Ok(())
    }

    /// Backbone spec.
    pub fn spec(&self) -> &BackboneSpec {
        &self.spec
    }
    /// Backbone identity (name, SHA-256, outputs).
    pub fn identity(&self) -> &BackboneIdentity {
        &self.identity
    }
    /// The front end.
    pub fn logmel(&self) -> &LogMel {
        &self.logmel
    }
    /// The embedding config.
    pub fn embedding(&self) -> &EmbeddingConfig {
        &self.embedding
    }
    /// The front end's sample rate, Hz.
    pub fn sample_rate(&self) -> u32 {
        self.logmel.config().sample_rate
    }
    /// Seconds per frame.
    pub fn hop_s(&self) -> f64 {
        self.logmel.config().hop_seconds()
    }

    /// Resamples mono `samples` at `sample_rate` Hz to the model's rate and computes the log-mel `[T, M]`.
    ///
    /// # Errors
    /// [`Error::Audio`] for empty or non-finite audio; [`Error::InvalidInput`] for a zero sample rate.
    pub fn logmel_of(&self, samples: &[f32], sample_rate: u32) -> Result<Spectrogram> {
        if samples.is_empty() {
            return Err(Error::audio("the audio is empty: there is nothing to analyse"));
        }
        if sample_rate == 0 {
            return Err(Error::invalid("sample rate is 0 Hz"));
        }
        if let Some(i) = samples.iter().position(|v| !v.is_finite()) {
            return Err(Error::audio(format!("sample {i} is not a finite number (NaN or infinity)")));
        }
        if let Some(i) = samples.iter().position(|v| v.abs() > MAX_ABS_SAMPLE) {
            return Err(Error::audio(format!(
                "sample {i} is {:e}, far outside the audio range [-1, 1]: is the file scaled correctly?",
                samples[i]
            )));
        }
        let resampled;
        let x = if sample_rate == self.sample_rate() {
            samples
        } else {
            resampled = crate::audio::resample(samples, sample_rate, self.sample_rate())?;
            &resampled
        };
        self.logmel.compute(x)
    }

    /// Patch-grid columns (from the lowest frequency up) whose lowest mel band lies at or below `band_limit_hz`;
    /// at least one.
    pub fn valid_columns(&self, band_limit_hz: f32) -> usize {
        let s = self.embedding.grid_stride;
        let hz = self.logmel.mel_frequencies_hz();
        let gf = hz.len() / s;
        (0..gf).take_while(|&f| hz[f * s] <= band_limit_hz).count().max(1)
    }

    /// Nyquist frequency of audio at `sample_rate` as the model sees it, Hz.
    fn nyquist(&self, sample_rate: u32) -> f32 {
        sample_rate.min(self.sample_rate()) as f32 / 2.0
    }

    /// Cuts `lm` into windows and computes their patches, keeping `cols` grid columns.
    fn analyse(&self, lm: &Spectrogram, cols: usize, progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<Window>> {
        let (w, h) = (self.spec.window_frames, self.spec.window_hop);
        let t = lm.frames;
        if t == 0 {
            return Err(Error::audio("the audio is too short to give a single spectrogram frame"));
        }
        let starts = window_starts(t, w, h);
        let owned = ownership(&starts, w, t);
        self.analyse_windows(&lm.data, 0, t, &starts, &owned, cols, progress)
    }

    /// Patches of the windows at `starts` (absolute frames) with their `owned` frame ranges. `frames` holds the
    /// log-mel rows from absolute frame `buf_start` on; `total` is the clip's frame count (a clip shorter than a
    /// window is repeated to fill it).
    fn analyse_windows(
        &self,
        frames: &[f32],
        buf_start: usize,
        total: usize,
        starts: &[usize],
        owned: &[Range<usize>],
        cols: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Window>> {
        let (w, m) = (self.spec.window_frames, self.logmel.config().n_mels);
        let s = self.embedding.grid_stride;
        let mut out = Vec::with_capacity(starts.len());
        // Windows go through the backbone in batches: wider matrix products, progress still reported often.
        const BATCH: usize = 4;
        let items: Vec<(usize, &Range<usize>)> = starts.iter().copied().zip(owned).collect();
        for batch in items.chunks(BATCH) {
            let bufs: Vec<Vec<f32>> = batch
                .iter()
                .map(|&(start, _)| {
                    let mut buf = vec![self.pad_value; w * m];
                    for r in 0..w {
                        let src = if total >= w { start + r } else { r % total } - buf_start;
                        buf[r * m..(r + 1) * m].copy_from_slice(&frames[src * m..(src + 1) * m]);
                    }
                    buf
                })
                .collect();
            let maps = match &self.backbone {
                Some(b) => b.run_batch(&bufs.iter().map(|b| b.as_slice()).collect::<Vec<_>>())?,
                None => vec![Vec::new(); bufs.len()],
            };
            for ((&(start, own), buf), maps) in batch.iter().zip(&bufs).zip(&maps) {
                let mut grid = embed(&self.embedding, buf, w, m, maps)?;
                if cols < grid.freq {
                    grid = crop_columns(&grid, cols);
                }
                let rows: Vec<usize> = (0..grid.time).filter(|r| own.contains(&(start + r * s + s / 2))).collect();
                let owned_patches = match (rows.first(), rows.last()) {
                    (Some(&a), Some(&b)) => a * grid.freq..(b + 1) * grid.freq,
                    _ => 0..0,
                };
                out.push(Window { start, owned: own.clone(), grid, owned_patches });
                progress(out.len(), starts.len());
            }
        }
        Ok(out)
    }
}

/// The first `cols` columns of a patch grid.
fn crop_columns(grid: &PatchGrid, cols: usize) -> PatchGrid {
    let d = grid.dims;
    let mut data = Vec::with_capacity(grid.time * cols * d);
    for t in 0..grid.time {
        let row = t * grid.freq * d;
        data.extend_from_slice(&grid.data[row..row + cols * d]);
    }
    PatchGrid { time: grid.time, freq: cols, dims: d, data }
}

/// Keeps the first `cols` grid columns of an analysed window.
fn crop_window(win: &mut Window, cols: usize) {
    if cols >= win.grid.freq {
        return;
    }
    let f = win.grid.freq;
    let (r0, r1) = (win.owned_patches.start / f, win.owned_patches.end / f);
    win.grid = crop_columns(&win.grid, cols);
    win.owned_patches = r0 * cols..r1 * cols;
}

/// Scores of one window's patches, its re-weighted score and largest owned patch distance.
fn score_window(detector: &Detector, win: &Window) -> Result<(PatchScores, f32, f32)> {
    if let Detector::Padim(p) = detector {
        // PaDiM needs each patch's grid position, so the owned patches are taken from the whole window's scores.
        let patch = p.score_grid(&win.grid.data, win.grid.freq)?;
        let max = patch[win.owned_patches.clone()].iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let clip = patch.iter().cloned().fold(0.0f32, f32::max);
        return Ok((PatchScores { patch, clip }, max, max));
    }
    let all = detector.score(&win.grid.data)?;
    let d = win.grid.dims;
    let r = &win.owned_patches;
    if r.is_empty() {
        return Ok((all, f32::NEG_INFINITY, f32::NEG_INFINITY));
    }
    let owned = &win.grid.data[r.start * d..r.end * d];
    let owned_scores = detector.score(owned)?;
    let max_patch = owned_scores.patch.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    Ok((all, owned_scores.clip, max_patch))
}

/// One scored window: its owned frames' map rows `[owned, M]`, its re-weighted score and largest owned patch
/// distance.
fn window_result(
    detector: &Detector,
    win: &Window,
    mel_bins: usize,
    window_frames: usize,
    grid_stride: usize,
) -> Result<(Vec<f32>, f32, f32)> {
    let (scores, clip, max_patch) = score_window(detector, win)?;
    // A band-limited grid covers the mel bins of its columns; the bins above stay 0.
    let bins = if win.grid.freq >= mel_bins / grid_stride { mel_bins } else { win.grid.freq * grid_stride };
    let wm = window_map(&scores.patch, win.grid.time, win.grid.freq, window_frames, bins, MAP_SIGMA);
    let (a, b) = (win.owned.start - win.start, win.owned.end - win.start);
    let mut rows = vec![0.0f32; (b - a) * mel_bins];
    for (r, out) in rows.chunks_exact_mut(mel_bins).enumerate() {
        out[..bins].copy_from_slice(&wm[(a + r) * bins..(a + r + 1) * bins]);
    }
    Ok((rows, clip, max_patch))
}

/// Map and clip score of analysed windows: `(map [T, M], clip score)`.
fn assemble(
    detector: &Detector,
    windows: &[Window],
    frames: usize,
    mel_bins: usize,
    window_frames: usize,
    grid_stride: usize,
) -> Result<(Vec<f32>, f32)> {
    let mut map = vec![0.0f32; frames * mel_bins];
    let mut best = (f32::NEG_INFINITY, 0.0f32);
    for win in windows {
        let (rows, clip, max_patch) = window_result(detector, win, mel_bins, window_frames, grid_stride)?;
        map[win.owned.start * mel_bins..win.owned.end * mel_bins].copy_from_slice(&rows);
        if max_patch > best.0 {
            best = (max_patch, clip);
        }
    }
    Ok((map, best.1.max(0.0)))
}

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
    /// Anomaly map `[n, M]`.
    #[serde(skip)]
    pub map: Vec<f32>,
    /// Temporal curve `[n]`.
    #[serde(skip)]
    pub curve: Vec<f32>,
    /// Score of the analysis window this stretch came from.
    pub window_score: f32,
    /// Clip score of everything so far (as [`score_clip`] would give for the stream up to here).
    pub score: f32,
}

/// Scores audio as it arrives, with bounded memory: mono samples at `input_rate` go in, [`StreamUpdate`]s come
/// out about one window hop (`spec.window_hop` frames) behind the input. The concatenated updates after
/// [`StreamScorer::finish`] equal [`score_clip`] on the whole recording, up to the streaming resampler's chunk
/// boundaries.
pub struct StreamScorer {
    resampler: Option<crate::audio::StreamResampler>,
    front: crate::spectrogram::LogMelStream,
    buf: Vec<f32>,
    buf_start: usize,
    total: usize,
    next_start: usize,
    owned_from: usize,
    best: (f32, f32),
    finished: bool,
    cols: usize,
}

impl StreamScorer {
    /// A scorer for `model` (already prepared for `bank`) fed at `input_rate` Hz.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a zero rate, a model not prepared for the bank, or a peak-normalised front end
    /// (the peak of a stream is unknown in advance).
    pub fn new(model: &Model, bank: &Bank, input_rate: u32) -> Result<Self> {
        model.check_ready(bank)?;
        if bank.meta.detector.is_clip_level() {
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
        Ok(StreamScorer {
            resampler,
            front: crate::spectrogram::LogMelStream::new(model.logmel.config().clone())?,
            buf: Vec::new(),
            buf_start: 0,
            total: 0,
            next_start: 0,
            owned_from: 0,
            best: (f32::NEG_INFINITY, 0.0),
            finished: false,
            cols: model.valid_columns(bank.band_limit_hz().min(model.nyquist(input_rate))),
        })
    }

    /// Frames received so far.
    pub fn frames(&self) -> usize {
        self.total
    }

    /// Clip score so far.
    pub fn score(&self) -> f32 {
        self.best.1.max(0.0)
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
            model.analyse_windows(&self.buf, self.buf_start, self.total, starts, owned, self.cols, &mut |_, _| {})?;
        let mut out = Vec::with_capacity(wins.len());
        for win in &wins {
            let (map, clip, max_patch) = window_result(&bank.detector, win, m, w, model.embedding.grid_stride)?;
            if max_patch > self.best.0 {
                self.best = (max_patch, clip);
            }
            let (a, b) = (win.owned.start - self.buf_start, win.owned.end - self.buf_start);
            out.push(StreamUpdate {
                start_frame: win.owned.start,
                frames: win.owned.len(),
                mel_bins: m,
                hop_s: model.hop_s(),
                logmel: self.buf[a * m..b * m].to_vec(),
                curve: temporal_curve(&map, m),
                map,
                window_score: clip.max(0.0),
                score: self.score(),
            });
        }
        Ok(out)
    }

    fn take_frames(&mut self, frames: Vec<f32>, m: usize) {
        self.total += frames.len() / m;
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
            let owned = [self.owned_from..end];
            out.extend(self.run(model, bank, &[s], &owned)?);
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
    /// [`Error::Audio`] if the stream never produced a frame.
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
        if self.total < MIN_FRAMES {
            return Err(Error::audio(format!(
                "the stream ended after {} spectrogram frames; at least {MIN_FRAMES} ({:.2} s) are needed to judge it",
                self.total,
                MIN_FRAMES as f64 * model.hop_s()
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

/// Scores one mono clip (`samples` at `sample_rate` Hz, resampled inside).
///
/// # Errors
/// [`Error::Audio`] for empty or non-finite audio; [`Error::InvalidInput`] if `model` was not prepared for
/// `bank` ([`Model::prepare_for`]).
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
    model.check_ready(bank)?;
    let lm = model.logmel_of(samples, sample_rate)?;
    let limit = bank.band_limit_hz().min(model.nyquist(sample_rate));
    let mut r = score_logmel_band_limited(model, bank, &lm, limit, progress)?;
    r.duration_s = samples.len() as f64 / sample_rate as f64;
    for seg in &mut r.segments {
        seg.end_s = seg.end_s.min(r.duration_s);
    }
    Ok(r)
}

/// Scores a log-mel spectrogram `[T, M]` computed by `model`'s front end.
///
/// # Errors
/// [`Error::InvalidInput`] if the spectrogram has another number of mel bins than the front end, or the model is
/// not prepared for the bank.
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
    let m = model.logmel.config().n_mels;
    if lm.mel_bins != m || lm.data.len() != lm.frames * m {
        return Err(Error::invalid(format!("the spectrogram has {} mel bins, the front end {m}", lm.mel_bins)));
    }
    if lm.frames < MIN_FRAMES {
        return Err(Error::audio(format!(
            "the clip is too short to judge: it gives {} spectrogram frame(s), at least {MIN_FRAMES} ({:.2} s) are needed",
            lm.frames,
            MIN_FRAMES as f64 * model.hop_s()
        )));
    }
    let cols = model.valid_columns(band_limit_hz);
    let (map, score) = if let Detector::Baseline(b) = &bank.detector {
        baseline_map(b, &lm.data, lm.frames)
    } else {
        let windows = model.analyse(lm, cols, progress)?;
        let stride = model.embedding.grid_stride;
        assemble(&bank.detector, &windows, lm.frames, m, model.spec.window_frames, stride)?
    };
    let curve = temporal_curve(&map, m);
    let hop_s = model.hop_s();
    let segs = segments(&curve, hop_s, bank.meta.segment_threshold, 2);
    Ok(ClipResult {
        score,
        threshold: bank.meta.threshold,
        is_anomaly: score > bank.meta.threshold,
        segment_threshold: bank.meta.segment_threshold,
        segments: segs,
        frames: lm.frames,
        mel_bins: m,
        hop_s,
        duration_s: lm.frames as f64 * hop_s,
        band_limit_hz: band_limit_hz.min(model.sample_rate() as f32 / 2.0),
        logmel: lm.data.clone(),
        map,
        curve,
        mel_hz: model.logmel.mel_frequencies_hz(),
    })
}

/// Map `[T, M]` (smoothed like every map) and clip score of the backbone-free baseline.
fn baseline_map(b: &crate::detector::Baseline, lm: &[f32], frames: usize) -> (Vec<f32>, f32) {
    let m = b.config.mel_bins;
    let (score, raw) = b.score(lm);
    (crate::anomaly_map::gaussian_blur(&raw, frames, m, MAP_SIGMA), score)
}

/// What a fit does, besides the detector's own parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct FitConfig {
    /// Detector and its parameters.
    pub detector: DetectorConfig,
    /// Largest number of calibration folds (held-out parts of the normal clips) for the threshold (10: with up to 10 clips, each is held out alone).
    pub max_folds: usize,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig { detector: DetectorConfig::default(), max_folds: 10 }
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

/// The patches of one normal clip, ready to be added to a [`Fitter`].
pub struct AnalysedClip {
    windows: Vec<Window>,
    frames: usize,
    seconds: f64,
    band_limit_hz: f32,
    logmel: Vec<f32>,
}

impl AnalysedClip {
    /// Duration, seconds.
    pub fn seconds(&self) -> f64 {
        self.seconds
    }
}

/// Collects normal clips, then fits a detector and calibrates its threshold.
///
/// Calibration: the clips are split into up to `max_folds` folds; each fold is scored by a detector fitted on
/// the others, and a gamma fitted to those held-out scores gives the threshold (its 90th percentile). With a
/// single clip, its windows are split into contiguous parts instead (neighbouring parts overlap by half a window,
/// so this threshold is somewhat low). The final detector is fitted on every clip.
pub struct Fitter {
    config: FitConfig,
    clips: Vec<(Vec<Window>, usize)>,
    seconds: f64,
    dims: usize,
    band_limit_hz: f32,
    /// Log-mels of the clips, kept only for clip-level detectors (the baseline).
    logmels: Vec<Vec<f32>>,
}

impl Fitter {
    /// A fitter for `model`.
    pub fn new(model: &Model, config: FitConfig) -> Self {
        Fitter {
            config,
            clips: Vec::new(),
            seconds: 0.0,
            dims: model.embedding.dims(&model.spec),
            band_limit_hz: f32::INFINITY,
            logmels: Vec::new(),
        }
    }

    /// Adds one normal clip (mono `samples` at `sample_rate` Hz).
    ///
    /// # Errors
    /// As [`Fitter::analyse_clip`].
    pub fn add_clip(&mut self, model: &Model, samples: &[f32], sample_rate: u32) -> Result<()> {
        let clip = Self::analyse_clip(model, samples, sample_rate)?;
        self.add_analysed(clip);
        Ok(())
    }

    /// Analyses one normal clip without adding it (so that several clips can be analysed in parallel and then
    /// added with [`Fitter::add_analysed`]).
    ///
    /// # Errors
    /// [`Error::Audio`] for empty or non-finite audio, digital silence, or a clip shorter than [`MIN_FRAMES`]
    /// frames (one that could not be scored either).
    pub fn analyse_clip(model: &Model, samples: &[f32], sample_rate: u32) -> Result<AnalysedClip> {
        let lm = model.logmel_of(samples, sample_rate)?;
        if lm.frames < MIN_FRAMES {
            return Err(Error::audio(format!(
                "the clip is too short to learn from: it gives {} spectrogram frame(s), at least {MIN_FRAMES} \
                 ({:.2} s) are needed, as for scoring",
                lm.frames,
                MIN_FRAMES as f64 * model.hop_s()
            )));
        }
        if lm.data.iter().all(|&v| v == model.pad_value) {
            return Err(Error::audio(
                "this clip is digital silence: a bank must learn the sound of the machine running",
            ));
        }
        let band_limit_hz = model.nyquist(sample_rate);
        let windows = model.analyse(&lm, model.valid_columns(band_limit_hz), &mut |_, _| {})?;
        Ok(AnalysedClip {
            windows,
            frames: lm.frames,
            seconds: samples.len() as f64 / sample_rate as f64,
            band_limit_hz,
            logmel: lm.data,
        })
    }

    /// Adds a clip analysed by [`Fitter::analyse_clip`].
    pub fn add_analysed(&mut self, clip: AnalysedClip) {
        self.seconds += clip.seconds;
        self.band_limit_hz = self.band_limit_hz.min(clip.band_limit_hz);
        if self.config.detector.is_clip_level() {
            self.logmels.push(clip.logmel);
        }
        self.clips.push((clip.windows, clip.frames));
    }

    /// Clips added so far.
    pub fn clips(&self) -> usize {
        self.clips.len()
    }

    /// Seconds of audio added so far.
    pub fn seconds(&self) -> f64 {
        self.seconds
    }

    fn owned_patches<'a>(units: impl Iterator<Item = &'a [Window]>, dims: usize, full: bool) -> Vec<f32> {
        let mut out = Vec::new();
        for u in units {
            for w in u {
                if full {
                    // Whole window grids (PaDiM's per-position Gaussians need every position of every window).
                    out.extend_from_slice(&w.grid.data);
                    continue;
                }
                out.extend_from_slice(&w.grid.data[w.owned_patches.start * dims..w.owned_patches.end * dims]);
            }
        }
        out
    }

    /// Sets the weight of the frequency-position feature (the last patch dimension, analysed with weight 1) to
    /// [`POSITION_FRACTION`] times the RMS norm of the other dimensions of the normal patches, and returns it.
    fn position_weight(&mut self) -> f32 {
        let dims = self.dims;
        let (mut sum, mut count) = (0.0f64, 0usize);
        for (windows, _) in &self.clips {
            for w in windows {
                let r = &w.owned_patches;
                for p in w.grid.data[r.start * dims..r.end * dims].chunks_exact(dims) {
                    sum += p[..dims - 1].iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
                    count += 1;
                }
            }
        }
        let rms = if sum > 0.0 && count > 0 { (sum / count as f64).sqrt() as f32 } else { 1.0 };
        let weight = POSITION_FRACTION * rms;
        for (windows, _) in &mut self.clips {
            for w in windows {
                w.grid.data.chunks_exact_mut(dims).for_each(|p| p[dims - 1] *= weight);
            }
        }
        weight
    }

    /// Per-layer weights giving each layer's part of the normal patches unit RMS norm; applies them to the
    /// stored patches and returns them.
    fn balance(&mut self, layer_dims: &[usize]) -> Vec<f32> {
        let dims = self.dims;
        let mut sum = vec![0.0f64; layer_dims.len()];
        let mut count = 0usize;
        for (windows, _) in &self.clips {
            for w in windows {
                let r = &w.owned_patches;
                for p in w.grid.data[r.start * dims..r.end * dims].chunks_exact(dims) {
                    let mut off = 0;
                    for (l, &c) in layer_dims.iter().enumerate() {
                        sum[l] += p[off..off + c].iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
                        off += c;
                    }
                    count += 1;
                }
            }
        }
        let weights: Vec<f32> =
            sum.iter().map(|&s| if s > 0.0 && count > 0 { (count as f64 / s).sqrt() as f32 } else { 1.0 }).collect();
        for (windows, _) in &mut self.clips {
            for w in windows {
                for p in w.grid.data.chunks_exact_mut(dims) {
                    let mut off = 0;
                    for (l, &c) in layer_dims.iter().enumerate() {
                        p[off..off + c].iter_mut().for_each(|v| *v *= weights[l]);
                        off += c;
                    }
                }
            }
        }
        weights
    }

    /// Calibrates the threshold, fits the final detector and returns the bank. `progress` is called after each
    /// step; returning `false` cancels.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] with too little audio to calibrate (fewer than two windows in all);
    /// [`Error::Cancelled`] if `progress` returned `false`.
    pub fn finish(mut self, model: &Model, progress: &mut dyn FnMut(Progress) -> bool) -> Result<Bank> {
        let dims = self.dims;
        // Only the bands every clip has signal in: the lowest Nyquist frequency of the clips.
        let cols = model.valid_columns(self.band_limit_hz);
        for (windows, _) in &mut self.clips {
            windows.iter_mut().for_each(|w| crop_window(w, cols));
        }
        let mut embedding = model.embedding.clone();
        if embedding.balance_layers && embedding.layer_weights.is_empty() {
            embedding.layer_weights = self.balance(&embedding.layer_dims(&model.spec));
        }
        if embedding.frequency_position && embedding.position_weight <= 0.0 {
            embedding.position_weight = self.position_weight();
        }
        // Detector geometry: the window's patch grid (after the band limit) and the mel bins.
        let (grid_time, grid_freq) =
            self.clips.iter().flat_map(|c| c.0.first()).next().map_or((0, 0), |w| (w.grid.time, w.grid.freq));
        let det_cfg = self.config.detector.clone().with_geometry(grid_time, grid_freq, model.logmel.config().n_mels);
        let full = det_cfg.needs_full_windows();
        if det_cfg.is_clip_level() {
            return self.finish_clip_level(model, embedding, det_cfg, progress);
        }
        // Calibration units: clips, or parts of a single clip.
        let mut units: Vec<(&[Window], usize)> = Vec::new();
        if self.clips.len() >= 2 {
            for (w, t) in &self.clips {
                units.push((w.as_slice(), *t));
            }
        } else if let Some((w, _)) = self.clips.first() {
            let parts = w.len().min(self.config.max_folds);
            if parts < 2 {
                let need = (model.spec.window_frames + model.spec.window_hop) as f64 * model.hop_s();
                return Err(Error::invalid(format!(
                    "too little normal audio to set a threshold: give at least {need:.1} s (two analysis \
                     windows), better 30 s or several clips"
                )));
            }
            let per = w.len().div_ceil(parts);
            for c in w.chunks(per) {
                let frames = c.last().map_or(0, |x| x.owned.end);
                units.push((c, frames));
            }
        } else {
            return Err(Error::invalid("no normal clip was added: fitting needs normal audio"));
        }
        let folds = units.len().min(self.config.max_folds);
        let total = folds + 1;
        let mut scores = Vec::with_capacity(units.len());
        let mut peaks = Vec::with_capacity(units.len());
        let m = model.logmel.config().n_mels;
        for f in 0..folds {
            let train = Self::owned_patches(
                units.iter().enumerate().filter(|(i, _)| i % folds != f).map(|(_, u)| u.0),
                dims,
                full,
            );
            let det = Detector::fit(&det_cfg, &train, dims)?;
            for (_, u) in units.iter().enumerate().filter(|(i, _)| i % folds == f) {
                let first = u.0.first().map_or(0, |w| w.owned.start);
                let frames = u.1;
                let (map, score) =
                    assemble(&det, u.0, frames, m, model.spec.window_frames, model.embedding.grid_stride)?;
                let curve = temporal_curve(&map[first * m..], m);
                scores.push(score);
                peaks.push(curve.iter().cloned().fold(0.0f32, f32::max));
            }
            if !progress(Progress { stage: "calibrating", done: f + 1, total }) {
                return Err(Error::Cancelled);
            }
        }
        let normal_scores = gamma_threshold(&scores, THRESHOLD_QUANTILE)?;
        if !(normal_scores.threshold > 0.0) {
            return Err(Error::invalid(
                "every held-out normal clip scored 0: the normal material does not change at all (silence or a \
                 constant signal?); record the machine while it runs",
            ));
        }
        let normal_curve_peaks = gamma_threshold(&peaks, THRESHOLD_QUANTILE)?;
        let all = Self::owned_patches(self.clips.iter().map(|c| c.0.as_slice()), dims, full);
        let detector = Detector::fit(&det_cfg, &all, dims)?;
        if !progress(Progress { stage: "fitting", done: total, total }) {
            return Err(Error::Cancelled);
        }
        Ok(self.make_bank(model, embedding, detector, normal_scores, normal_curve_peaks))
    }

    /// The bank of a fitted detector with its calibration.
    fn make_bank(
        &self,
        model: &Model,
        embedding: EmbeddingConfig,
        detector: Detector,
        normal_scores: crate::threshold::NormalStats,
        normal_curve_peaks: crate::threshold::NormalStats,
    ) -> Bank {
        let dims = self.dims;
        let (state, state_rows) = detector.state();
        let data: Vec<u8> = state.iter().flat_map(|x| x.to_le_bytes()).collect();
        let meta = BankMeta {
            format: FORMAT.to_string(),
            version: VERSION,
            writer: format!("sonomaly {}", env!("CARGO_PKG_VERSION")),
            detector: detector.config(),
            dims,
            memory_bank_rows: state_rows,
            front_end: model.logmel.config().clone(),
            backbone: model.identity.clone(),
            embedding,
            band_limit_hz: self.band_limit_hz.is_finite().then_some(self.band_limit_hz),
            clips_fitted: self.clips.len(),
            seconds_fitted: self.seconds,
            threshold: normal_scores.threshold,
            segment_threshold: normal_curve_peaks.threshold,
            normal_scores,
            normal_curve_peaks,
            created: now_iso8601(),
            data_sha256: String::new(),
        };
        let meta = BankMeta { data_sha256: crate::bank::checksum(&meta, &data), ..meta };
        Bank { meta, detector }
    }

    /// Calibrates and fits a clip-level detector (the baseline) on the clips' log-mels.
    fn finish_clip_level(
        self,
        model: &Model,
        embedding: EmbeddingConfig,
        det_cfg: DetectorConfig,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<Bank> {
        let DetectorConfig::Baseline(cfg) = &det_cfg else {
            return Err(Error::invalid("not a clip-level detector"));
        };
        let n = self.logmels.len();
        if n < 2 {
            return Err(Error::invalid("the baseline detector needs at least two normal clips"));
        }
        let m = cfg.mel_bins;
        let folds = n.min(self.config.max_folds.max(2));
        let total = folds + 1;
        let (mut scores, mut peaks) = (Vec::new(), Vec::new());
        for f in 0..folds {
            let train: Vec<&[f32]> =
                self.logmels.iter().enumerate().filter(|(i, _)| i % folds != f).map(|(_, l)| l.as_slice()).collect();
            let b = crate::detector::Baseline::fit(&train, self.dims, cfg.clone())?;
            for l in self.logmels.iter().enumerate().filter(|(i, _)| i % folds == f).map(|(_, l)| l) {
                let (map, score) = baseline_map(&b, l, l.len() / m);
                scores.push(score);
                peaks.push(temporal_curve(&map, m).iter().cloned().fold(0.0f32, f32::max));
            }
            if !progress(Progress { stage: "calibrating", done: f + 1, total }) {
                return Err(Error::Cancelled);
            }
        }
        let normal_scores = gamma_threshold(&scores, THRESHOLD_QUANTILE)?;
        if !(normal_scores.threshold > 0.0) {
            return Err(Error::invalid(
                "every held-out normal clip scored 0: the normal material does not change at all (silence or a \
                 constant signal?); record the machine while it runs",
            ));
        }
        let normal_curve_peaks = gamma_threshold(&peaks, THRESHOLD_QUANTILE)?;
        let all: Vec<&[f32]> = self.logmels.iter().map(|l| l.as_slice()).collect();
        let detector = Detector::Baseline(crate::detector::Baseline::fit(&all, self.dims, cfg.clone())?);
        if !progress(Progress { stage: "fitting", done: total, total }) {
            return Err(Error::Cancelled);
        }
        Ok(self.make_bank(model, embedding, detector, normal_scores, normal_curve_peaks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_clip_once() {
        for t in [1usize, 50, 99, 100, 101, 149, 150, 431, 1000] {
            let s = window_starts(t, 100, 50);
            let o = ownership(&s, 100, t);
            assert_eq!(o.first().unwrap().start, 0);
            assert_eq!(o.last().unwrap().end, t);
            for (i, r) in o.iter().enumerate() {
                if i > 0 {
                    assert_eq!(o[i - 1].end, r.start);
                }
                if t >= 100 {
                    assert!(r.start >= s[i] && r.end <= s[i] + 100, "t={t} window {i}");
                }
            }
        }
        assert_eq!(window_starts(431, 100, 50), vec![0, 50, 100, 150, 200, 250, 300, 331]);
    }
}
