//! Fitting: normal clips in, a calibrated multi-member [`Bank`] out.

use std::borrow::Cow;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::anomaly_map::temporal_curve;
use crate::backbone::BackboneSpec;
use crate::bank::{BandLevels, Bank, BankMeta, MemberMeta};
use crate::detector::coreset::for_each_chunk;
use crate::detector::patchcore::{same_clip, source_id};
use crate::detector::{Detector, DetectorConfig, FitData, FitInput, HeldOutRule, LeaveRowsOut};
use crate::embedding::EmbeddingConfig;
use crate::error::{Error, Result};
use crate::threshold::{gamma_threshold, Norm, NormalStats, ThresholdRule};

use super::score::{assemble, clip_level_map};
use super::spill::Spill;
use super::windows::{MemberPatches, Window};
use super::{Model, Progress, CLIP_Z, LEVEL_STD_FLOOR, POSITION_FRACTION, SEGMENT_Z, THRESHOLD_QUANTILE};

/// Bytes of patches the command line and the Python package hold in memory while they add clips to a fit before they
/// spill them to a temporary file ([`Fitter::spill_above`]): about 110 clips of 10 s (18 minutes) with the default
/// members, whose patches take 0.3 MB per 10 s clip.
pub const SPILL_ABOVE_BYTES: usize = 32 << 20;

/// One member to fit: a patch embedding and a detector on it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberConfig {
    /// How the member's patches are made.
    pub embedding: EmbeddingConfig,
    /// The detector fitted on them.
    pub detector: DetectorConfig,
}

impl MemberConfig {
    /// PatchCore (default parameters) on `embedding`.
    pub fn patchcore(embedding: EmbeddingConfig) -> Self {
        MemberConfig { embedding, detector: DetectorConfig::default() }
    }

    /// A short name: the layers joined by `+`, e.g. `logmel` or `features.12+features.15`.
    pub fn name(&self) -> String {
        self.embedding.layers.join("+")
    }
}

/// Which sounds a bank is meant for: chooses its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FitPreset {
    /// Steady machines: PatchCore on log-mel patches (level and spectral shape are the evidence), on the grid the
    /// backbone's spec recommends (`logmel_grid_stride`).
    Machine,
    /// Environments and events: PatchCore on the backbone's recommended layers (`patch_layers` in its spec).
    Environment,
    /// Both members, fused by their largest z-score.
    Both,
}

impl FitPreset {
    /// Parses `machine`, `environment` or `both`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the choices.
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "machine" => Ok(FitPreset::Machine),
            "environment" => Ok(FitPreset::Environment),
            "both" => Ok(FitPreset::Both),
            _ => Err(Error::invalid(format!("unknown preset '{s}': choose machine, environment or both"))),
        }
    }

    /// The members this preset fits with backbone `spec`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for `environment` or `both` with a backbone whose spec recommends no layers.
    pub fn members(self, spec: &BackboneSpec) -> Result<Vec<MemberConfig>> {
        let logmel = || {
            let mut e = EmbeddingConfig::default();
            e.grid_stride = spec.logmel_grid_stride.unwrap_or(e.grid_stride);
            MemberConfig::patchcore(e)
        };
        let network = || -> Result<MemberConfig> {
            if spec.patch_layers.is_empty() {
                return Err(Error::invalid(format!(
                    "backbone '{}' recommends no layers for patches (its spec has no patch_layers); choose the \
                     machine preset or give the layers",
                    spec.name
                )));
            }
            let mut e = EmbeddingConfig { layers: spec.patch_layers.clone(), ..EmbeddingConfig::default() };
            e.grid_stride = spec.patch_grid_stride.unwrap_or(e.grid_stride);
            Ok(MemberConfig::patchcore(e))
        };
        Ok(match self {
            FitPreset::Machine => vec![logmel()],
            FitPreset::Environment => vec![network()?],
            FitPreset::Both => vec![logmel(), network()?],
        })
    }
}

/// What a fit does: its members and the calibration.
#[derive(Debug, Clone, PartialEq)]
pub struct FitConfig {
    /// The members, in order (at least one).
    pub members: Vec<MemberConfig>,
    /// Largest number of calibration folds (held-out parts of the normal clips) for the threshold (10: with up to
    /// 10 clips, each is held out alone).
    pub max_folds: usize,
    /// Clip threshold in robust z units ([`CLIP_Z`]).
    pub clip_z: f32,
    /// Segment threshold in robust z units ([`SEGMENT_Z`]).
    pub segment_z: f32,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            members: vec![MemberConfig::patchcore(EmbeddingConfig::default())],
            max_folds: 10,
            clip_z: CLIP_Z,
            segment_z: SEGMENT_Z,
        }
    }
}

impl FitConfig {
    /// A fit of `members` with the default calibration.
    pub fn with_members(members: Vec<MemberConfig>) -> Self {
        FitConfig { members, ..FitConfig::default() }
    }

    /// The members of the default preset ([`super::DEFAULT_PRESET`]) for backbone `spec`.
    ///
    /// # Errors
    /// As [`FitPreset::members`].
    pub fn default_for(spec: &BackboneSpec) -> Result<Self> {
        Ok(Self::with_members(FitPreset::parse(super::DEFAULT_PRESET)?.members(spec)?))
    }

    /// PatchCore with default parameters on each embedding `model` serves.
    pub fn for_model(model: &Model) -> Self {
        Self::with_members(model.embeddings().iter().cloned().map(MemberConfig::patchcore).collect())
    }

