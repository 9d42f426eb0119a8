//! The JavaScript face of sonomaly (wasm32 only): the one `#[wasm_bindgen]` file.
//!
//! [`Engine`] holds a model (front end + backbone), at most one bank, at most one live stream and at most one fit
//! in progress. [`AudioReader`] decodes the user's file with the core's decoder (the command line's), reading a
//! `Blob` in slices; [`Engine::score_reader`] scores it, as a stream with bounded memory when it is long. The
//! page's worker (`www/worker.js`) owns one engine; nothing here touches the DOM. Results are plain objects with camelCase fields; the big arrays (log-mel, map, curve, mel frequencies)
//! are `Float32Array`s, copied once out of wasm memory. Errors are JavaScript `Error`s whose message is the
//! core's plain sentence; panics print their message to the console (`console_error_panic_hook`).

use js_sys::{Array, Float32Array, Object, Reflect, Uint32Array, Uint8Array};
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::audio::{is_unsupported_format, ChannelSelect, MediaSource, MonoStream, TargetRate};
use crate::backbone::{Backbone, BackboneSpec, Runtime};
use crate::bank::{front_end_summary, Bank};
use crate::detector::{DetectorConfig, DetectorOptions};
use crate::embedding::EmbeddingConfig;
use crate::pipeline::{
    ClipResult, FitConfig, FitPreset, Fitter, MemberConfig, Model, Recording, Segment, StreamScorer, StreamUpdate,
    WindowPart, DEFAULT_PRESET,
};
use crate::spectrogram::LogMel;

/// Installs the panic hook so that a Rust panic shows its message in the browser console.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// True if this build uses WebAssembly SIMD (`+simd128`), as `./build.sh` builds it.
/// Analysis windows go through the backbone this many at a time; the shares of `Engine.scoreWindowShare` are
/// whole batches.
#[wasm_bindgen(js_name = windowBatch)]
pub fn window_batch() -> usize {
    crate::pipeline::WINDOW_BATCH
}

#[wasm_bindgen(js_name = simdSupported)]
pub fn simd_supported() -> bool {
    cfg!(target_feature = "simd128")
}

/// The crate's version.
#[wasm_bindgen]
pub fn version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

fn js_err(e: crate::Error) -> JsError {
    JsError::new(&e.to_string())
}

fn to_js<T: Serialize>(v: &T) -> Result<JsValue, JsError> {
    let s = serde_wasm_bindgen::Serializer::json_compatible();
    v.serialize(&s).map_err(|e| JsError::new(&format!("internal: could not convert a result for JavaScript: {e}")))
}

fn set(obj: &Object, key: &str, value: &JsValue) {
    // Reflect::set on a fresh plain object cannot fail.
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

fn f32s(v: &[f32]) -> JsValue {
    Float32Array::from(v).into()
}

/// Segment as the page sees it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsSegment {
    start_s: f64,
    end_s: f64,
    peak: f32,
}

fn js_segments(segs: &[Segment]) -> Vec<JsSegment> {
    segs.iter().map(|s| JsSegment { start_s: s.start_s, end_s: s.end_s, peak: s.peak }).collect()
}

/// One member's clip score as the page sees it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsMember {
    name: String,
    score: f32,
    raw: f32,
}

/// Scalar part of a clip result.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsClip {
    score: f32,
    threshold: f32,
    is_anomaly: bool,
    segment_threshold: f32,
    segments: Vec<JsSegment>,
    members: Vec<JsMember>,
    units: String,
    display_floor: f32,
    display_ceiling: f32,
    level_distance: Option<f32>,
    out_of_distribution: Option<String>,
    band_limit_hz: f32,
    frames: usize,
    mel_bins: usize,
    hop_s: f64,
    duration_s: f64,
}

fn clip_to_js(r: &ClipResult) -> Result<JsValue, JsError> {
    let obj: Object = to_js(&JsClip {
        score: r.score,
        threshold: r.threshold,
        is_anomaly: r.is_anomaly,
        segment_threshold: r.segment_threshold,
        segments: js_segments(&r.segments),
        members: r.members.iter().map(|m| JsMember { name: m.name.clone(), score: m.score, raw: m.raw }).collect(),
        units: r.units.to_string(),
        display_floor: r.display_floor,
        display_ceiling: r.display_ceiling,
        level_distance: r.level_distance,
        out_of_distribution: r.out_of_distribution.clone(),
        band_limit_hz: r.band_limit_hz,
        frames: r.frames,
        mel_bins: r.mel_bins,
        hop_s: r.hop_s,
        duration_s: r.duration_s,
    })?
    .unchecked_into();
    set(&obj, "logmel", &f32s(&r.logmel));
    set(&obj, "map", &f32s(&r.map));
    set(&obj, "curve", &f32s(&r.curve));
    set(&obj, "melHz", &f32s(&r.mel_hz));
    Ok(obj.into())
}

/// Window parts as JavaScript sees them (see `Engine.scoreWindowShare`).
fn parts_to_js(parts: &[Vec<WindowPart>]) -> Result<JsValue, JsError> {
    let members = parts.first().map_or(0, |p| p.len());
    let mut rows = Vec::new();
    let mut scores = Vec::with_capacity(parts.len() * members * 2);
    let mut lengths = Vec::with_capacity(parts.len() * members);
    for p in parts.iter().flatten() {
        rows.extend_from_slice(&p.rows);
        scores.extend_from_slice(&[p.clip, p.max_owned]);
        lengths.push(p.rows.len() as u32);
    }
    let obj = Object::new();
    set(&obj, "windows", &JsValue::from(parts.len() as u32));
    set(&obj, "members", &JsValue::from(members as u32));
    set(&obj, "rows", &f32s(&rows));
    set(&obj, "scores", &f32s(&scores));
    set(&obj, "lengths", &Uint32Array::from(lengths.as_slice()).into());
    Ok(obj.into())
}

/// Scalar part of a stream update.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsUpdate {
    start_frame: usize,
    frames: usize,
    mel_bins: usize,
    hop_s: f64,
    window_score: f32,
    score: f32,
}

fn updates_to_js(updates: &[StreamUpdate]) -> Result<JsValue, JsError> {
    let out = Array::new();
    for u in updates {
        let obj: Object = to_js(&JsUpdate {
            start_frame: u.start_frame,
            frames: u.frames,
            mel_bins: u.mel_bins,
            hop_s: u.hop_s,
            window_score: u.window_score,
            score: u.score,
        })?
        .unchecked_into();
        set(&obj, "logmel", &f32s(&u.logmel));
        set(&obj, "map", &f32s(&u.map));
        set(&obj, "curve", &f32s(&u.curve));
        out.push(&obj);
    }
    Ok(out.into())
}

