//! Detectors: fitted on the patches of normal clips, they give each query patch an anomaly score.
//!
//! Every detector takes patches `[n, dims]` (see [`crate::embedding::PatchGrid`]) and returns one score per
//! patch (higher = more anomalous) plus a clip score. Everything the rest of the library needs to know about a
//! detector is answered here, by [`DetectorConfig`] (what it is fitted on: [`FitInput`]; how its held-out normal
//! clips are scored: [`HeldOutRule`]; its name for people and the command line: [`DetectorConfig::from_name`]) and
//! by [`Detector`] (fitting from [`FitData`], scoring a window into a [`WindowScore`], or a whole clip's log-mel,
//! its stored tensors, leaving a clip's rows out, merging shards). Nothing outside this module matches on the
//! kind; `docs/adding-a-detector.md` lists what a new detector implements.

pub mod baseline;
pub mod cfa;
pub mod coreset;
pub mod padim;
pub mod patchcore;

use serde::{Deserialize, Serialize};

pub use baseline::{Baseline, BaselineConfig};
pub use cfa::{Cfa, CfaConfig};
pub use padim::{Padim, PadimConfig, PadimVariant};
pub use patchcore::{LeaveRowsOut, PatchCore, PatchCoreConfig};

use safetensors::tensor::Dtype;

use crate::embedding::PatchGrid;
use crate::error::{Error, Result};

/// What a detector is fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitInput {
    /// The patches each window owns, with the source of each (PatchCore).
    OwnedPatches,
    /// Every window's whole patch grid, positions intact (PaDiM, full: a Gaussian per grid position).
    WindowGrids,
    /// Whole clips' log-mels, no patches and no windows (the baseline).
    ClipLogMels,
}

/// How a detector's held-out normal clips are scored for its calibration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldOutRule {
    /// Fitted once on every clip; each clip scored with the stored rows it gave left out ([`Detector::leave_out`]).
    LeaveRowsOut,
    /// Refitted on folds of the clips; each fold scored by the detector fitted on the others.
    Refit,
}

/// The normal material a detector is fitted on, as its [`FitInput`] asks.
pub enum FitData<'a> {
    /// Patches `[n, dims]` with the source id of each `[n]` (see [`patchcore::source_id`]; may be empty).
    Patches { patches: &'a [f32], sources: &'a [u64] },
    /// Log-mels `[T, M]` of whole clips.
    LogMels(&'a [&'a [f32]]),
    /// The patches `[m, dims]` (with their sources `[m]`, or empty) that [`DetectorConfig::fit_subset`] chose
    /// among `of` patches, in the chosen order: fits the detector that a fit on all `of` patches gives, without
    /// holding them all.
    Subset { patches: &'a [f32], sources: &'a [u64], of: usize },
}

/// Parameters the command line and the Python package set on whichever detector is chosen by name.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorOptions {
    /// PatchCore: fraction of the patches kept.
    pub coreset_ratio: f32,
    /// PatchCore: largest memory bank (`None`: no cap).
    pub max_bank_rows: Option<usize>,
    /// Seed (projection, first coreset centre, PaDiM's channels).
    pub seed: u64,
    /// PaDiM: channels kept.
    pub padim_d: usize,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        let pc = PatchCoreConfig::default();
        DetectorOptions { coreset_ratio: pc.coreset_ratio, max_bank_rows: pc.max_bank_rows, seed: 0, padim_d: 100 }
    }
}

/// Scores of one member's patches in one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowScore {
    /// One score per patch of the whole window grid, raw units.
    pub patch: Vec<f32>,
    /// The window's clip score from its owned patches (PatchCore: re-weighted, eq. 7), raw units.
    pub clip: f32,
    /// The largest owned patch score (`-inf` when the window owns no patch).
    pub max_owned: f32,
}

/// One stored tensor of a detector beside its state: a name suffix (`member{i}.{suffix}` in the bank), dtype,
/// shape and little-endian bytes.
pub struct ExtraTensor {
    /// Suffix of the tensor's name.
    pub suffix: &'static str,
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian bytes.
    pub bytes: Vec<u8>,
}