    /// The members of `bank` as they were fitted (embeddings with their fitted weights, detector parameters), for
    /// a [`Fitter`] that collects clips to calibrate the bank ([`Fitter::held_out_against`]).
    pub fn for_bank(bank: &Bank) -> Self {
        Self::with_members(
            bank.meta
                .members
                .iter()
                .map(|m| MemberConfig { embedding: m.embedding.clone(), detector: m.detector.clone() })
                .collect(),
        )
    }

    /// The members' embeddings, as [`Model::set_embeddings`] takes them.
    pub fn embeddings(&self) -> Vec<EmbeddingConfig> {
        self.members.iter().map(|m| m.embedding.clone()).collect()
    }
}

/// The patches of one normal clip, ready to be added to a [`Fitter`].
pub struct AnalysedClip {
    pub(super) windows: Vec<Window>,
    pub(super) fingerprint: u64,
    pub(super) frames: usize,
    pub(super) seconds: f64,
    pub(super) band_limit_hz: f32,
    pub(super) logmel: Vec<f32>,
    pub(super) mel_bins: usize,
}

impl AnalysedClip {
    /// Duration, seconds.
    pub fn seconds(&self) -> f64 {
        self.seconds
    }

    /// [`clip_fingerprint`] of the clip's samples.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// One clip held by the fitter.
struct FitClip {
    /// Its windows; when the clip is spilled, their shapes only (empty grids: the patches are in the spill file).
    windows: Vec<Window>,
    /// Where its patches are in the spill file, when they are there.
    spilled: Option<Range<u64>>,
    /// [`clip_fingerprint`] of its samples.
    fingerprint: u64,
    frames: usize,
    /// The log-mel, kept only when a member is fitted on whole clips (the baseline).
    logmel: Option<Vec<f32>>,
}

/// Collects normal clips, then fits the members and calibrates the thresholds.
///
/// Calibration: each normal clip is a held-out unit. A PatchCore member is fitted once on every clip, keeping the
/// source of each memory-bank row, and each clip is scored against the memory bank without its own rows; PaDiM and
/// the baseline are refitted on up to `max_folds` folds, each fold scored by the member fitted on the others. Each
/// member's held-out clip scores and temporal-curve peaks give its robust normalisation ([`Norm::robust`]), so its
/// scores become z-scores; the bank's clip score is the largest member z-score and the thresholds are `clip_z` and
/// `segment_z` of those units. With a single clip, its windows are split into contiguous parts instead
/// (neighbouring parts overlap by half a window, so this calibration is optimistic). The final members are fitted
/// on every clip.
///
/// Memory: the clips' patches are held until [`Fitter::finish`]; with [`Fitter::spill_above`] (native targets)
/// they go to a temporary file once they pass a budget, and `finish` then reads them back one clip at a time,
/// holding per member only the patches its detector is fitted on (for a capped PatchCore, the candidates of
/// [`crate::detector::PatchCoreConfig::plan`]: at most `max_bank_rows / coreset_ratio` rows, whatever the hours of
/// audio).
pub struct Fitter {
    config: FitConfig,
    clips: Vec<FitClip>,
    /// Per member, what [`Fitter::finish`] has done to the stored patches so far, in order: done in place to the
    /// clips in memory, and on reading to the spilled ones.
    steps: Vec<Vec<Step>>,
    spill: Spill,
    /// Bytes of patches held in memory above which clips are spilled (`None`: never).
    spill_above: Option<usize>,
    /// Bytes of patches held in memory.
    held_bytes: usize,
    seconds: f64,
    band_limit_hz: f32,
    /// Per mel band: sum of the clips' mean levels and of their squares; per clip frame variance summed.
    level_sum: Vec<f64>,
    level_sq: Vec<f64>,
    frame_var_sum: f64,
}

impl Fitter {
    /// A fitter for `model`, whose embeddings must be the members' ([`Model::set_embeddings`] with
    /// [`FitConfig::embeddings`]).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for no member or a model planned for other embeddings (detector parameters are
    /// checked when the members are fitted, once their patch grid is known).
    pub fn new(model: &Model, config: FitConfig) -> Result<Self> {
        if config.members.is_empty() {
            return Err(Error::invalid("a fit needs at least one member"));
        }
        if model.embeddings() != config.embeddings().as_slice() {
            return Err(Error::invalid(
                "the model serves other patch embeddings than this fit's members: call \
                 Model::set_embeddings(config.embeddings()) first",
            ));
        }
        if !(config.clip_z.is_finite() && config.segment_z.is_finite()) {
            return Err(Error::invalid("the z thresholds must be finite numbers"));
        }
        let m = model.logmel.config().n_mels;
        let n_members = config.members.len();
        Ok(Fitter {
            config,
            clips: Vec::new(),
            steps: vec![Vec::new(); n_members],
            spill: Spill::default(),
            spill_above: None,
            held_bytes: 0,
            seconds: 0.0,
            band_limit_hz: f32::INFINITY,
            level_sum: vec![0.0; m],
            level_sq: vec![0.0; m],
            frame_var_sum: 0.0,
        })
    }

    /// Spills the clips' patches to an unnamed temporary file (made at once, empty) once those held in memory pass
    /// `bytes` (at once, if they already do), and every clip added after that; `None` (the default) keeps them in
    /// memory. The fit's
    /// results are the same either way. On wasm, which has no file to spill to, only `None` is accepted.
    ///
    /// # Errors
    /// [`Error::Io`] if the temporary file cannot be made or written; [`Error::InvalidInput`] for a budget on wasm.
    pub fn spill_above(&mut self, bytes: Option<usize>) -> Result<()> {
        if bytes.is_some() {
            // The temporary file now: a folder that cannot be written is said before any work (wasm refuses here).
            self.spill.open()?;
        }
        self.spill_above = bytes;
        self.spill_if_over()
    }