/// What the page shows about the loaded model.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsModelInfo {
    name: String,
    description: String,
    licence: String,
    source: String,
    backbone_sha256: String,
    layers: Vec<String>,
    /// The layers the `environment` preset takes patches from (the spec's `patch_layers`).
    patch_layers: Vec<String>,
    sample_rate: u32,
    front_end: String,
    mel_bins: usize,
    hop_s: f64,
    window_frames: usize,
    /// Frames between the starts of two analysis windows.
    window_hop: usize,
    window_s: f64,
    /// Shortest clip that can be scored or fitted on, seconds ([`Model::min_frames`] frames).
    min_seconds: f64,
    /// A bank fitted on fewer clips or seconds than these has a rough threshold
    /// ([`crate::threshold::ThresholdSupport`]): for the page's hint before a fit.
    steady_clips: usize,
    steady_seconds: f64,
}

/// What the page shows about the loaded bank.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsBankInfo {
    detector: String,
    backbone: String,
    backbone_sha256: String,
    front_end: String,
    layers: String,
    memory_bank: String,
    units: String,
    clips: usize,
    seconds: f64,
    threshold: f32,
    segment_threshold: f32,
    display_floor: f32,
    display_ceiling: f32,
    created: String,
    /// Highest frequency judged, Hz; `None` when the normal clips had signal in every band.
    band_limit_hz: Option<f32>,
    /// Held-out normal units the thresholds were set from.
    held_out_units: usize,
    /// The threshold rests on too little normal sound ([`Bank::threshold_support`]).
    threshold_rough: bool,
    /// For a rough threshold, the sentence to show; `None` otherwise.
    threshold_note: Option<String>,
}

fn bank_info(bank: &Bank) -> Result<JsValue, JsError> {
    let i = bank.info();
    let (display_floor, display_ceiling) = crate::pipeline::display_range(bank, i.segment_threshold);
    to_js(&JsBankInfo {
        detector: i.detector,
        backbone: i.backbone,
        backbone_sha256: i.backbone_sha256,
        front_end: i.front_end,
        layers: i.layers,
        memory_bank: i.memory_bank,
        units: i.units,
        clips: i.clips_fitted,
        seconds: i.seconds_fitted,
        threshold: i.threshold,
        segment_threshold: i.segment_threshold,
        display_floor,
        display_ceiling,
        created: i.created,
        band_limit_hz: Some(bank.band_limit_hz()).filter(|f| f.is_finite()),
        held_out_units: i.held_out_units,
        threshold_rough: i.threshold_rough,
        threshold_note: i.threshold_note,
    })
}

/// What [`check_model`] found: one entry per output of the spec.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsModelCheck {
    name: String,
    runtime: String,
    outputs: Vec<JsOutputCheck>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsOutputCheck {
    name: String,
    channels: usize,
    time: usize,
    freq: usize,
}

/// A deterministic test window for [`check_model`]: the log-mel (the spec's own front end) of a 440 Hz tone
/// gliding up two octaves with a little pseudo-random noise, cut or padded to `window_frames` frames.
fn test_window(spec: &BackboneSpec) -> crate::Result<Vec<f32>> {
    let cfg = spec.front_end_config();
    let (sr, m, frames) = (cfg.sample_rate as f64, cfg.n_mels, spec.window_frames);
    let n = (frames + 2) * cfg.hop_length + cfg.n_fft;
    let mut seed = 0x2545_f491_u32;
    let samples: Vec<f32> = (0..n)
        .map(|i| {
            let t = i as f64 / sr;
            let f = 440.0 * 4f64.powf(t / (n as f64 / sr));
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let noise = (seed as f64 / u32::MAX as f64) - 0.5;
            (0.3 * (2.0 * std::f64::consts::PI * f * t).sin() + 0.02 * noise) as f32
        })
        .collect();
    let lm = LogMel::new(cfg)?.compute(&samples)?;
    let mut window = lm.data;
    window.resize(frames * m, *window.last().unwrap_or(&0.0));
    window.truncate(frames * m);
    Ok(window)
}

/// Checks a backbone before the page switches to it: reads the spec, loads the ONNX with every output the spec
/// lists, runs it on a test window (the log-mel of a tone, `[window_frames, mel_bins]`) and checks that each
/// output has the spec's channels, about `window_frames / time_stride` rows and `mel_bins / freq_stride`
/// columns, and finite values. Returns `{name, runtime, outputs: [{name, channels, time, freq}]}`.
///
/// # Errors
/// A plain sentence naming the file at fault: the spec (not JSON, missing fields), the ONNX (not a model, no
/// such output, other shapes than the spec announces), or outputs with non-finite values.
#[wasm_bindgen(js_name = checkModel)]
pub fn check_model(onnx: &[u8], spec_json: &str) -> Result<JsValue, JsError> {
    let spec = BackboneSpec::from_json(spec_json).map_err(js_err)?;
    let names: Vec<String> = spec.outputs.iter().map(|o| o.name.clone()).collect();
    let backbone = Backbone::from_bytes(onnx, spec.clone(), &names).map_err(js_err)?;
    let mel_bins = spec.front_end_config().n_mels;
    let maps = backbone.run(&test_window(&spec).map_err(js_err)?).map_err(js_err)?;
    let mut outputs = Vec::with_capacity(maps.len());
    for (map, o) in maps.iter().zip(&spec.outputs) {
        let rows = spec.window_frames as f64 / o.time_stride as f64;
        let cols = mel_bins as f64 / o.freq_stride as f64;
        let near = |got: usize, want: f64| got as f64 >= want.floor() && got as f64 <= want.ceil();
        if !near(map.time, rows) || !near(map.freq, cols) {
            return Err(JsError::new(&format!(
                "model: output '{}' is {} x {} (time x frequency) for a window of {} frames x {mel_bins} mel bins, \
                 but the spec's strides ({} and {}) announce {rows} x {cols}: the spec does not describe this model",
                o.name, map.time, map.freq, spec.window_frames, o.time_stride, o.freq_stride
            )));
        }
        if map.data.iter().any(|v| !v.is_finite()) {
            return Err(JsError::new(&format!(
                "model: output '{}' holds values that are not finite numbers on a test input: the model is damaged",
                o.name
            )));
        }
        outputs.push(JsOutputCheck { name: o.name.clone(), channels: map.channels, time: map.time, freq: map.freq });
    }
    to_js(&JsModelCheck { name: spec.name.clone(), runtime: backbone.runtime_name().to_string(), outputs })
}