/// Which detector to fit, with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DetectorConfig {
    /// PatchCore with a greedy coreset memory bank.
    Patchcore(PatchCoreConfig),
    /// PaDiM: Gaussians of the patches per grid position or per frequency row.
    Padim(PadimConfig),
    /// Baseline without a backbone: clip mean and std of the log-mel bands, kNN to normal clips.
    Baseline(BaselineConfig),
    /// CFA: a trained 1x1 CoordConv patch descriptor and k-means centroids of its outputs.
    Cfa(CfaConfig),
}

impl DetectorConfig {
    /// The names [`DetectorConfig::from_name`] accepts, each with a line for people (help texts, errors).
    pub const KINDS: &'static [(&'static str, &'static str)] = &[
        ("patchcore", "PatchCore: greedy coreset memory bank, nearest-neighbour patch distances"),
        ("padim", "PaDiM: a Gaussian per position of the window's patch grid, Mahalanobis distances"),
        (
            "padim-freq",
            "PaDiM conditioned on frequency: a Gaussian per frequency row, pooled over time (any length, streams)",
        ),
        (
            "baseline",
            "Baseline without a backbone: clip mean and std of the log-mel bands, distance to the nearest normal clip",
        ),
        (
            "cfa",
            "CFA: a patch descriptor trained on the normal patches, softmin distance to the k-means centroids of its outputs",
        ),
    ];

    /// The detector called `name` (one of [`DetectorConfig::KINDS`]; `_` may stand for `-`) with `options`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an unknown name, listing the known ones.
    pub fn from_name(name: &str, options: &DetectorOptions) -> Result<Self> {
        let o = options;
        Ok(match name.to_ascii_lowercase().replace('_', "-").as_str() {
            "patchcore" => DetectorConfig::Patchcore(PatchCoreConfig {
                coreset_ratio: o.coreset_ratio,
                max_bank_rows: o.max_bank_rows,
                seed: o.seed,
                ..Default::default()
            }),
            "padim" => DetectorConfig::Padim(PadimConfig {
                seed: o.seed,
                d: o.padim_d,
                variant: PadimVariant::Full,
                ..Default::default()
            }),
            "padim-freq" => DetectorConfig::Padim(PadimConfig {
                seed: o.seed,
                d: o.padim_d,
                variant: PadimVariant::Frequency,
                ..Default::default()
            }),
            "baseline" => DetectorConfig::Baseline(BaselineConfig::default()),
            "cfa" => DetectorConfig::Cfa(CfaConfig { seed: o.seed, ..Default::default() }),
            other => {
                return Err(Error::invalid(format!(
                    "unknown detector '{other}': choose {}",
                    Self::KINDS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
                )))
            }
        })
    }

    /// What the detector is fitted on.
    pub fn fit_input(&self) -> FitInput {
        match self {
            DetectorConfig::Patchcore(_) => FitInput::OwnedPatches,
            DetectorConfig::Padim(c) if c.variant == PadimVariant::Full => FitInput::WindowGrids,
            DetectorConfig::Padim(_) => FitInput::OwnedPatches,
            DetectorConfig::Baseline(_) => FitInput::ClipLogMels,
            DetectorConfig::Cfa(_) => FitInput::WindowGrids,
        }
    }

    /// The patches (increasing indices of `0..n`) that a fit on `n` patches looks at, when that is fewer than all
    /// of them: PatchCore under its cap (the seeded candidates of [`PatchCoreConfig::plan`], see
    /// [`coreset::random_subset`]); `None`: all of them. The rows at these indices, given as [`FitData::Subset`],
    /// fit the same detector as all `n` patches, so a fit on more patches than memory holds can read them in one
    /// pass and keep only these.
    pub fn fit_subset(&self, n: usize) -> Option<Vec<usize>> {
        match self {
            DetectorConfig::Patchcore(c) => {
                let plan = c.plan(n.max(1));
                (plan.candidates < n).then(|| coreset::random_subset(n, plan.candidates, c.seed))
            }
            _ => None,
        }
    }

    /// How its held-out normal clips are scored.
    pub fn held_out_rule(&self) -> HeldOutRule {
        match self {
            DetectorConfig::Patchcore(_) => HeldOutRule::LeaveRowsOut,
            _ => HeldOutRule::Refit,
        }
    }

    /// Floats per row of the detector's stored state for patches of `dims` dimensions.
    pub fn state_cols(&self, dims: usize) -> usize {
        match self {
            DetectorConfig::Patchcore(_) => dims,
            DetectorConfig::Padim(c) => c.state_cols(dims),
            DetectorConfig::Baseline(c) => c.state_cols(),
            DetectorConfig::Cfa(c) => c.state_cols(dims),
        }
    }

    /// Fills in the analysis geometry: the window's patch grid `[time, freq]` and the mel bins.
    pub fn with_geometry(mut self, grid_time: usize, grid_freq: usize, mel_bins: usize) -> Self {
        match &mut self {
            DetectorConfig::Patchcore(_) => {}
            DetectorConfig::Padim(c) => {
                c.grid_time = grid_time;
                c.grid_freq = grid_freq;
            }
            DetectorConfig::Baseline(c) => c.mel_bins = mel_bins,
            DetectorConfig::Cfa(c) => {
                c.grid_time = grid_time;
                c.grid_freq = grid_freq;
            }
        }
        self
    }

    /// True when the detector is fitted on whole window grids (PaDiM full: a Gaussian per grid position).
    pub fn needs_full_windows(&self) -> bool {
        self.fit_input() == FitInput::WindowGrids
    }

    /// True when the detector works on whole clips' log-mels rather than patches (the baseline).
    pub fn is_clip_level(&self) -> bool {
        self.fit_input() == FitInput::ClipLogMels
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] naming the bad parameter.
    pub fn validate(&self) -> Result<()> {
        match self {
            DetectorConfig::Patchcore(c) => c.validate(),
            DetectorConfig::Padim(c) => c.validate(),
            DetectorConfig::Baseline(c) => c.validate(),
            DetectorConfig::Cfa(c) => c.validate(),
        }
    }
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig::Patchcore(PatchCoreConfig::default())
    }
}