    /// Bytes of patches written to the temporary file so far ([`Fitter::spill_above`]; 0: everything in memory).
    pub fn spilled_bytes(&self) -> u64 {
        self.spill.bytes()
    }

    /// Spills every clip held in memory if their patches pass the budget.
    fn spill_if_over(&mut self) -> Result<()> {
        if self.spill_above.is_none_or(|b| self.held_bytes <= b) {
            return Ok(());
        }
        for c in &mut self.clips {
            if c.spilled.is_none() {
                c.spilled = Some(self.spill.write(&mut c.windows)?);
            }
        }
        self.held_bytes = 0;
        Ok(())
    }

    /// Adds one normal clip (mono `samples` at `sample_rate` Hz).
    ///
    /// # Errors
    /// As [`Fitter::analyse_clip`].
    pub fn add_clip(&mut self, model: &Model, samples: &[f32], sample_rate: u32) -> Result<()> {
        let clip = Self::analyse_clip(model, samples, sample_rate)?;
        self.add_analysed(clip)
    }

    /// Analyses one normal clip without adding it (so that several clips can be analysed in parallel and then
    /// added with [`Fitter::add_analysed`]).
    ///
    /// # Errors
    /// [`Error::Audio`] for empty, non-finite or silent audio, or a clip too short to be scored.
    pub fn analyse_clip(model: &Model, samples: &[f32], sample_rate: u32) -> Result<AnalysedClip> {
        let lm = model.logmel_of(samples, sample_rate)?;
        if lm.frames < model.min_frames() {
            return Err(Error::audio(format!(
                "the clip is too short to learn from: {:.2} s, at least {:.2} s are needed (as for scoring)",
                samples.len() as f64 / sample_rate as f64,
                model.min_frames() as f64 * model.hop_s()
            )));
        }
        if lm.data.iter().all(|&v| v == model.pad_value) {
            return Err(Error::audio(
                "this clip is digital silence: a bank must learn the sound of the machine running",
            ));
        }
        let band_limit_hz = model.nyquist(sample_rate);
        let windows = model.analyse(&lm, &model.member_columns(band_limit_hz), &mut |_, _| {})?;
        Ok(AnalysedClip {
            windows,
            fingerprint: clip_fingerprint(samples, sample_rate),
            frames: lm.frames,
            seconds: samples.len() as f64 / sample_rate as f64,
            band_limit_hz,
            logmel: lm.data,
            mel_bins: lm.mel_bins,
        })
    }

    /// Adds a clip analysed by [`Fitter::analyse_clip`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the clip was analysed for other members or another front end.
    pub fn add_analysed(&mut self, clip: AnalysedClip) -> Result<()> {
        let m = self.level_sum.len();
        if clip.mel_bins != m || clip.windows.iter().any(|w| w.members.len() != self.config.members.len()) {
            return Err(Error::invalid("this clip was analysed for another front end or other members"));
        }
        self.seconds += clip.seconds;
        self.band_limit_hz = self.band_limit_hz.min(clip.band_limit_hz);
        let frames = clip.frames.max(1) as f64;
        let mut var = 0.0f64;
        for b in 0..m {
            let col = clip.logmel.iter().skip(b).step_by(m).map(|&v| v as f64);
            let (s, sq) = col.fold((0.0, 0.0), |(s, sq), v| (s + v, sq + v * v));
            let mean = s / frames;
            self.level_sum[b] += mean;
            self.level_sq[b] += mean * mean;
            var += (sq / frames - mean * mean).max(0.0);
        }
        self.frame_var_sum += var / m as f64;
        let clip_level = self.config.members.iter().any(|mc| mc.detector.is_clip_level());
        self.held_bytes += clip.windows.iter().flat_map(|w| &w.members).map(|m| m.grid.data.len() * 4).sum::<usize>();
        self.clips.push(FitClip {
            windows: clip.windows,
            spilled: None,
            fingerprint: clip.fingerprint,
            frames: clip.frames,
            logmel: clip_level.then_some(clip.logmel),
        });
        self.spill_if_over()
    }

    /// Clips added so far.
    pub fn clips(&self) -> usize {
        self.clips.len()
    }

    /// Seconds of audio added so far.
    pub fn seconds(&self) -> f64 {
        self.seconds
    }

    /// Clip `c`'s windows with [`Fitter::steps`] done: borrowed when the clip is in memory, read back when it is
    /// spilled.
    fn windows(&self, c: usize) -> Result<Cow<'_, [Window]>> {
        let clip = &self.clips[c];
        let Some(at) = &clip.spilled else {
            return Ok(Cow::Borrowed(&clip.windows));
        };
        let mut windows = self.spill.read(&clip.windows, at)?;
        for w in &mut windows {
            for (mp, steps) in w.members.iter_mut().zip(&self.steps) {
                steps.iter().for_each(|s| s.apply(mp));
            }
        }
        Ok(Cow::Owned(windows))
    }

    /// Does `step` to member `i`'s patches of every clip: now to the clips in memory, on reading to the spilled.
    fn prepare(&mut self, i: usize, step: Step) {
        for c in self.clips.iter_mut().filter(|c| c.spilled.is_none()) {
            c.windows.iter_mut().for_each(|w| step.apply(&mut w.members[i]));
        }
        self.steps[i].push(step);
    }