/// Reads a bank file without a model, to find out which model it needs: returns its info as
/// [`Engine::load_bank`] does (`backbone` and `backboneSha256`: the model it was fitted with, the first 12 hex
/// digits of the SHA-256 of its ONNX bytes; `frontEnd`).
///
/// # Errors
/// A plain sentence for a file that is not a bank, or a damaged one (as [`Engine::load_bank`]).
#[wasm_bindgen(js_name = bankInfoOf)]
pub fn bank_info_of(bytes: &[u8]) -> Result<JsValue, JsError> {
    bank_info(&Bank::from_bytes(bytes).map_err(js_err)?)
}

/// A model, the bank it scores with, and the live stream and fit in progress, if any.
#[wasm_bindgen]
pub struct Engine {
    model: Model,
    bank: Option<Bank>,
    stream: Option<StreamScorer>,
    fitter: Option<(Fitter, Model)>,
}

#[wasm_bindgen]
impl Engine {
    /// Loads a backbone: the ONNX bytes and its spec JSON (e.g. `models/aisfx-cnn14/model.onnx` and
    /// `spec.json`). Throws with a plain message for an unreadable model or spec.
    #[wasm_bindgen(constructor)]
    pub fn new(onnx: &[u8], spec_json: &str) -> Result<Engine, JsError> {
        let model = Model::from_bytes(onnx, spec_json).map_err(js_err)?;
        Ok(Engine { model, bank: None, stream: None, fitter: None })
    }

    /// The model: `{name, description, licence, source, backboneSha256, layers, patchLayers, sampleRate, frontEnd, melBins,
    /// hopS, windowFrames, windowHop, windowS, minSeconds, steadyClips, steadySeconds, melHz: Float32Array}`
    /// (`windowFrames`, `windowHop`: the analysis windows' length and the frames between their starts; a fit on
    /// one clip needs two windows, `(windowFrames + windowHop) * hopS` seconds, and a live stream judges its first
    /// window once that much has arrived; `steadyClips`, `steadySeconds`: a bank fitted on less normal sound has a
    /// rough threshold).
    #[wasm_bindgen(js_name = modelInfo)]
    pub fn model_info(&self) -> Result<JsValue, JsError> {
        let spec = self.model.spec();
        let cfg = self.model.logmel().config();
        let obj: Object = to_js(&JsModelInfo {
            name: spec.name.clone(),
            description: spec.description.clone(),
            licence: spec.licence.clone(),
            source: spec.source.clone(),
            backbone_sha256: self.model.identity().sha256.chars().take(12).collect(),
            layers: spec.outputs.iter().map(|o| o.name.clone()).collect(),
            patch_layers: spec.patch_layers.clone(),
            sample_rate: cfg.sample_rate,
            front_end: front_end_summary(cfg),
            mel_bins: cfg.n_mels,
            hop_s: self.model.hop_s(),
            window_frames: spec.window_frames,
            window_hop: spec.window_hop,
            window_s: spec.window_frames as f64 * self.model.hop_s(),
            min_seconds: self.model.min_frames() as f64 * self.model.hop_s(),
            steady_clips: crate::threshold::STEADY_CLIPS,
            steady_seconds: crate::threshold::STEADY_SECONDS,
        })?
        .unchecked_into();
        set(&obj, "melHz", &f32s(&self.model.logmel().mel_frequencies_hz()));
        Ok(obj.into())
    }

    /// Loads a bank file and makes it the one used for scoring. A bank fitted with another backbone or front end
    /// is refused (the current bank stays). Returns the bank's info: `{detector, backbone, backboneSha256,
    /// frontEnd, layers, memoryBank, clips, seconds, threshold, segmentThreshold, created, bandLimitHz, heldOutUnits,
    /// thresholdRough, thresholdNote}` (`bandLimitHz`: highest frequency judged, or `null` for every band;
    /// `thresholdNote`: the sentence saying the threshold is rough, or `null`).
    #[wasm_bindgen(js_name = loadBank)]
    pub fn load_bank(&mut self, bytes: &[u8]) -> Result<JsValue, JsError> {
        let bank = Bank::from_bytes(bytes).map_err(js_err)?;
        self.use_bank(bank)
    }

    fn use_bank(&mut self, bank: Bank) -> Result<JsValue, JsError> {
        self.model.prepare_for(&bank).map_err(js_err)?;
        let info = bank_info(&bank)?;
        self.bank = Some(bank);
        self.stream = None;
        Ok(info)
    }

    /// True once a bank is loaded.
    #[wasm_bindgen(js_name = hasBank)]
    pub fn has_bank(&self) -> bool {
        self.bank.is_some()
    }

    /// The loaded bank's info (as [`Engine::load_bank`] returns it), or `undefined`.
    #[wasm_bindgen(js_name = bankInfo)]
    pub fn bank_info(&self) -> Result<JsValue, JsError> {
        match &self.bank {
            Some(b) => bank_info(b),
            None => Ok(JsValue::UNDEFINED),
        }
    }

    /// The loaded bank as a bank file (`Uint8Array`), e.g. to download it.
    #[wasm_bindgen(js_name = bankBytes)]
    pub fn bank_bytes(&self) -> Result<Uint8Array, JsError> {
        let bank = self.bank()?;
        let bytes = bank.to_bytes().map_err(js_err)?;
        Ok(Uint8Array::from(bytes.as_slice()))
    }

    fn bank(&self) -> Result<&Bank, JsError> {
        self.bank
            .as_ref()
            .ok_or_else(|| JsError::new("no bank is loaded: open a bank file or fit one from normal recordings"))
    }

    /// Scores a mono clip (`samples` at `sampleRate` Hz; resampled to the model's rate inside). Returns
    /// `{score, threshold, isAnomaly, segmentThreshold, segments: [{startS, endS, peak}], frames, melBins, hopS,
    /// durationS, logmel, map: Float32Array [frames * melBins] (row-major, one row per frame), curve:
    /// Float32Array [frames], melHz: Float32Array [melBins]}`.
    #[wasm_bindgen(js_name = scoreClip)]
    pub fn score_clip(&self, samples: &[f32], sample_rate: u32) -> Result<JsValue, JsError> {
        let bank = self.bank()?;
        let r = crate::pipeline::score_clip(&self.model, bank, samples, sample_rate).map_err(js_err)?;
        clip_to_js(&r)
    }

