//! Detectors: fitted on the patches of normal clips, they give each query patch an anomaly score.
//!
//! Every detector takes patches `[n, dims]` (see [`crate::embedding::PatchGrid`]) and returns one score per
//! patch (higher = more anomalous) plus a clip score.

pub mod baseline;
pub mod coreset;
pub mod padim;
pub mod patchcore;

use serde::{Deserialize, Serialize};

pub use baseline::{Baseline, BaselineConfig};
pub use padim::{Padim, PadimConfig, PadimVariant};
pub use patchcore::{PatchCore, PatchCoreConfig};

use crate::error::Result;

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
}

impl DetectorConfig {
    /// Floats per row of the detector's stored state for patches of `dims` dimensions.
    pub fn state_cols(&self, dims: usize) -> usize {
        match self {
            DetectorConfig::Patchcore(_) => dims,
            DetectorConfig::Padim(c) => c.state_cols(dims),
            DetectorConfig::Baseline(c) => c.state_cols(),
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
        }
        self
    }

    /// True when the detector is fitted on whole window grids (PaDiM full: a Gaussian per grid position).
    pub fn needs_full_windows(&self) -> bool {
        matches!(self, DetectorConfig::Padim(c) if c.variant == PadimVariant::Full)
    }

    /// True when the detector works on whole clips' log-mels rather than patches (the baseline).
    pub fn is_clip_level(&self) -> bool {
        matches!(self, DetectorConfig::Baseline(_))
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
        match config {
            DetectorConfig::Patchcore(c) => Ok(Detector::Patchcore(PatchCore::fit(patches, dims, c.clone())?)),
            DetectorConfig::Padim(c) => Ok(Detector::Padim(Padim::fit(patches, dims, c.clone())?)),
            DetectorConfig::Baseline(_) => Err(crate::Error::invalid(
                "the baseline is fitted on whole clips' log-mels (pipeline::Fitter), not on patches",
            )),
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
        }
    }

    /// Patch dimension.
    pub fn dims(&self) -> usize {
        match self {
            Detector::Patchcore(pc) => pc.dims,
            Detector::Padim(p) => p.dims,
            Detector::Baseline(b) => b.dims,
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
        }
    }

    /// The stored state `[rows, cols]` row-major (PatchCore: the memory bank; PaDiM: mean and inverse covariance
    /// per Gaussian; baseline: band statistics and the normal clips' features) with its rows.
    pub fn state(&self) -> (&[f32], usize) {
        match self {
            Detector::Patchcore(pc) => (&pc.memory_bank, pc.len()),
            Detector::Padim(p) => (&p.state, p.len()),
            Detector::Baseline(b) => (&b.state, b.rows()),
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
        })
    }
}