    /// Member `i`'s whole window grids of `units`' windows, concatenated (PaDiM's per-position Gaussians need every
    /// position of every window).
    fn window_grids(&self, units: &[Unit], i: usize) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for u in units {
            self.unit_windows(u)?.iter().for_each(|w| out.extend_from_slice(&w.members[i].grid.data));
        }
        Ok(out)
    }

    /// Visits member `i`'s owned patches of every clip.
    fn for_owned(&self, i: usize, mut f: impl FnMut(&[f32])) -> Result<()> {
        for c in 0..self.clips.len() {
            for w in self.windows(c)?.iter() {
                let mp = &w.members[i];
                mp.owned().chunks_exact(mp.grid.dims).for_each(&mut f);
            }
        }
        Ok(())
    }

    /// Sets the weight of member `i`'s frequency-position feature (the last patch dimension, analysed with
    /// weight 1) to [`POSITION_FRACTION`] times the RMS norm of the other dimensions of the normal patches, and
    /// returns it.
    fn position_weight(&mut self, i: usize, dims: usize) -> Result<f32> {
        let (mut sum, mut count) = (0.0f64, 0usize);
        self.for_owned(i, |p| {
            sum += p[..dims - 1].iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
            count += 1;
        })?;
        let rms = if sum > 0.0 && count > 0 { (sum / count as f64).sqrt() as f32 } else { 1.0 };
        let weight = POSITION_FRACTION * rms;
        self.prepare(i, Step::Position { dims, weight });
        Ok(weight)
    }

    /// Per-layer weights giving each layer's part of member `i`'s normal patches unit RMS norm; applies them to
    /// the stored patches and returns them.
    fn balance(&mut self, i: usize, layer_dims: &[usize]) -> Result<Vec<f32>> {
        let mut sum = vec![0.0f64; layer_dims.len()];
        let mut count = 0usize;
        self.for_owned(i, |p| {
            let mut off = 0;
            for (l, &c) in layer_dims.iter().enumerate() {
                sum[l] += p[off..off + c].iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
                off += c;
            }
            count += 1;
        })?;
        let weights: Vec<f32> =
            sum.iter().map(|&s| if s > 0.0 && count > 0 { (count as f64 / s).sqrt() as f32 } else { 1.0 }).collect();
        self.prepare(i, Step::Layers { layer_dims: layer_dims.to_vec(), weights: weights.clone() });
        Ok(weights)
    }

    /// Fits member `i` on the given calibration units (all clips for the final fit), on what its detector is
    /// fitted on ([`FitInput`]); owned patches carry the source of each (the unit they came from).
    fn fit_member(&self, cfg: &DetectorConfig, i: usize, dims: usize, units: &[Unit]) -> Result<Detector> {
        match cfg.fit_input() {
            FitInput::ClipLogMels => {
                let logmels: Vec<&[f32]> = units.iter().filter_map(|u| self.clips[u.clip].logmel.as_deref()).collect();
                Detector::fit_on(cfg, FitData::LogMels(&logmels), dims)
            }
            FitInput::OwnedPatches => {
                let (patches, sources, of) = self.fit_patches(cfg, i, dims, units)?;
                Detector::fit_on(cfg, FitData::Subset { patches: &patches, sources: &sources, of }, dims)
            }
            FitInput::WindowGrids => {
                let patches = self.window_grids(units, i)?;
                Detector::fit_on(cfg, FitData::Patches { patches: &patches, sources: &[] }, dims)
            }
        }
    }

    /// Member `i`'s owned patches of `units` that a fit of `cfg` looks at ([`DetectorConfig::fit_subset`]: all of
    /// them, or a capped PatchCore's candidates) `[m, dims]`, the source id of each `[m]`, and the number of owned
    /// patches in all: read in one pass, so that only those are held.
    fn fit_patches(
        &self,
        cfg: &DetectorConfig,
        i: usize,
        dims: usize,
        units: &[Unit],
    ) -> Result<(Vec<f32>, Vec<u64>, usize)> {
        let owned_rows = |mp: &MemberPatches| {
            let crop = self.steps[i].iter().find_map(|s| if let Step::Crop(c) = s { Some(*c) } else { None });
            crop.map_or(mp.owned_patches.len(), |c| mp.cropped_owned(c).len())
        };
        let n: usize = units
            .iter()
            .flat_map(|u| &self.clips[u.clip].windows[u.windows.clone()])
            .map(|w| owned_rows(&w.members[i]))
            .sum();
        let subset = cfg.fit_subset(n);
        let mut wanted = subset.iter().flatten().copied().peekable();
        let (mut rows, mut sources) = (Vec::new(), Vec::new());
        let mut k = 0usize;
        for u in units {
            for w in self.unit_windows(u)?.iter() {
                let owned = w.members[i].owned();
                if subset.is_none() {
                    rows.extend_from_slice(owned);
                    sources.extend(std::iter::repeat_n(u.source, owned.len() / dims.max(1)));
                    k += owned.len() / dims.max(1);
                    continue;
                }
                for p in owned.chunks_exact(dims.max(1)) {
                    if wanted.next_if_eq(&k).is_some() {
                        rows.extend_from_slice(p);
                        sources.push(u.source);
                    }
                    k += 1;
                }
            }
        }
        if k != n {
            return Err(Error::invalid("internal: the fit's patch count changed while it was read"));
        }
        Ok((rows, sources, n))
    }

    /// The windows of unit `u`.
    fn unit_windows(&self, u: &Unit) -> Result<Cow<'_, [Window]>> {
        Ok(match self.windows(u.clip)? {
            Cow::Borrowed(w) => Cow::Borrowed(&w[u.windows.clone()]),
            Cow::Owned(mut w) => {
                w.truncate(u.windows.end);
                w.drain(..u.windows.start);
                Cow::Owned(w)
            }
        })
    }

    /// Member `i`'s raw held-out clip score and temporal-curve peak of unit `u`.
    fn held_out(&self, model: &Model, det: &Detector, i: usize, u: &Unit) -> Result<HeldOut> {
        let m = model.logmel.config().n_mels;
        let clip = &self.clips[u.clip];
        let (map, score) = match clip.logmel.as_deref().and_then(|lm| clip_level_map(det, lm, clip.frames, m)) {
            Some(r) => r,
            None => {
                let e = &model.embeddings()[i];
                assemble(det, &self.unit_windows(u)?, i, u.frames, m, model.spec.window_frames, e.grid_stride)?
            }
        };
        let peak = temporal_curve(&map[u.first_frame * m..], m).into_iter().fold(0.0f32, f32::max);
        Ok(HeldOut { score, peak })
    }

    /// Member `i`'s raw held-out results of every unit of `units`, in order: each unit scored by `det` without the
    /// rows it gave (with their replacements) when `leave` is given, else by `det` as it is. Units are scored in
    /// parallel on native targets, in batches of two per thread; `done` is called once per unit, in order, after
    /// its batch (an error from it, such as [`Error::Cancelled`], stops the loop). Each unit's result does not depend
    /// on the batching or the threads.
    #[allow(clippy::too_many_arguments)] // private: the two calibration loops' inputs, each used once
    fn held_out_units(
        &self,
        model: &Model,
        i: usize,
        det: &Detector,
        leave: Option<&LeaveRowsOut<'_>>,
        units: &[Unit],
        same: &(dyn Fn(u64, u64) -> bool + Sync),
        done: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Vec<HeldOut>> {
        #[cfg(not(target_arch = "wasm32"))]
        let batch = 2 * rayon::current_num_threads();
        #[cfg(target_arch = "wasm32")]
        let batch = 1;
        let mut held = Vec::with_capacity(units.len());
        for part in units.chunks(batch) {
            let mut out: Vec<Result<HeldOut>> = (0..part.len()).map(|_| Ok(HeldOut::default())).collect();
            for_each_chunk(&mut out, 1, |k, slot| {
                let u = &part[k];
                slot[0] = match leave {
                    Some(l) => match l.without(u.source, same) {
                        Some(loo) => self.held_out(model, &loo, i, u),
                        None => Err(Error::invalid(
                            "every memory-bank row came from this one clip: add the other normal clips",
                        )),
                    },
                    None => self.held_out(model, det, i, u),
                };
            });
            for r in out {
                held.push(r?);
                done()?;
            }
        }
        Ok(held)
    }

    /// Calibration units: whole clips, or contiguous parts of a single clip.
    fn units(&self, model: &Model) -> Result<Vec<Unit>> {
        if self.clips.len() >= 2 {
            if self.clips.iter().all(|c| c.fingerprint == self.clips[0].fingerprint) {
                // One source: each clip's rows would be held out with all the others, leaving none to score against.
                return Err(Error::invalid(format!(
                    "the {} clips are copies of one recording (the same samples): a bank needs normal clips that \
                     differ; give other recordings of the machine",
                    self.clips.len()
                )));
            }
            return Ok((0..self.clips.len()).map(|c| self.whole(c)).collect());
        }
        let Some(clip) = self.clips.first() else {
            return Err(Error::invalid("no normal clip was added: fitting needs normal audio"));
        };
        if self.config.members.iter().any(|mc| mc.detector.is_clip_level()) {
            return Err(Error::invalid("the baseline detector needs at least two normal clips"));
        }
        let w = &clip.windows;
        let parts = w.len().min(self.config.max_folds);
        if parts < 2 {
            let need = (model.spec.window_frames + model.spec.window_hop) as f64 * model.hop_s();
            return Err(Error::invalid(format!(
                "too little normal audio to set a threshold: give at least {need:.1} s (two analysis windows); {} \
                 clips or more, {:.0} s in all, give a threshold that holds",
                crate::threshold::STEADY_CLIPS,
                crate::threshold::STEADY_SECONDS
            )));
        }
        let per = w.len().div_ceil(parts);
        Ok((0..w.len())
            .step_by(per)
            .enumerate()
            .map(|(p, a)| {
                let b = (a + per).min(w.len());
                Unit {
                    clip: 0,
                    windows: a..b,
                    frames: w[b - 1].owned.end,
                    first_frame: w[a].owned.start,
                    source: source_id(clip.fingerprint, p + 1),
                }
            })
            .collect())
    }

    /// Clip `c` as one unit.
    fn whole(&self, c: usize) -> Unit {
        let clip = &self.clips[c];
        Unit {
            clip: c,
            windows: 0..clip.windows.len(),
            frames: clip.frames,
            first_frame: 0,
            source: source_id(clip.fingerprint, 0),
        }
    }

    /// Calibrates the thresholds, fits the members and returns the bank. `progress` is called after each step;
    /// returning `false` cancels.
    ///
    /// Members whose detector leaves rows out ([`HeldOutRule::LeaveRowsOut`]: PatchCore) are fitted once on every
    /// unit, and each unit is scored without the rows that came from it ([`Detector::leave_out`]); the others
    /// ([`HeldOutRule::Refit`]: PaDiM, the baseline) are refitted per fold (up to `max_folds`) and once more on
    /// every unit.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] with too little audio to calibrate (fewer than two windows in all) or normal
    /// material that never varies; [`Error::Cancelled`] if `progress` returned `false`.
    pub fn finish(mut self, model: &Model, progress: &mut dyn FnMut(Progress) -> bool) -> Result<Bank> {
        let n_members = self.config.members.len();
        let mel_bins = model.logmel.config().n_mels;
        // Only the bands every clip has signal in: the lowest Nyquist frequency of the clips.
        let cols = model.member_columns(self.band_limit_hz);
        for (i, &n) in cols.iter().enumerate() {
            self.prepare(i, Step::Crop(n));
        }
        let mut embeddings = Vec::with_capacity(n_members);
        let mut det_cfgs = Vec::with_capacity(n_members);
        let mut dims = Vec::with_capacity(n_members);
        for i in 0..n_members {
            let mut e = self.config.members[i].embedding.clone();
            let d = e.dims(&model.spec);
            if e.balance_layers && e.layer_weights.is_empty() {
                e.layer_weights = self.balance(i, &e.layer_dims(&model.spec))?;
            }
            if e.frequency_position && e.position_weight <= 0.0 {
                e.position_weight = self.position_weight(i, d)?;
            }
            // Detector geometry: the window's patch grid (after the band limit) and the mel bins.
            let first = if self.clips.is_empty() { Cow::Borrowed(&[][..]) } else { self.windows(0)? };
            let (gt, gf) = first.first().map_or((0, 0), |w| (w.members[i].grid.time, w.members[i].grid.freq));
            det_cfgs.push(self.config.members[i].detector.clone().with_geometry(gt, gf, mel_bins));
            embeddings.push(e);
            dims.push(d);
        }
        let units = self.units(model)?;
        let folds = units.len().min(self.config.max_folds);
        let all: Vec<Unit> = (0..self.clips.len()).map(|c| self.whole(c)).collect();
        // Steps: PatchCore one fit and one held-out scoring per unit; the others one fit per fold and a final one.
        let steps = |c: &DetectorConfig| match c.held_out_rule() {
            HeldOutRule::LeaveRowsOut => 1 + units.len(),
            HeldOutRule::Refit => folds + 1,
        };
        let total: usize = det_cfgs.iter().map(steps).sum();
        let mut done = 0;
        let mut step = |stage: &'static str| {
            done += 1;
            if progress(Progress { stage, done, total }) {
                Ok(())
            } else {
                Err(Error::Cancelled)
            }
        };
        // held[i][u] = member i's raw held-out results of unit u.
        let mut held: Vec<Vec<HeldOut>> = vec![vec![HeldOut::default(); units.len()]; n_members];
        let mut detectors = Vec::with_capacity(n_members);
        for i in 0..n_members {
            if det_cfgs[i].held_out_rule() == HeldOutRule::LeaveRowsOut {
                let t = StageLog::start();
                // The patches the fit chooses its memory bank among are the pool of replacement rows.
                let (pool, sources, of) = self.fit_patches(&det_cfgs[i], i, dims[i], &all)?;
                let fit_data = FitData::Subset { patches: &pool, sources: &sources, of };
                let det = Detector::fit_on(&det_cfgs[i], fit_data, dims[i])?;
                t.done(i, "fit");
                step("fitting")?;
                let same = |a: u64, b: u64| a == b;
                let t = StageLog::start();
                let Some(leave) = det.leave_out(pool, sources, &same)? else {
                    return Err(Error::invalid("internal: a detector that leaves rows out kept no sources"));
                };
                t.done(i, "replacement rows");
                let t = StageLog::start();
                held[i] =
                    self.held_out_units(model, i, &det, Some(&leave), &units, &same, &mut || step("calibrating"))?;
                t.done(i, "held-out scoring");
                drop(leave);
                detectors.push(det);
                continue;
            }
            for f in 0..folds {
                let train: Vec<Unit> =
                    units.iter().enumerate().filter(|(k, _)| k % folds != f).map(|(_, u)| u.clone()).collect();
                let det = self.fit_member(&det_cfgs[i], i, dims[i], &train)?;
                for (k, u) in units.iter().enumerate().filter(|(k, _)| k % folds == f) {
                    held[i][k] = self.held_out(model, &det, i, u)?;
                }
                step("calibrating")?;
            }
            detectors.push(self.fit_member(&det_cfgs[i], i, dims[i], &all)?);
            step("fitting")?;
        }
        let calibration = Calibration::from_held_out(&held, THRESHOLD_QUANTILE)?;
        let members = (0..n_members)
            .map(|i| MemberMeta {
                name: self.config.members[i].name(),
                detector: det_cfgs[i].clone(),
                dims: dims[i],
                state_rows: 0,
                embedding: embeddings[i].clone(),
                score_norm: calibration.members[i].score_norm,
                map_norm: calibration.members[i].map_norm,
                normal_scores: calibration.members[i].normal_scores.clone(),
                normal_curve_peaks: calibration.members[i].normal_curve_peaks.clone(),
            })
            .collect();
        let meta = BankMeta {
            format: String::new(),
            version: 0,
            writer: String::new(),
            front_end: model.logmel.config().clone(),
            backbone: model.identity().clone(),
            band_limit_hz: self.band_limit_hz.is_finite().then_some(self.band_limit_hz),
            clips_fitted: self.clips.len(),
            seconds_fitted: self.seconds,
            members,
            fused_scores: calibration.fused_scores,
            fused_curve_peaks: calibration.fused_curve_peaks,
            threshold_rule: ThresholdRule::RobustZ { clip_z: self.config.clip_z, segment_z: self.config.segment_z },
            threshold: self.config.clip_z,
            segment_threshold: self.config.segment_z,
            band_levels: Some(self.band_levels()),
            created: String::new(),
            data_sha256: String::new(),
        };
        Bank::new(meta, detectors)
    }

    /// Scores every added clip against `bank` as a held-out normal clip, for [`calibrate`]: per clip, one
    /// [`HeldOut`] per member, `[clips][members]`. The fitter must be made for the bank
    /// ([`FitConfig::for_bank`]) with `model` prepared for it ([`Model::prepare_for`]). A PatchCore member whose
    /// memory bank knows its rows' sources scores each clip without the rows that came from that clip (any part
    /// of it), replaced by the nearest patch of the other added clips ([`Detector::leave_out`]), so clips the bank was
    /// fitted on (a shard's, for a merged bank) count as held out; rows of clips not added stay. Other members
    /// score the clips as they are: give clips those members were not fitted on.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if no clip was added, the model is not prepared for the bank, or the fitter was
    /// made for other members; [`Error::Cancelled`] if `progress` returned `false`.
    pub fn held_out_against(
        mut self,
        model: &Model,
        bank: &Bank,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<Vec<Vec<HeldOut>>> {
        model.check_ready(bank)?;
        if self.clips.is_empty() {
            return Err(Error::invalid("no normal clip was added: calibration needs normal audio"));
        }
        let n_members = bank.detectors.len();
        if self.config.members.len() != n_members
            || self.config.members.iter().zip(&bank.meta.members).any(|(c, m)| c.embedding != m.embedding)
        {
            return Err(Error::invalid("this calibration was made for another bank's members"));
        }
        let cols = model.member_columns(self.band_limit_hz.min(bank.band_limit_hz()));
        for (i, &n) in cols.iter().enumerate() {
            self.prepare(i, Step::Crop(n));
        }
        let all: Vec<Unit> = (0..self.clips.len()).map(|c| self.whole(c)).collect();
        let total = n_members * all.len();
        let mut held = vec![vec![HeldOut::default(); n_members]; all.len()];
        for (i, det) in bank.detectors.iter().enumerate() {
            let leave = if det.config().held_out_rule() == HeldOutRule::LeaveRowsOut {
                let (pool, sources, _) = self.fit_patches(&det.config(), i, det.dims(), &all)?;
                det.leave_out(pool, sources, &same_clip)?
            } else {
                None
            };
            let mut done = i * all.len();
            let scores = self.held_out_units(model, i, det, leave.as_ref(), &all, &same_clip, &mut || {
                done += 1;
                if progress(Progress { stage: "calibrating", done, total }) {
                    Ok(())
                } else {
                    Err(Error::Cancelled)
                }
            })?;
            for (k, h) in scores.into_iter().enumerate() {
                held[k][i] = h;
            }
        }
        Ok(held)
    }

    /// Mean and spread of each band's clip level over the normal clips.
    fn band_levels(&self) -> BandLevels {
        let n = self.clips.len().max(1) as f64;
        let frame_std = (self.frame_var_sum / n).sqrt();
        let floor = (LEVEL_STD_FLOOR as f64 * frame_std).max(1e-6);
        let mean: Vec<f32> = self.level_sum.iter().map(|s| (s / n) as f32).collect();
        let std: Vec<f32> = self
            .level_sum
            .iter()
            .zip(&self.level_sq)
            .map(|(s, sq)| {
                let m = s / n;
                let var = if n > 1.0 { ((sq - n * m * m) / (n - 1.0)).max(0.0) } else { 0.0 };
                var.sqrt().max(floor) as f32
            })
            .collect();
        BandLevels { mean, std }
    }
}

