//! The JavaScript face of sonomaly (wasm32 only): the one `#[wasm_bindgen]` file.
//!
//! One class, [`Engine`], holds a model (front end + backbone), at most one bank, at most one live stream and
//! at most one fit in progress. The page's worker (`www/worker.js`) owns one engine; nothing here touches the
//! DOM. Results are plain objects with camelCase fields; the big arrays (log-mel, map, curve, mel frequencies)
//! are `Float32Array`s, copied once out of wasm memory. Errors are JavaScript `Error`s whose message is the
//! core's plain sentence; panics print their message to the console (`console_error_panic_hook`).

use js_sys::{Array, Float32Array, Object, Reflect, Uint8Array};
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::backbone::{Backbone, BackboneSpec, Runtime};
use crate::bank::{front_end_summary, Bank};
use crate::embedding::EmbeddingConfig;
use crate::pipeline::{
    ClipResult, FitConfig, FitPreset, Fitter, MemberConfig, Model, Segment, StreamScorer, StreamUpdate, DEFAULT_PRESET,
};
use crate::spectrogram::LogMel;

/// Installs the panic hook so that a Rust panic shows its message in the browser console.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// True if this build uses WebAssembly SIMD (`+simd128`), as `./build.sh` builds it.
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
    /// hopS, windowFrames, windowHop, windowS, minSeconds, melHz: Float32Array}` (`windowFrames`, `windowHop`:
    /// the analysis windows' length and the frames between their starts; a fit on one clip needs two windows,
    /// `(windowFrames + windowHop) * hopS` seconds, and a live stream judges its first window once that much
    /// has arrived).
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
        })?
        .unchecked_into();
        set(&obj, "melHz", &f32s(&self.model.logmel().mel_frequencies_hz()));
        Ok(obj.into())
    }

    /// Loads a bank file and makes it the one used for scoring. A bank fitted with another backbone or front end
    /// is refused (the current bank stays). Returns the bank's info: `{detector, backbone, backboneSha256,
    /// frontEnd, layers, memoryBank, clips, seconds, threshold, segmentThreshold, created, bandLimitHz}`
    /// (`bandLimitHz`: highest frequency judged, or `null` for every band).
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
    /// overrides it when not empty. Throws for an unknown preset or layer.
    #[wasm_bindgen(js_name = fitStart)]
    pub fn fit_start(&mut self, preset: Option<String>, layers: Option<String>) -> Result<(), JsError> {
        let members = match layers.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
            Some(l) => l
                .split(';')
                .map(|m| EmbeddingConfig::default().with_layers(m).map(MemberConfig::patchcore))
                .collect::<crate::Result<Vec<_>>>()
                .map_err(js_err)?,
            None => FitPreset::parse(preset.as_deref().unwrap_or(DEFAULT_PRESET))
                .and_then(|p| p.members(self.model.spec()))
                .map_err(js_err)?,
        };
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

    /// Finishes the fit: calibrates the threshold, fits the detector, and makes the new bank the one in use.
    /// Returns its info (as `loadBank` does).
    #[wasm_bindgen(js_name = fitFinish)]
    pub fn fit_finish(&mut self) -> Result<JsValue, JsError> {
        let (fitter, model) = self.fitter.take().ok_or_else(|| JsError::new("no fit was started"))?;
        let bank = fitter.finish(&model, &mut |_| true).map_err(js_err)?;
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
        if inputs.is_empty() || inputs.len() % size != 0 {
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