    /// Share `share` of `shares` of a clip's windows (the page's pool of workers: worker `share` of `shares`
    /// scores the windows of whole batches dealt out in order; a share may be empty, with fewer batches than
    /// shares; the library's `pipeline::score_window_share`): `{total, from, to, windows, members, rows:
    /// Float32Array (each window's members' owned map rows, raw units, window by window and member by member),
    /// scores: Float32Array [windows * members * 2] (each part's clip score and largest owned patch score),
    /// lengths: Uint32Array [windows * members] (each part's number of rows values)}`; `scoreFromParts` merges
    /// the shares.
    #[wasm_bindgen(js_name = scoreWindowShare)]
    pub fn score_window_share(
        &self,
        samples: &[f32],
        sample_rate: u32,
        share: usize,
        shares: usize,
    ) -> Result<JsValue, JsError> {
        let (n, range, parts) =
            crate::pipeline::score_window_share(&self.model, self.bank()?, samples, sample_rate, share, shares)
                .map_err(js_err)?;
        let obj: Object = parts_to_js(&parts)?.unchecked_into();
        set(&obj, "total", &JsValue::from(n as u32));
        set(&obj, "from", &JsValue::from(range.start as u32));
        set(&obj, "to", &JsValue::from(range.end as u32));
        Ok(obj.into())
    }

    /// The result of a clip from the parts of all its windows, in window order (the fields of the answers of
    /// `scoreWindowShare` for every share, concatenated): the same as `scoreClip`'s, bit for bit.
    #[wasm_bindgen(js_name = scoreFromParts)]
    pub fn score_from_parts(
        &self,
        samples: &[f32],
        sample_rate: u32,
        rows: &[f32],
        scores: &[f32],
        lengths: &[u32],
    ) -> Result<JsValue, JsError> {
        let bank = self.bank()?;
        let members = bank.detectors.len();
        let total: usize = lengths.iter().map(|&l| l as usize).sum();
        if members == 0
            || !lengths.len().is_multiple_of(members)
            || scores.len() != 2 * lengths.len()
            || total != rows.len()
        {
            return Err(JsError::new(&format!(
                "invalid input: the parts do not add up: {} lengths for {members} members, {} scores, {} of {} rows \
                 values",
                lengths.len(),
                scores.len(),
                total,
                rows.len()
            )));
        }
        let mut at = 0;
        let flat: Vec<WindowPart> = lengths
            .iter()
            .zip(scores.chunks_exact(2))
            .map(|(&l, s)| {
                let p = WindowPart { rows: rows[at..at + l as usize].to_vec(), clip: s[0], max_owned: s[1] };
                at += l as usize;
                p
            })
            .collect();
        let parts: Vec<Vec<WindowPart>> = flat.chunks(members).map(|c| c.to_vec()).collect();
        let r =
            crate::pipeline::score_clip_from_parts(&self.model, bank, samples, sample_rate, &parts).map_err(js_err)?;
        clip_to_js(&r)
    }

    /// Segments of a temporal curve above `threshold` (the core's rule: frame `t` spans `[t hopS, (t+1) hopS)`,
    /// runs closer than 2 frames merge, ends clamped to `durationS` when given): `[{startS, endS, peak}]`.
    pub fn segments(
        &self,
        curve: &[f32],
        hop_s: f64,
        threshold: f32,
        duration_s: Option<f64>,
    ) -> Result<JsValue, JsError> {
        let d = duration_s.unwrap_or(f64::INFINITY);
        to_js(&js_segments(&crate::pipeline::segments_for(curve, hop_s, threshold, d)))
    }

    /// The thresholds and heatmap range that a clip threshold of `threshold` (the bank's units) gives with the
    /// loaded bank (the segment threshold moves with it as the command line's `--threshold` moves it):
    /// `{threshold, segmentThreshold, displayFloor, displayCeiling}`. The loaded bank is not changed.
    #[wasm_bindgen(js_name = thresholdsFor)]
    pub fn thresholds_for(&self, threshold: f32) -> Result<JsValue, JsError> {
        let mut bank = self.bank()?.clone();
        bank.override_threshold(threshold).map_err(js_err)?;
        let (display_floor, display_ceiling) = crate::pipeline::display_range(&bank, bank.meta.segment_threshold);
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct T {
            threshold: f32,
            segment_threshold: f32,
            display_floor: f32,
            display_ceiling: f32,
        }
        to_js(&T {
            threshold: bank.meta.threshold,
            segment_threshold: bank.meta.segment_threshold,
            display_floor,
            display_ceiling,
        })
    }

    /// Starts a live stream of mono audio at `sampleRate` Hz (the AudioContext's rate); replaces any stream.
    #[wasm_bindgen(js_name = streamStart)]
    pub fn stream_start(&mut self, sample_rate: u32) -> Result<(), JsError> {
        let bank = self.bank()?;
        let s = StreamScorer::new(&self.model, bank, sample_rate).map_err(js_err)?;
        self.stream = Some(s);
        Ok(())
    }

    /// Feeds samples to the live stream. Returns the stretches judged so far (often none): `[{startFrame,
    /// frames, melBins, hopS, windowScore, score, logmel, map, curve}]`; `score` is the clip score of the whole
    /// stream up to here.
    #[wasm_bindgen(js_name = streamPush)]
    pub fn stream_push(&mut self, samples: &[f32]) -> Result<JsValue, JsError> {
        let bank = self.bank.as_ref().ok_or_else(|| JsError::new("no bank is loaded"))?;
        let stream = self.stream.as_mut().ok_or_else(|| JsError::new("no live stream was started"))?;
        let u = stream.push(&self.model, bank, samples).map_err(js_err)?;
        updates_to_js(&u)
    }

    /// The log-mel of the live stream from frame `fromFrame` (counted from the stream's start) to the last frame
    /// received, to show the spectrogram before its windows are judged (the first needs `windowFrames +
    /// windowHop` frames): `{startFrame, frames, melBins, logmel: Float32Array [frames * melBins]}`. Frames more
    /// than about a window old are no longer held: `startFrame` is then later than `fromFrame`. The same values
    /// come again in the updates that judge them.
    #[wasm_bindgen(js_name = streamLogmel)]
    pub fn stream_logmel(&self, from_frame: usize) -> Result<JsValue, JsError> {
        let stream = self.stream.as_ref().ok_or_else(|| JsError::new("no live stream was started"))?;
        let m = self.model.logmel().config().n_mels;
        let (start, lm) = stream.recent_logmel(from_frame);
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct L {
            start_frame: usize,
            frames: usize,
            mel_bins: usize,
        }
        let obj: Object = to_js(&L { start_frame: start, frames: lm.len() / m, mel_bins: m })?.unchecked_into();
        set(&obj, "logmel", &f32s(lm));
        Ok(obj.into())
    }