/// What [`Fitter::finish`] does to a member's stored patches, in this order ([`Fitter::prepare`]).
#[derive(Debug, Clone)]
enum Step {
    /// Keeps the first grid columns (the bands every clip has signal in).
    Crop(usize),
    /// Multiplies each layer's part of every patch by the layer's weight ([`Fitter::balance`]).
    Layers { layer_dims: Vec<usize>, weights: Vec<f32> },
    /// Multiplies the frequency-position feature (dimension `dims - 1`) by `weight` ([`Fitter::position_weight`]).
    Position { dims: usize, weight: f32 },
}

impl Step {
    fn apply(&self, mp: &mut MemberPatches) {
        let d = mp.grid.dims;
        match self {
            Step::Crop(cols) => mp.crop(*cols),
            Step::Layers { layer_dims, weights } => mp.grid.data.chunks_exact_mut(d).for_each(|p| {
                let mut off = 0;
                for (l, &c) in layer_dims.iter().enumerate() {
                    p[off..off + c].iter_mut().for_each(|v| *v *= weights[l]);
                    off += c;
                }
            }),
            Step::Position { dims, weight } => mp.grid.data.chunks_exact_mut(d).for_each(|p| p[dims - 1] *= weight),
        }
    }
}

/// A calibration unit: windows of one clip held out together.
#[derive(Debug, Clone)]
struct Unit {
    clip: usize,
    windows: std::ops::Range<usize>,
    /// Frames of the clip up to the unit's last owned frame.
    frames: usize,
    /// The unit's first owned frame.
    first_frame: usize,
    /// Source id of its patches ([`source_id`]).
    source: u64,
}

