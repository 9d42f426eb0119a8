//! Detectors: fitted on the patches of normal clips, they give each query patch an anomaly score.
//!
//! Every detector takes patches `[n, dims]` (see [`crate::embedding::PatchGrid`]) and returns one score per
//! patch (higher = more anomalous) plus a clip score.

pub mod patchcore;

use serde::{Deserialize, Serialize};

pub use patchcore::{PatchCore, PatchCoreConfig};

use crate::error::Result;

/// Which detector to fit, with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DetectorConfig {
    /// PatchCore with a greedy coreset memory bank.
    Patchcore(PatchCoreConfig),
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
        }
    }

    /// The configuration it was fitted with.
    pub fn config(&self) -> DetectorConfig {
        match self {
            Detector::Patchcore(pc) => DetectorConfig::Patchcore(pc.config.clone()),
        }
    }

    /// Patch dimension.
    pub fn dims(&self) -> usize {
        match self {
            Detector::Patchcore(pc) => pc.dims,
        }
    }

    /// Short name: `patchcore`.
    pub fn kind(&self) -> &'static str {
        match self {
            Detector::Patchcore(_) => "patchcore",
        }
    }
}
