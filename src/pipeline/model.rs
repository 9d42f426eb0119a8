//! [`Model`]: the front end and the backbone, planned for the layers a set of patch embeddings needs.

use std::sync::Arc;

use crate::backbone::{Backbone, BackboneIdentity, BackboneSpec};
use crate::bank::Bank;
use crate::embedding::EmbeddingConfig;
use crate::error::{Error, Result};
use crate::spectrogram::{LogCompression, LogMel, LogMelConfig, Spectrogram};

use super::MAX_ABS_SAMPLE;

/// The aisfx CNN14 conv_block1..4 backbone (native builds), `models/aisfx-cnn14/`: the default of format
/// version 1 banks.
#[cfg(not(target_arch = "wasm32"))]
pub const AISFX_ONNX: &[u8] = include_bytes!("../../models/aisfx-cnn14/model.onnx");
/// The aisfx backbone's spec JSON.
pub const AISFX_SPEC: &str = include_str!("../../models/aisfx-cnn14/spec.json");
/// The EfficientAT mn04_as backbone (native builds), `models/efficientat-mn04/`: the default.
#[cfg(not(target_arch = "wasm32"))]
pub const EFFICIENTAT_ONNX: &[u8] = include_bytes!("../../models/efficientat-mn04/model.onnx");
/// The EfficientAT backbone's spec JSON.
pub const EFFICIENTAT_SPEC: &str = include_str!("../../models/efficientat-mn04/spec.json");
/// The embedded default backbone (native builds): EfficientAT mn04_as.
#[cfg(not(target_arch = "wasm32"))]
pub const DEFAULT_ONNX: &[u8] = EFFICIENTAT_ONNX;
/// The embedded default backbone's spec JSON.
pub const DEFAULT_SPEC: &str = EFFICIENTAT_SPEC;

/// A front end and a backbone, with the patch embeddings of the members it currently serves.
///
/// The backbone is optimised for the union of the layers those embeddings need (tract prunes the rest), so one
/// run per window feeds every member. [`Model::set_embeddings`] re-plans it when the layers change; plans for up
/// to two layer sets are kept, so switching between a bank and a fit in progress does not re-optimise.
pub struct Model {
    onnx: Arc<Vec<u8>>,
    pub(super) spec: BackboneSpec,
    identity: BackboneIdentity,
    pub(super) logmel: LogMel,
    pub(super) embeddings: Vec<EmbeddingConfig>,
    plans: Vec<(Vec<String>, Arc<Backbone>)>,
    pub(super) pad_value: f32,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("spec", &self.spec.name).field("embeddings", &self.embeddings).finish()
    }
}

/// Log-compressed value of zero power, used to pad windows.
fn silence_value(c: &LogMelConfig) -> f32 {
    match c.log {
        LogCompression::Log1p { .. } => 0.0,
        LogCompression::Ln { .. } => c.log.of_zero_power(),
        LogCompression::Db { amin, reference, .. } => 10.0 * amin.log10() - 10.0 * amin.max(reference).log10(),
    }
}

/// The backbone outputs a set of embeddings needs, each once, in the spec's order.
fn layers_of(spec: &BackboneSpec, embeddings: &[EmbeddingConfig]) -> Vec<String> {
    spec.outputs
        .iter()
        .map(|o| o.name.clone())
        .filter(|n| embeddings.iter().any(|e| e.backbone_layers().contains(n)))
        .collect()
}

impl Model {
    /// Loads a backbone (`onnx` bytes + spec JSON) serving one member with the default embedding.
    ///
    /// # Errors
    /// [`Error::Model`] for an unreadable model or spec.
    pub fn from_bytes(onnx: &[u8], spec_json: &str) -> Result<Model> {
        Self::with_embedding(onnx, spec_json, EmbeddingConfig::default())
    }

    /// Loads a backbone serving one member with `embedding`.
    ///
    /// # Errors
    /// [`Error::Model`] for an unreadable model or spec; [`Error::InvalidInput`] for an embedding that does not
    /// fit the backbone.
    pub fn with_embedding(onnx: &[u8], spec_json: &str, embedding: EmbeddingConfig) -> Result<Model> {
        Self::with_embeddings(onnx, spec_json, vec![embedding])
    }