/// One member's raw results for one held-out normal clip (or part of a clip).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HeldOut {
    /// Clip score, raw detector units.
    pub score: f32,
    /// Largest value of the temporal curve of the member's raw map.
    pub peak: f32,
}

/// One member's calibration from its held-out normal results.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MemberCalibration {
    pub score_norm: Norm,
    pub map_norm: Norm,
    pub normal_scores: NormalStats,
    pub normal_curve_peaks: NormalStats,
}

/// A bank's calibration: per member its normalisations and held-out statistics; the fused held-out scores and
/// curve peaks (z units).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Calibration {
    pub members: Vec<MemberCalibration>,
    pub fused_scores: Vec<f32>,
    pub fused_curve_peaks: Vec<f32>,
}

impl Calibration {
    /// From `held[i][u]`, member `i`'s raw results on held-out normal unit `u`: each member's robust z
    /// normalisation ([`Norm::robust`]) of its scores and of its curve peaks, their gamma fits at `quantile`, and
    /// per unit the largest member z-score (of the score, and of the curve peak: z is increasing, so the peak of
    /// the fused curve in z is the largest member's normalised raw peak).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if every held-out unit scored 0 (normal material that never changes), or the
    /// members hold different numbers of units.
    pub fn from_held_out(held: &[Vec<HeldOut>], quantile: f32) -> Result<Calibration> {
        let units = held.first().map_or(0, |h| h.len());
        if units == 0 || held.iter().any(|h| h.len() != units) {
            return Err(Error::invalid(
                "the members' held-out scores do not line up: a bank is damaged or hand-edited",
            ));
        }
        let mut members = Vec::with_capacity(held.len());
        for h in held {
            let scores: Vec<f32> = h.iter().map(|h| h.score).collect();
            let peaks: Vec<f32> = h.iter().map(|h| h.peak).collect();
            let normal_scores = gamma_threshold(&scores, quantile)?;
            if normal_scores.threshold.is_nan() || normal_scores.threshold <= 0.0 {
                return Err(Error::invalid(
                    "every held-out normal clip scored 0: the normal material does not change at all (silence or \
                     a constant signal?); record the machine while it runs",
                ));
            }
            members.push(MemberCalibration {
                score_norm: Norm::robust(&scores)?,
                map_norm: Norm::robust(&peaks)?,
                normal_curve_peaks: gamma_threshold(&peaks, quantile)?,
                normal_scores,
            });
        }
        let fused = |f: &dyn Fn(&MemberCalibration, &HeldOut) -> f32| -> Vec<f32> {
            (0..units)
                .map(|k| members.iter().zip(held).map(|(m, h)| f(m, &h[k])).fold(f32::NEG_INFINITY, f32::max))
                .collect()
        };
        let fused_scores = fused(&|m, h| m.score_norm.z(h.score));
        let fused_curve_peaks = fused(&|m, h| m.map_norm.z(h.peak));
        Ok(Calibration { members, fused_scores, fused_curve_peaks })
    }
}