/// A fitted detector.
#[derive(Debug, Clone, PartialEq)]
pub enum Detector {
    /// PatchCore.
    Patchcore(PatchCore),
    /// PaDiM.
    Padim(Padim),
    /// The backbone-free baseline.
    Baseline(Baseline),
    /// CFA.
    Cfa(Cfa),
}

/// Scores of one clip's patches.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchScores {
    /// One score per patch, `[n]`, in the order of the query patches.
    pub patch: Vec<f32>,
    /// The clip score.
    pub clip: f32,
}

impl Detector {
    /// Fits the detector described by `config` on normal `patches` `[n, dims]`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] for empty or non-finite patches or a bad config.
    pub fn fit(config: &DetectorConfig, patches: &[f32], dims: usize) -> Result<Self> {
        Self::fit_on(config, FitData::Patches { patches, sources: &[] }, dims)
    }

    /// Fits the detector described by `config` on `data` (of the kind its [`FitInput`] asks; `dims` is the patch
    /// dimension, or for the baseline the front end's, unused).
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] for empty or non-finite input, data of another kind than the detector's, or a
    /// bad config.
    pub fn fit_on(config: &DetectorConfig, data: FitData<'_>, dims: usize) -> Result<Self> {
        if let (DetectorConfig::Patchcore(c), FitData::Subset { patches, sources, of }) = (config, &data) {
            let m = patches.len().checked_div(dims).unwrap_or(0);
            let plan = c.plan((*of).max(1));
            if m != plan.candidates.min(*of) {
                return Err(Error::invalid(format!(
                    "a subset of {m} patches for a PatchCore fit on {of} patches, which looks at {}",
                    plan.candidates
                )));
            }
            // The candidates are all that is given: the greedy chooses among every one of them.
            let plan = coreset::CoresetPlan { size: plan.size, candidates: m };
            return Ok(Detector::Patchcore(PatchCore::fit_with_plan(patches, sources, dims, c.clone(), plan)?));
        }
        let data = match data {
            FitData::Subset { patches, sources, .. } => FitData::Patches { patches, sources },
            d => d,
        };
        match (config, data) {
            (DetectorConfig::Patchcore(c), FitData::Patches { patches, sources }) => {
                Ok(Detector::Patchcore(PatchCore::fit_with_sources(patches, sources, dims, c.clone())?))
            }
            (DetectorConfig::Padim(c), FitData::Patches { patches, .. }) => {
                Ok(Detector::Padim(Padim::fit(patches, dims, c.clone())?))
            }
            (DetectorConfig::Cfa(c), FitData::Patches { patches, .. }) => {
                Ok(Detector::Cfa(Cfa::fit(patches, dims, c.clone())?))
            }
            (DetectorConfig::Baseline(c), FitData::LogMels(logmels)) => {
                Ok(Detector::Baseline(Baseline::fit(logmels, dims, c.clone())?))
            }
            (DetectorConfig::Baseline(_), _) => Err(Error::invalid(
                "the baseline is fitted on whole clips' log-mels (pipeline::Fitter), not on patches",
            )),
            (_, FitData::LogMels(_)) => Err(Error::invalid("this detector is fitted on patches, not on log-mels")),
            (_, FitData::Subset { .. }) => unreachable!("a subset is read as patches above"),
        }
    }

    /// Scores one window's patch grid `[time, freq, dims]` whose patches `owned` (row indices of the grid) are the
    /// window's own: every patch's score (the map), and the clip score of the owned ones.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] for a grid of another dimension, or a clip-level detector (the baseline).
    pub fn score_window(&self, grid: &PatchGrid, owned: std::ops::Range<usize>) -> Result<WindowScore> {
        if let Detector::Padim(p) = self {
            // PaDiM needs each patch's grid position, so the owned patches are taken from the whole window's scores.
            let patch = p.score_grid(&grid.data, grid.freq)?;
            let max = patch[owned].iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            return Ok(WindowScore { patch, clip: max, max_owned: max });
        }
        if let Detector::Cfa(c) = self {
            // CFA's descriptor takes each patch's grid coordinates.
            let patch = c.score_grid(&grid.data, grid.time, grid.freq)?;
            let max = patch[owned].iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            return Ok(WindowScore { patch, clip: max, max_owned: max });
        }
        if let Detector::Patchcore(pc) = self {
            // One nearest-neighbour search for the whole grid; the owned patches' clip score reuses its results.
            let nn = pc.nearest(&grid.data)?;
            if owned.is_empty() {
                return Ok(WindowScore { patch: nn.distance, clip: f32::NEG_INFINITY, max_owned: f32::NEG_INFINITY });
            }
            let own = patchcore::Nearest {
                distance: nn.distance[owned.clone()].to_vec(),
                index: nn.index[owned.clone()].to_vec(),
            };
            let d = grid.dims;
            let clip = pc.clip_score(&grid.data[owned.start * d..owned.end * d], &own);
            let max_owned = own.distance.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            return Ok(WindowScore { patch: nn.distance, clip, max_owned });
        }
        let all = self.score(&grid.data)?;
        if owned.is_empty() {
            return Ok(WindowScore { patch: all.patch, clip: f32::NEG_INFINITY, max_owned: f32::NEG_INFINITY });
        }
        let d = grid.dims;
        let own = self.score(&grid.data[owned.start * d..owned.end * d])?;
        let max_owned = own.patch.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        Ok(WindowScore { patch: all.patch, clip: own.clip, max_owned })
    }

    /// Clip score and unsmoothed raw map `[T, M]` of a whole clip's log-mel `[T, M]`, for a detector fitted on
    /// log-mels ([`FitInput::ClipLogMels`]); `None` for the others, which score windows.
    pub fn score_logmel(&self, logmel: &[f32]) -> Option<(f32, Vec<f32>)> {
        match self {
            Detector::Baseline(b) => Some(b.score(logmel)),
            _ => None,
        }
    }

    /// Prepares scoring normal clips (or parts) the detector was fitted on as if it had not seen them, for
    /// calibration ([`HeldOutRule::LeaveRowsOut`]): `pool` `[n, dims]` with `sources` `[n]` are candidate
    /// patches of the clips at hand. `None` when the detector does not leave rows out, or does not know its
    /// rows' sources (then its held-out clips are scored as they are).
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] for a pool of another dimension or without one source per patch.
    pub fn leave_out(
        &self,
        pool: Vec<f32>,
        sources: Vec<u64>,
        same: &(dyn Fn(u64, u64) -> bool + Sync),
    ) -> Result<Option<LeaveRowsOut<'_>>> {
        match self {
            Detector::Patchcore(pc) if !pc.sources().is_empty() => {
                Ok(Some(LeaveRowsOut::new(pc, pool, sources, same)?))
            }
            _ => Ok(None),
        }
    }

    /// The detector that a merge of banks fitted on shards keeps: from each shard's detector and its column scale
    /// (each shard's rows are multiplied by it column by column, to the merged patch weights). PatchCore: a coreset
    /// of the union of the memory banks ([`patchcore::merge_memory_banks`]).
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] for detectors that cannot be pooled exactly (PaDiM: its stored mean and
    /// inverse covariance do not give the counts and sums pooling needs; the baseline: whole-clip statistics with
    /// its own scale; CFA: each shard trained its own descriptor, whose outputs live in different spaces), or of
    /// different kinds.
    pub fn merge(config: &DetectorConfig, parts: &[(&Detector, Vec<f32>)]) -> Result<Detector> {
        if let DetectorConfig::Cfa(_) = config {
            return Err(Error::invalid(
                "it is a CFA detector: CFA banks cannot be merged. Each bank trained its own patch descriptor and took \
                 its centroids in that descriptor's output space, so the shards' centroids and weights do not pool \
                 (there is no exact union as for PatchCore's memory banks); fit one bank on all the clips instead",
            ));
        }
        let DetectorConfig::Patchcore(pc) = config else {
            return Err(Error::invalid(format!(
                "it is a {} detector: only PatchCore banks can be merged. A PaDiM bank stores each Gaussian's mean and \
                 inverse covariance but not the patch counts and sums that pooling needs, and the baseline stores \
                 whole-clip statistics; fit one bank on all the clips instead",
                parts.first().map_or("", |p| p.0.kind())
            )));
        };
        let mut shards = Vec::with_capacity(parts.len());
        for (d, scale) in parts {
            let Detector::Patchcore(p) = d else {
                return Err(Error::invalid("the banks' members are detectors of different kinds"));
            };
            shards.push((p, scale.as_slice()));
        }
        Ok(Detector::Patchcore(patchcore::merge_memory_banks(&shards, pc)?))
    }

    /// The source id of each stored row (see [`patchcore::source_id`]): PatchCore's memory-bank rows when known,
    /// else empty.
    pub fn row_sources(&self) -> &[u64] {
        match self {
            Detector::Patchcore(pc) => pc.sources(),
            _ => &[],
        }
    }

    /// Tensors the detector stores beside its state ([`Detector::state`]): PatchCore's row sources.
    pub fn extra_tensors(&self) -> Vec<ExtraTensor> {
        match self {
            Detector::Patchcore(pc) if !pc.sources().is_empty() => vec![ExtraTensor {
                suffix: "sources",
                dtype: Dtype::U64,
                shape: vec![pc.len()],
                bytes: pc.sources().iter().flat_map(|v| v.to_le_bytes()).collect(),
            }],
            _ => Vec::new(),
        }
    }

    /// The detector with a stored extra tensor read back (see [`Detector::extra_tensors`]): `suffix`, dtype,
    /// shape and bytes as stored.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] for a tensor this detector does not store, or of the wrong dtype or shape.
    pub fn with_extra_tensor(self, suffix: &str, dtype: Dtype, shape: &[usize], bytes: &[u8]) -> Result<Detector> {
        match (self, suffix) {
            (Detector::Patchcore(pc), "sources") => {
                if dtype != Dtype::U64 || shape != [pc.len()] {
                    return Err(Error::invalid(format!(
                        "row sources have dtype {dtype:?} and shape {shape:?}: expected U64 [{}]",
                        pc.len()
                    )));
                }
                let ids = bytes.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
                Ok(Detector::Patchcore(pc.with_sources(ids)?))
            }
            (d, _) => Err(Error::invalid(format!("a {} member stores no '{suffix}' tensor", d.kind()))),
        }
    }

    /// Scores all patches of one clip `[n, dims]`.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] if the patch dimension differs from the fitted one.
    pub fn score(&self, patches: &[f32]) -> Result<PatchScores> {
        match self {
            Detector::Patchcore(pc) => {
                let nn = pc.nearest(patches)?;
                let clip = pc.clip_score(patches, &nn);
                Ok(PatchScores { patch: nn.distance, clip })
            }
            Detector::Padim(p) => {
                let patch = p.score(patches)?;
                let clip = patch.iter().cloned().fold(0.0f32, f32::max);
                Ok(PatchScores { patch, clip })
            }
            Detector::Cfa(c) => {
                let patch = c.score_grid(patches, c.config.grid_time, c.config.grid_freq)?;
                let clip = patch.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                Ok(PatchScores { patch, clip })
            }
            Detector::Baseline(_) => Err(crate::Error::invalid(
                "the baseline scores whole clips' log-mels (pipeline::score_logmel), not patches",
            )),
        }
    }

    /// The configuration it was fitted with.
    pub fn config(&self) -> DetectorConfig {
        match self {
            Detector::Patchcore(pc) => DetectorConfig::Patchcore(pc.config.clone()),
            Detector::Padim(p) => DetectorConfig::Padim(p.config.clone()),
            Detector::Baseline(b) => DetectorConfig::Baseline(b.config.clone()),
            Detector::Cfa(c) => DetectorConfig::Cfa(c.config.clone()),
        }
    }

    /// Patch dimension.
    pub fn dims(&self) -> usize {
        match self {
            Detector::Patchcore(pc) => pc.dims,
            Detector::Padim(p) => p.dims,
            Detector::Baseline(b) => b.dims,
            Detector::Cfa(c) => c.dims,
        }
    }

    /// Short name: `patchcore`.
    pub fn kind(&self) -> &'static str {
        match self {
            Detector::Patchcore(_) => "patchcore",
            Detector::Padim(p) => match p.config.variant {
                PadimVariant::Full => "padim",
                PadimVariant::Frequency => "padim-freq",
            },
            Detector::Baseline(_) => "baseline",
            Detector::Cfa(_) => "cfa",
        }
    }

    /// The stored state `[rows, cols]` row-major (PatchCore: the memory bank; PaDiM: mean and inverse covariance
    /// per Gaussian; baseline: band statistics and the normal clips' features; CFA: the descriptor's weights then
    /// the centroids) with its rows.
    pub fn state(&self) -> (&[f32], usize) {
        match self {
            Detector::Patchcore(pc) => (&pc.memory_bank, pc.len()),
            Detector::Padim(p) => (&p.state, p.len()),
            Detector::Baseline(b) => (&b.state, b.rows()),
            Detector::Cfa(c) => (&c.state, c.len()),
        }
    }

    /// Rebuilds a fitted detector from its stored state (see [`Detector::state`]).
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] for a bad config or a state of the wrong size.
    pub fn from_state(config: &DetectorConfig, dims: usize, state: Vec<f32>) -> Result<Self> {
        config.validate()?;
        Ok(match config {
            DetectorConfig::Patchcore(c) => Detector::Patchcore(PatchCore::from_memory_bank(state, dims, c.clone())),
            DetectorConfig::Padim(c) => Detector::Padim(Padim::from_state(state, dims, c.clone())?),
            DetectorConfig::Baseline(c) => Detector::Baseline(Baseline::from_state(state, dims, c.clone())?),
            DetectorConfig::Cfa(c) => Detector::Cfa(Cfa::from_state(state, dims, c.clone())?),
        })
    }
}
