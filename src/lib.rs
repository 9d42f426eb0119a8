//! sonomaly: audio anomaly detection that shows where and when a sound is abnormal.
//!
//! The pipeline, one module per stage, following the data:
//!
//! ```text
//! audio -> spectrogram::LogMel -> backbone::Backbone -> embedding -> detector::PatchCore -> anomaly_map
//! ```
//!
//! [`pipeline`] ties the stages together for whole clips, streams and fitting; [`bank`] stores a fitted detector
//! with everything needed to score. The command line (`src/main.rs`) and the wasm-bindgen API (`web`, wasm32
//! only) are thin faces over the same code.

pub mod anomaly_map;
pub mod audio;
pub mod backbone;
pub mod bank;
pub mod cnn;
pub mod detector;
pub mod embedding;
pub mod error;
#[cfg(not(target_arch = "wasm32"))]
pub mod eval;
mod linalg;
pub mod merge;
pub mod metrics;
#[cfg(not(target_arch = "wasm32"))]
pub mod mix;
pub mod pipeline;
#[cfg(not(target_arch = "wasm32"))]
pub mod render;
pub mod spectrogram;
pub mod threshold;
#[cfg(target_arch = "wasm32")]
pub mod web;

pub use error::{Error, Result};