/// A fingerprint of a clip's samples: the first 8 bytes of the SHA-256 of the sample rate and the samples
/// (little-endian f32). The same audio gives the same fingerprint in every face, so a bank's memory-bank rows can
/// be traced to the clip they came from ([`source_id`]).
pub fn clip_fingerprint(samples: &[f32], sample_rate: u32) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(sample_rate.to_le_bytes());
    for chunk in samples.chunks(4096) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
        h.update(&bytes);
    }
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// `bank` recalibrated from held-out normal results `held` `[clips][members]` (from [`Fitter::held_out_against`],
/// possibly gathered from several processes): each member's normalisation and held-out statistics, the fused
/// held-out scores, and the thresholds of the bank's rule (an overridden threshold returns to the rule's). The
/// memory banks, clip counts and band levels are kept; the creation time and checksum are new. This is how a merged
/// bank gets thresholds measured against itself rather than pooled from its shards (`sonomaly merge --calibrate`).
///
/// # Errors
/// [`Error::InvalidInput`] for a version 1 bank (raw distances), fewer than two clips, results that do not have
/// one entry per member, or held-out scores that are all 0.
pub fn calibrate(bank: &Bank, held: &[Vec<HeldOut>]) -> Result<Bank> {
    let ThresholdRule::RobustZ { clip_z, segment_z } = bank.meta.threshold_rule else {
        return Err(Error::invalid("this bank is of format version 1 (raw distances): refit it to calibrate it"));
    };
    let n_members = bank.meta.members.len();
    if held.len() < 2 {
        return Err(Error::invalid(format!("calibration needs at least two normal clips, got {}", held.len())));
    }
    if held.iter().any(|h| h.len() != n_members) {
        return Err(Error::invalid(format!("held-out results must have one entry per member ({n_members})")));
    }
    if held.iter().flatten().any(|h| !(h.score.is_finite() && h.peak.is_finite())) {
        return Err(Error::invalid("a held-out result is not a finite number"));
    }
    let by_member: Vec<Vec<HeldOut>> = (0..n_members).map(|i| held.iter().map(|h| h[i]).collect()).collect();
    let quantile = bank.meta.members[0].normal_scores.quantile;
    let c = Calibration::from_held_out(&by_member, if quantile > 0.0 { quantile } else { THRESHOLD_QUANTILE })?;
    let mut meta = bank.meta.clone();
    for (m, mc) in meta.members.iter_mut().zip(c.members) {
        m.score_norm = mc.score_norm;
        m.map_norm = mc.map_norm;
        m.normal_scores = mc.normal_scores;
        m.normal_curve_peaks = mc.normal_curve_peaks;
    }
    meta.fused_scores = c.fused_scores;
    meta.fused_curve_peaks = c.fused_curve_peaks;
    meta.threshold = clip_z;
    meta.segment_threshold = segment_z;
    meta.created = String::new();
    Bank::new(meta, bank.detectors.clone())
}

/// Wall time of one fitting stage, printed on stderr when `SONOMALY_CORESET_LOG` is set (`benches/fit_scaling.sh`
/// reads it); nothing on wasm.
struct StageLog(#[cfg(not(target_arch = "wasm32"))] std::time::Instant);

impl StageLog {
    fn start() -> Self {
        StageLog(
            #[cfg(not(target_arch = "wasm32"))]
            std::time::Instant::now(),
        )
    }

    fn done(&self, member: usize, stage: &str) {
        #[cfg(not(target_arch = "wasm32"))]
        if std::env::var_os("SONOMALY_CORESET_LOG").is_some() {
            eprintln!("stage: member {member} {stage} in {:.3} s", self.0.elapsed().as_secs_f64());
        }
        #[cfg(target_arch = "wasm32")]
        let _ = (member, stage);
    }
}