    /// Ends the live stream: judges the audio still held. Returns the last updates, as `streamPush` does.
    #[wasm_bindgen(js_name = streamFinish)]
    pub fn stream_finish(&mut self) -> Result<JsValue, JsError> {
        let bank = self.bank.as_ref().ok_or_else(|| JsError::new("no bank is loaded"))?;
        let Some(mut stream) = self.stream.take() else {
            return updates_to_js(&[]);
        };
        match stream.finish(&self.model, bank) {
            Ok(u) => updates_to_js(&u),
            // A stream stopped before its first frame has nothing to judge.
            Err(crate::Error::Audio(_)) if stream.frames() == 0 => updates_to_js(&[]),
            Err(e) => Err(js_err(e)),
        }
    }

    /// Starts fitting a new bank; replaces any fit in progress. `preset` chooses the members: `machine`
    /// (PatchCore on log-mel patches), `environment` (PatchCore on the backbone's recommended layers) or `both`
    /// (fused); `layers` (comma-separated, members separated by `;`, e.g. `logmel;features.12,features.15`)
    /// overrides it when not empty. `detector` (one of the names of `DetectorConfig::KINDS`, default `patchcore`,
    /// with its default parameters) is fitted on every member. Throws for an unknown preset, layer or detector.
    #[wasm_bindgen(js_name = fitStart)]
    pub fn fit_start(
        &mut self,
        preset: Option<String>,
        layers: Option<String>,
        detector: Option<String>,
    ) -> Result<(), JsError> {
        let mut members = match layers.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
            Some(l) => l
                .split(';')
                .map(|m| EmbeddingConfig::default().with_layers(m).map(MemberConfig::patchcore))
                .collect::<crate::Result<Vec<_>>>()
                .map_err(js_err)?,
            None => FitPreset::parse(preset.as_deref().unwrap_or(DEFAULT_PRESET))
                .and_then(|p| p.members(self.model.spec()))
                .map_err(js_err)?,
        };
        if let Some(name) = detector.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
            let det = DetectorConfig::from_name(name, &DetectorOptions::default()).map_err(js_err)?;
            members.iter_mut().for_each(|m| m.detector = det.clone());
        }
        let config = FitConfig::with_members(members);
        let mut model = self.model.try_clone().map_err(js_err)?;
        model.set_embeddings(config.embeddings()).map_err(js_err)?;
        self.fitter = Some((Fitter::new(&model, config).map_err(js_err)?, model));
        Ok(())
    }

    /// Adds one clip of normal sound (mono `samples` at `sampleRate` Hz) to the fit in progress.
    #[wasm_bindgen(js_name = fitAdd)]
    pub fn fit_add(&mut self, samples: &[f32], sample_rate: u32) -> Result<(), JsError> {
        let (fitter, model) = self.fitter.as_mut().ok_or_else(|| JsError::new("no fit was started"))?;
        fitter.add_clip(model, samples, sample_rate).map_err(js_err)
    }

    /// Analyses one clip of normal sound (mono `samples` at `sampleRate` Hz) for the fit started on this engine,
    /// without adding it: the clip's patches as bytes, for `fitAddAnalysed` on the engine that fits (the page's
    /// pool of workers analyses clips in parallel this way; the bank is the one `fitAdd` of every clip gives, bit
    /// for bit). Throws as `fitAdd`.
    #[wasm_bindgen(js_name = fitAnalyse)]
    pub fn fit_analyse(&self, samples: &[f32], sample_rate: u32) -> Result<Uint8Array, JsError> {
        let (_, model) = self.fitter.as_ref().ok_or_else(|| JsError::new("no fit was started"))?;
        let clip = Fitter::analyse_clip(model, samples, sample_rate).map_err(js_err)?;
        let bytes = clip.to_bytes().map_err(js_err)?;
        Ok(Uint8Array::from(bytes.as_slice()))
    }

    /// Adds a clip analysed by `fitAnalyse` (on this engine or another with the same model and fit settings) to
    /// the fit in progress. Throws for bytes that are not such a clip, or a clip analysed for other settings.
    #[wasm_bindgen(js_name = fitAddAnalysed)]
    pub fn fit_add_analysed(&mut self, bytes: &[u8]) -> Result<(), JsError> {
        let (fitter, _) = self.fitter.as_mut().ok_or_else(|| JsError::new("no fit was started"))?;
        let clip = crate::pipeline::AnalysedClip::from_bytes(bytes).map_err(js_err)?;
        fitter.add_analysed(clip).map_err(js_err)
    }

    /// Finishes the fit: calibrates the threshold, fits the detector, and makes the new bank the one in use.
    /// Returns its info (as `loadBank` does). `on_progress` (optional) is called after each fitting step as
    /// `(stage, done, total)` (`stage`: `"fitting"` or `"calibrating"`; a trained detector such as CFA is trained
    /// once per calibration fold and once on every clip); it runs inside this call, so a worker can post it on.
    #[wasm_bindgen(js_name = fitFinish)]
    pub fn fit_finish(&mut self, on_progress: Option<js_sys::Function>) -> Result<JsValue, JsError> {
        let (fitter, model) = self.fitter.take().ok_or_else(|| JsError::new("no fit was started"))?;
        let bank = fitter
            .finish(&model, &mut |p| {
                if let Some(f) = &on_progress {
                    let _ = f.call3(
                        &JsValue::NULL,
                        &JsValue::from_str(p.stage),
                        &JsValue::from(p.done as u32),
                        &JsValue::from(p.total as u32),
                    );
                }
                true
            })
            .map_err(js_err)?;
        self.use_bank(bank)
    }

    /// Drops the fit in progress.
    #[wasm_bindgen(js_name = fitCancel)]
    pub fn fit_cancel(&mut self) {
        self.fitter = None;
    }
}

/// The backbone alone, for speed measurements (`benches/web`; the page does not use it): the ONNX optimised once
/// for input `[1, 1, frames, mel_bins]` and run on a log-mel.
#[wasm_bindgen]
pub struct BackboneRunner {
    backbone: Backbone,
}