    /// Loads a backbone serving one member per embedding.
    ///
    /// # Errors
    /// As [`Model::with_embedding`]; [`Error::InvalidInput`] for an empty list.
    pub fn with_embeddings(onnx: &[u8], spec_json: &str, embeddings: Vec<EmbeddingConfig>) -> Result<Model> {
        let spec = BackboneSpec::from_json(spec_json)?;
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
            embeddings: Vec::new(),
            plans: Vec::new(),
            pad_value,
        };
        model.set_embeddings(embeddings)?;
        Ok(model)
    }

    /// The embedded default model (EfficientAT mn04_as) with the default embedding.
    ///
    /// # Errors
    /// [`Error::Model`] if the embedded model fails to load (a build problem).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn embedded_default() -> Result<Model> {
        Self::from_bytes(DEFAULT_ONNX, DEFAULT_SPEC)
    }

    /// The embedded aisfx CNN14 model with the default embedding.
    ///
    /// # Errors
    /// As [`Model::embedded_default`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn embedded_aisfx() -> Result<Model> {
        Self::from_bytes(AISFX_ONNX, AISFX_SPEC)
    }

    /// The embedded model a bank was fitted with (matched by the SHA-256 of its ONNX), if it is one of them.
    ///
    /// # Errors
    /// As [`Model::embedded_default`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn embedded_for(backbone: &BackboneIdentity) -> Option<Result<Model>> {
        [(EFFICIENTAT_ONNX, EFFICIENTAT_SPEC), (AISFX_ONNX, AISFX_SPEC)]
            .into_iter()
            .find(|(onnx, _)| crate::backbone::sha256_hex(onnx) == backbone.sha256)
            .map(|(onnx, spec)| Self::from_bytes(onnx, spec))
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

    /// A second model with the same backbone and front end, sharing the backbone plans already made (so that a
    /// fit can plan its own embeddings while the first model keeps scoring with a bank).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the front end cannot be rebuilt (never for a model that loaded).
    pub fn try_clone(&self) -> Result<Model> {
        Ok(Model {
            onnx: Arc::clone(&self.onnx),
            spec: self.spec.clone(),
            identity: self.identity.clone(),
            logmel: LogMel::new(self.logmel.config().clone())?,
            embeddings: self.embeddings.clone(),
            plans: self.plans.clone(),
            pad_value: self.pad_value,
        })
    }

    /// Serves one member per embedding from now on, planning the backbone for their layers if no kept plan has
    /// exactly those layers.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for no embedding or one that does not fit this backbone; [`Error::Model`] if the
    /// backbone cannot be planned.
    pub fn set_embeddings(&mut self, embeddings: Vec<EmbeddingConfig>) -> Result<()> {
        if embeddings.is_empty() {
            return Err(Error::invalid("no patch embedding given: a bank needs at least one member"));
        }
        for e in &embeddings {
            e.validate(&self.spec)?;
        }
        let layers = layers_of(&self.spec, &embeddings);
        if !layers.is_empty() && !self.plans.iter().any(|(l, _)| *l == layers) {
            let b = Backbone::from_bytes(&self.onnx, self.spec.clone(), &layers)?;
            if self.plans.len() >= 2 {
                self.plans.remove(0);
            }
            self.plans.push((layers, Arc::new(b)));
        }
        self.embeddings = embeddings;
        Ok(())
    }

    /// Serves one member with `embedding` (see [`Model::set_embeddings`]).
    ///
    /// # Errors
    /// As [`Model::set_embeddings`].
    pub fn set_embedding(&mut self, embedding: EmbeddingConfig) -> Result<()> {
        self.set_embeddings(vec![embedding])
    }

    /// The backbone planned for the current embeddings' layers (`None` when they need none).
    pub(super) fn backbone(&self) -> Option<&Backbone> {
        let layers = layers_of(&self.spec, &self.embeddings);
        if layers.is_empty() {
            return None;
        }
        self.plans.iter().find(|(l, _)| *l == layers).map(|(_, b)| b.as_ref())
    }

    /// Sets aisfx-style peak normalisation of each clip (or stream window) before the front end.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the front end cannot be rebuilt (never for a valid spec).
    pub fn set_peak_normalize(&mut self, on: bool) -> Result<()> {
        let mut c = self.logmel.config().clone();
        c.peak_normalize = on;
        self.logmel = LogMel::new(c)?;
        Ok(())
    }

    /// Makes this model score with `bank`: checks the backbone and front end, then adopts the bank's member
    /// embeddings and peak normalisation.
    ///
    /// # Errors
    /// [`Error::Bank`] if the bank was fitted with another backbone or front end (naming both), or its patches do
    /// not have the dimension its embeddings give.
    pub fn prepare_for(&mut self, bank: &Bank) -> Result<()> {
        let mut front = self.logmel.config().clone();
        front.peak_normalize = bank.meta.front_end.peak_normalize;
        bank.check_compatible(&self.identity, &front)?;
        if self.logmel.config().peak_normalize != front.peak_normalize {
            self.logmel = LogMel::new(front)?;
        }
        let embeddings = bank.embeddings();
        for (m, e) in bank.meta.members.iter().zip(&embeddings) {
            e.validate(&self.spec).map_err(|err| Error::bank(format!("member '{}': {err}", m.name)))?;
            if e.dims(&self.spec) != m.dims {
                return Err(Error::bank(format!(
                    "member '{}' has {}-dimensional patches but its embedding gives {}",
                    m.name,
                    m.dims,
                    e.dims(&self.spec)
                )));
            }
        }
        if self.embeddings != embeddings {
            self.set_embeddings(embeddings)?;
        }
        Ok(())
    }

    /// Errors unless [`Model::prepare_for`] was called with `bank` (or an identical one).
    pub(super) fn check_ready(&self, bank: &Bank) -> Result<()> {
        if self.embeddings != bank.embeddings()
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
    /// The embeddings of the members served, in order.
    pub fn embeddings(&self) -> &[EmbeddingConfig] {
        &self.embeddings
    }
    /// The first member's embedding.
    pub fn embedding(&self) -> &EmbeddingConfig {
        &self.embeddings[0]
    }
    /// The front end's sample rate, Hz.
    pub fn sample_rate(&self) -> u32 {
        self.logmel.config().sample_rate
    }
    /// Seconds per frame.
    pub fn hop_s(&self) -> f64 {
        self.logmel.config().hop_seconds()
    }
    /// Fewest frames a clip must give to be scored or fitted on: [`super::MIN_SECONDS`] and at least
    /// [`super::MIN_FRAMES`].
    pub fn min_frames(&self) -> usize {
        ((super::MIN_SECONDS / self.hop_s()).ceil() as usize).max(super::MIN_FRAMES)
    }

    /// The log-compressed value of silence (zero power) in this front end.
    pub fn silence_value(&self) -> f32 {
        self.pad_value
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

    /// Mel bins (from the lowest up) whose centre lies at or below `band_limit_hz`; at least one.
    pub fn valid_bins(&self, band_limit_hz: f32) -> usize {
        self.logmel.mel_frequencies_hz().iter().take_while(|&&hz| hz <= band_limit_hz).count().max(1)
    }

    /// Patch-grid columns of a grid with stride `stride` (from the lowest frequency up) whose lowest mel band lies
    /// at or below `band_limit_hz`; at least one.
    pub fn valid_columns(&self, band_limit_hz: f32, stride: usize) -> usize {
        let hz = self.logmel.mel_frequencies_hz();
        let gf = hz.len() / stride;
        (0..gf).take_while(|&f| hz[f * stride] <= band_limit_hz).count().max(1)
    }

    /// [`Model::valid_columns`] for every member's grid.
    pub(super) fn member_columns(&self, band_limit_hz: f32) -> Vec<usize> {
        self.embeddings.iter().map(|e| self.valid_columns(band_limit_hz, e.grid_stride)).collect()
    }

    /// Nyquist frequency of audio at `sample_rate` as the model sees it, Hz.
    pub(super) fn nyquist(&self, sample_rate: u32) -> f32 {
        sample_rate.min(self.sample_rate()) as f32 / 2.0
    }
}