#[wasm_bindgen]
impl BackboneRunner {
    /// `onnx`: the model's bytes; `spec_json`: its `spec.json`; `outputs`: output names separated by commas
    /// (e.g. `"conv_block2,conv_block3,conv_block4"`); `frames`: input frames (a whole clip, or the spec's
    /// window); `runtime` (optional): `"auto"` (the default: the direct CNN14 path when the graph allows it, as
    /// the pipeline runs) or `"tract"`. Throws for an unreadable model or spec, an unknown output or runtime, or zero frames.
    #[wasm_bindgen(constructor)]
    pub fn new(
        onnx: &[u8],
        spec_json: &str,
        outputs: &str,
        frames: usize,
        runtime: Option<String>,
    ) -> Result<BackboneRunner, JsError> {
        let spec = BackboneSpec::from_json(spec_json).map_err(js_err)?;
        let outputs: Vec<String> = outputs.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        let runtime = match runtime.as_deref().unwrap_or("auto") {
            "auto" => Runtime::Auto,
            "tract" => Runtime::Tract,
            other => return Err(JsError::new(&format!("unknown runtime '{other}' (use 'auto' or 'tract')"))),
        };
        let backbone = Backbone::with_frames(onnx, spec, &outputs, frames, runtime).map_err(js_err)?;
        Ok(BackboneRunner { backbone })
    }

    /// Runs several inputs at once, as the pipeline runs batches of windows: `inputs` holds them one after the
    /// other, `[frames, mel_bins]` each. Returns every input's outputs, in input order, concatenated as
    /// [`BackboneRunner::run`] returns them. Throws if the length is not a whole number of inputs.
    #[wasm_bindgen(js_name = runBatch)]
    pub fn run_batch(&self, inputs: &[f32]) -> Result<Float32Array, JsError> {
        let size = self.backbone.spec().window_frames * self.backbone.spec().front_end_config().n_mels;
        if inputs.is_empty() || !inputs.len().is_multiple_of(size) {
            return Err(JsError::new(&format!(
                "runBatch needs a whole number of inputs of {size} values, got {} values",
                inputs.len()
            )));
        }
        let windows: Vec<&[f32]> = inputs.chunks_exact(size).collect();
        let all: Vec<f32> = self
            .backbone
            .run_batch(&windows)
            .map_err(js_err)?
            .into_iter()
            .flat_map(|maps| maps.into_iter().flat_map(|m| m.data))
            .collect();
        Ok(Float32Array::from(all.as_slice()))
    }

    /// `"cnn14-winograd"` or `"tract"`: which code runs the network.
    #[wasm_bindgen(getter)]
    pub fn runtime(&self) -> String {
        self.backbone.runtime_name().to_string()
    }

    /// Runs the network once on `logmel` `[frames, mel_bins]` (row-major) and returns the outputs, concatenated in
    /// the order named, each `[C, T_l, F_l]` flattened. Throws if `logmel` has the wrong length.
    pub fn run(&self, logmel: &[f32]) -> Result<Float32Array, JsError> {
        let maps = self.backbone.run(logmel).map_err(js_err)?;
        let len = maps.iter().map(|m| m.data.len()).sum::<usize>();
        let mut all = Vec::with_capacity(len);
        for m in &maps {
            all.extend_from_slice(&m.data);
        }
        Ok(Float32Array::from(all.as_slice()))
    }
}

// ------------------------------------------------------------------------------------------------------------
// Reading audio files: the core's decoder (symphonia) in the page
// ------------------------------------------------------------------------------------------------------------

/// Most frames of the log-mel, map and curve a streamed (long) file returns for display: longer results are
/// pooled over time (the map and curve keep their maxima, the log-mel its means).
pub const MAX_OVERVIEW_FRAMES: usize = 8192;

/// Bytes read from a `Blob` at a time.
const BLOB_SLICE: u64 = 1 << 20;

/// A `Blob` (the user's `File`) as a seekable byte source for the decoder: read one slice at a time with
/// `Blob.slice` and `FileReaderSync` (available in workers only), so the file is never held whole.
struct BlobSource {
    blob: web_sys::Blob,
    reader: web_sys::FileReaderSync,
    len: u64,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

// The wasm32 build has one thread (no `atomics`): the JavaScript objects inside never cross threads. symphonia's
// `MediaSource` asks for `Send + Sync`.
#[cfg(not(target_feature = "atomics"))]
unsafe impl Send for BlobSource {}
#[cfg(not(target_feature = "atomics"))]
unsafe impl Sync for BlobSource {}

impl BlobSource {
    fn new(blob: web_sys::Blob) -> Result<BlobSource, JsValue> {
        let reader = web_sys::FileReaderSync::new().map_err(|_| {
            js_sys::Error::new("reading a file in slices needs a worker (FileReaderSync is only available there)")
        })?;
        let len = blob.size() as u64;
        Ok(BlobSource { blob, reader, len, pos: 0, buf: Vec::new(), buf_start: 0 })
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let end = (self.pos + BLOB_SLICE).min(self.len);
        let fail = |what: &str, e: JsValue| {
            let why = e.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())).unwrap_or_default();
            std::io::Error::other(format!("{what} failed ({why}): was the file moved, changed or deleted?"))
        };
        let slice = self.blob.slice_with_f64_and_f64(self.pos as f64, end as f64).map_err(|e| fail("Blob.slice", e))?;
        let ab = self.reader.read_as_array_buffer(&slice).map_err(|e| fail("reading the file", e))?;
        self.buf = Uint8Array::new(&ab).to_vec();
        self.buf_start = self.pos;
        Ok(())
    }
}

impl std::io::Read for BlobSource {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if out.is_empty() || self.pos >= self.len {
            return Ok(0);
        }
        let in_buf = self.pos >= self.buf_start && self.pos < self.buf_start + self.buf.len() as u64;
        if !in_buf {
            self.fill()?;
        }
        let at = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - at);
        out[..n].copy_from_slice(&self.buf[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for BlobSource {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let p = match to {
            std::io::SeekFrom::Start(p) => Some(p),
            std::io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = p.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

impl MediaSource for BlobSource {
    fn is_seekable(&self) -> bool {
        true
    }
    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

/// A JavaScript `Error` with the core's message; named `UnsupportedFormat` when the format or codec is one this
/// decoder does not read (the page then lets the browser decode the file).
fn decode_err(e: crate::Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    if is_unsupported_format(&e) {
        err.set_name("UnsupportedFormat");
    }
    err.into()
}

fn channel_select(channel: Option<i32>) -> Result<ChannelSelect, JsValue> {
    match channel {
        None => Ok(ChannelSelect::Mix),
        Some(c) if c < 0 => Ok(ChannelSelect::Mix),
        Some(c) => Ok(ChannelSelect::Channel(c as usize)),
    }
}

/// Extension of a file name, as a hint for the decoder.
fn extension(name: &str) -> Option<&str> {
    name.rsplit_once('.').map(|(_, e)| e).filter(|e| !e.is_empty() && e.len() <= 5)
}

/// What the page shows about a file being read.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsAudioInfo {
    name: String,
    source_rate: u32,
    channels: usize,
    target_rate: u32,
    duration_s: Option<f64>,
    decoded_s: f64,
    links: Vec<JsLink>,
    warnings: Vec<String>,
    decoder: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsLink {
    sample_rate: u32,
    channels: usize,
    codec: &'static str,
    frames: u64,
    announced_frames: Option<u64>,
}

/// An audio file being decoded by the core (symphonia, the same code as the command line): mono samples at the
/// file's own rate (every link of a chained stream; later links in another format resampled to the first
/// link's rate), chunk by chunk.
#[wasm_bindgen]
pub struct AudioReader {
    stream: MonoStream,
}

#[wasm_bindgen]
impl AudioReader {
    /// Opens a `Blob` or `File`, read in slices (worker only: it uses `FileReaderSync`). `name` names the file in
    /// messages; `channel` is a 0-based channel to take, or `undefined` / -1 to mix all channels. Throws an
    /// `Error` named `UnsupportedFormat` for a format or codec this decoder does not read (AAC/M4A, Opus, WebM:
    /// let the browser try), and a plain `Error` for a damaged file.
    #[wasm_bindgen(js_name = fromBlob)]
    pub fn from_blob(blob: web_sys::Blob, name: &str, channel: Option<i32>) -> Result<AudioReader, JsValue> {
        let source = BlobSource::new(blob)?;
        let stream = MonoStream::from_source(
            Box::new(source),
            name,
            extension(name),
            channel_select(channel)?,
            TargetRate::FileRate,
        )
        .map_err(decode_err)?;
        Ok(AudioReader { stream })
    }

    /// Opens a file held in memory (bytes), as [`AudioReader::from_blob`] does.
    #[wasm_bindgen(js_name = fromBytes)]
    pub fn from_bytes(bytes: Vec<u8>, name: &str, channel: Option<i32>) -> Result<AudioReader, JsValue> {
        let stream =
            MonoStream::from_bytes(bytes, name, extension(name), channel_select(channel)?, TargetRate::FileRate)
                .map_err(decode_err)?;
        Ok(AudioReader { stream })
    }

    /// `{name, sourceRate, channels, targetRate, durationS (from the header, or undefined), decodedS, links:
    /// [{sampleRate, channels, codec, frames, announcedFrames}], warnings: [string], decoder: "sonomaly"}`;
    /// the warnings are complete once the file has been read to its end.
    pub fn info(&self) -> Result<JsValue, JsError> {
        let s = &self.stream;
        to_js(&JsAudioInfo {
            name: s.name().to_string(),
            source_rate: s.source_sample_rate(),
            channels: s.source_channels(),
            target_rate: s.target_sample_rate(),
            duration_s: s.duration_s(),
            decoded_s: s.decoded_s(),
            links: s
                .links()
                .iter()
                .map(|l| JsLink {
                    sample_rate: l.sample_rate,
                    channels: l.channels,
                    codec: l.codec,
                    frames: l.frames,
                    announced_frames: l.announced_frames,
                })
                .collect(),
            warnings: s.warnings(),
            decoder: "sonomaly",
        })
    }

    /// Sample rate of the samples returned, Hz.
    #[wasm_bindgen(getter, js_name = sampleRate)]
    pub fn sample_rate(&self) -> u32 {
        self.stream.target_sample_rate()
    }

    /// The next chunk of mono samples (`Float32Array`, about 16384 samples), or `undefined` at the end.
    #[wasm_bindgen(js_name = next)]
    pub fn next_chunk(&mut self) -> Result<Option<Float32Array>, JsValue> {
        Ok(self.stream.next_chunk().map_err(decode_err)?.map(|c| Float32Array::from(c.as_slice())))
    }

    /// The rest of the file as one `Float32Array`, or `undefined` if more than `maxSeconds` (if given) would be
    /// decoded: the file is then left part-read (open a new reader to stream it with `Engine.scoreReader`).
    #[wasm_bindgen(js_name = readAll)]
    pub fn read_all(&mut self, max_seconds: Option<f64>) -> Result<Option<Float32Array>, JsValue> {
        let limit = max_seconds.map(|s| (s.max(0.0) * self.stream.target_sample_rate() as f64) as usize);
        let mut all = Vec::new();
        while let Some(c) = self.stream.next_chunk().map_err(decode_err)? {
            all.extend_from_slice(&c);
            if limit.is_some_and(|l| all.len() > l) {
                return Ok(None);
            }
        }
        Ok(Some(Float32Array::from(all.as_slice())))
    }
}

/// Display arrays of a long streamed result, pooled over time by `k` frames so that at most
/// [`MAX_OVERVIEW_FRAMES`] remain (the log-mel by the mean, the map and the curve by the maximum); `k` doubles
/// as the stream grows, so memory stays bounded.
struct Overview {
    mel: usize,
    k: usize,
    logmel: Vec<f32>,
    map: Vec<f32>,
    curve: Vec<f32>,
    /// The bin being filled: frames in it, log-mel sums, map and curve maxima.
    n: usize,
    acc_logmel: Vec<f32>,
    acc_map: Vec<f32>,
    acc_curve: f32,
}

impl Overview {
    fn new(mel: usize) -> Overview {
        Overview {
            mel,
            k: 1,
            logmel: Vec::new(),
            map: Vec::new(),
            curve: Vec::new(),
            n: 0,
            acc_logmel: vec![0.0; mel],
            acc_map: vec![f32::NEG_INFINITY; mel],
            acc_curve: f32::NEG_INFINITY,
        }
    }

    fn frames(&self) -> usize {
        self.curve.len()
    }

    /// Adds `[n, mel]` log-mel and map rows and `[n]` curve values.
    fn push(&mut self, logmel: &[f32], map: &[f32], curve: &[f32]) {
        let m = self.mel;
        for (t, &c) in curve.iter().enumerate() {
            for j in 0..m {
                self.acc_logmel[j] += logmel[t * m + j];
                self.acc_map[j] = self.acc_map[j].max(map[t * m + j]);
            }
            self.acc_curve = self.acc_curve.max(c);
            self.n += 1;
            if self.n == self.k {
                self.flush();
                if self.frames() > MAX_OVERVIEW_FRAMES {
                    self.halve();
                }
            }
        }
    }

    /// Closes the bin being filled (a partial one at the end of the stream).
    fn flush(&mut self) {
        if self.n == 0 {
            return;
        }
        let inv = 1.0 / self.n as f32;
        self.logmel.extend(self.acc_logmel.iter().map(|v| v * inv));
        self.map.extend_from_slice(&self.acc_map);
        self.curve.push(self.acc_curve);
        self.n = 0;
        self.acc_logmel.iter_mut().for_each(|v| *v = 0.0);
        self.acc_map.iter_mut().for_each(|v| *v = f32::NEG_INFINITY);
        self.acc_curve = f32::NEG_INFINITY;
    }

    /// Merges pairs of bins (`k` doubles); an odd last bin becomes the bin being filled.
    fn halve(&mut self) {
        let m = self.mel;
        let pairs = self.frames() / 2;
        for p in 0..pairs {
            let (a, b) = (2 * p, 2 * p + 1);
            for j in 0..m {
                self.logmel[p * m + j] = 0.5 * (self.logmel[a * m + j] + self.logmel[b * m + j]);
                self.map[p * m + j] = self.map[a * m + j].max(self.map[b * m + j]);
            }
            self.curve[p] = self.curve[a].max(self.curve[b]);
        }
        if self.frames() % 2 == 1 {
            let last = self.frames() - 1;
            for j in 0..m {
                self.acc_logmel[j] = self.logmel[last * m + j] * self.k as f32;
                self.acc_map[j] = self.map[last * m + j];
            }
            self.acc_curve = self.curve[last];
            self.n = self.k;
        }
        self.logmel.truncate(pairs * m);
        self.map.truncate(pairs * m);
        self.curve.truncate(pairs);
        self.k *= 2;
    }
}

#[wasm_bindgen]
impl Engine {
    /// Scores a whole file from `reader`, as `sonomaly score` does: a file up to 10 minutes (by its header) is
    /// decoded whole and scored like `scoreClip` (the result also holds its `samples` and `sampleRate`, to play
    /// it); a longer one, or one without a duration that turns out longer, is scored as a stream with bounded
    /// memory (`streamed: true`, no samples, the display arrays pooled over time: `frames` and `hopS` describe
    /// them, `decimation` frames per column; the score and the segments are computed at full resolution, and
    /// `fullCurve` [frames at the model's hop] with `fullHopS` is that curve, for the segments of another
    /// threshold).
    /// `onProgress(decodedS, durationS)` is called as the file is read. The result also has `warnings` (the
    /// decoder's: a file shorter than its header says, repaired headers) and `links`.
    #[wasm_bindgen(js_name = scoreReader)]
    pub fn score_reader(
        &self,
        reader: &mut AudioReader,
        on_progress: Option<js_sys::Function>,
    ) -> Result<JsValue, JsValue> {
        let bank = self.bank().map_err(JsValue::from)?;
        let stream = &mut reader.stream;
        let rate = stream.target_sample_rate();
        let total = stream.duration_s();
        let mut progress = |s: &MonoStream| {
            if let Some(f) = &on_progress {
                let _ = f.call2(
                    &JsValue::NULL,
                    &JsValue::from(s.decoded_s()),
                    &total.map_or(JsValue::UNDEFINED, JsValue::from),
                );
            }
        };
        let mut ov = Overview::new(self.model.logmel().config().n_mels);
        let recording = crate::pipeline::score_recording(
            &self.model,
            bank,
            stream,
            &mut |u| ov.push(&u.logmel, &u.map, &u.curve),
            &mut progress,
        )
        .map_err(decode_err)?;
        let info = reader.info().map_err(JsValue::from)?;
        let result: JsValue = match recording {
            Recording::Whole { result: r, samples } => {
                let obj = clip_to_js(&r).map_err(JsValue::from)?;
                set(obj.unchecked_ref(), "samples", &f32s(&samples));
                set(obj.unchecked_ref(), "sampleRate", &JsValue::from(rate));
                set(obj.unchecked_ref(), "streamed", &JsValue::FALSE);
                obj
            }
            Recording::Streamed { verdict: v, curve } => {
                ov.flush();
                let hop_s = self.model.hop_s();
                let obj: Object = to_js(&JsClip {
                    score: v.score,
                    threshold: v.threshold,
                    is_anomaly: v.is_anomaly,
                    segment_threshold: v.segment_threshold,
                    segments: js_segments(&v.segments),
                    members: v
                        .members
                        .iter()
                        .map(|m| JsMember { name: m.name.clone(), score: m.score, raw: m.raw })
                        .collect(),
                    units: v.units.to_string(),
                    display_floor: v.display_floor,
                    display_ceiling: v.display_ceiling,
                    level_distance: v.level_distance,
                    out_of_distribution: v.out_of_distribution,
                    band_limit_hz: v.band_limit_hz,
                    frames: ov.frames(),
                    mel_bins: ov.mel,
                    hop_s: hop_s * ov.k as f64,
                    duration_s: v.duration_s,
                })
                .map_err(JsValue::from)?
                .unchecked_into();
                set(&obj, "logmel", &f32s(&ov.logmel));
                set(&obj, "map", &f32s(&ov.map));
                set(&obj, "curve", &f32s(&ov.curve));
                set(&obj, "fullCurve", &f32s(&curve));
                set(&obj, "fullHopS", &JsValue::from(hop_s));
                set(&obj, "melHz", &f32s(&self.model.logmel().mel_frequencies_hz()));
                set(&obj, "streamed", &JsValue::TRUE);
                set(&obj, "decimation", &JsValue::from(ov.k as u32));
                set(&obj, "sampleRate", &JsValue::from(rate));
                obj.into()
            }
        };
        let info: Object = info.unchecked_into();
        let result_obj: &Object = result.unchecked_ref();
        for key in ["warnings", "links", "decoder", "channels", "sourceRate"] {
            set(result_obj, key, &Reflect::get(&info, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED));
        }
        Ok(result)
    }
}
