//! Bank files: everything needed to score, in one safetensors file.
//!
//! Layout: a safetensors file (tensors + a string map header) whose header key `sonomaly` holds [`BankMeta`] as
//! JSON: format name and version, detector kind and parameters, front-end config, backbone identity (name,
//! SHA-256 of the ONNX bytes, output names), embedding config, clips and seconds fitted, normal-score statistics
//! and thresholds, creation time, and the SHA-256 of the tensor bytes. Tensors: `memory_bank` `[n, dims]` f32
//! (PatchCore).
//!
//! Loading checks, before allocating anything, that the header parses, that the file is as long as the header
//! says, that the tensor shapes agree with the metadata, and that the data hash matches; a bank made for another
//! backbone, front end or embedding is refused by [`Bank::check_compatible`] with an error naming both sides.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::backbone::{sha256_hex, BackboneIdentity};
use crate::detector::{Detector, DetectorConfig, PatchCore};
use crate::embedding::EmbeddingConfig;
use crate::error::{Error, Result};
use crate::spectrogram::LogMelConfig;
use crate::threshold::NormalStats;

/// Format name in every bank's metadata.
pub const FORMAT: &str = "sonomaly-bank";
/// Current format version; banks of other versions are refused.
pub const VERSION: u32 = 1;
const META_KEY: &str = "sonomaly";

/// A bank's metadata (stored as JSON in the safetensors header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BankMeta {
    /// Always [`FORMAT`].
    pub format: String,
    /// Format version, [`VERSION`].
    pub version: u32,
    /// sonomaly version that wrote it.
    pub writer: String,
    /// Detector kind and parameters.
    pub detector: DetectorConfig,
    /// Patch dimension `D`.
    pub dims: usize,
    /// Rows of the memory bank.
    pub memory_bank_rows: usize,
    /// The front end the patches were computed with.
    pub front_end: LogMelConfig,
    /// The backbone the patches were computed with.
    pub backbone: BackboneIdentity,
    /// Layers and grid of the patches.
    pub embedding: EmbeddingConfig,
    /// Highest frequency the fit had signal in (the lowest Nyquist frequency of the normal clips as the model saw
    /// them), Hz; mel bands above it are not judged. `None`: all bands.
    #[serde(default)]
    pub band_limit_hz: Option<f32>,
    /// Normal clips fitted.
    pub clips_fitted: usize,
    /// Seconds of normal audio fitted.
    pub seconds_fitted: f64,
    /// Held-out normal clip scores and their gamma fit.
    pub normal_scores: NormalStats,
    /// Held-out normal maxima of the temporal curve and their gamma fit.
    pub normal_curve_peaks: NormalStats,
    /// Clip-score threshold (label-free default: `normal_scores.threshold`).
    pub threshold: f32,
    /// Temporal-curve threshold for segments (label-free default: `normal_curve_peaks.threshold`).
    pub segment_threshold: f32,
    /// Creation time, ISO 8601 UTC.
    pub created: String,
    /// SHA-256 of the tensor bytes followed by this metadata's JSON with this field empty, lower-case hex: any
    /// change to the memory bank or to a threshold, a config value or a name is detected at loading.
    pub data_sha256: String,
}

/// A fitted detector with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Bank {
    /// Metadata.
    pub meta: BankMeta,
    /// The fitted detector.
    pub detector: Detector,
}

/// Summary for people (CLI `info`, the page's "loaded" panel).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BankInfo {
    /// Detector kind, e.g. `patchcore`.
    pub detector: String,
    /// Backbone name.
    pub backbone: String,
    /// First 12 hex digits of the backbone's SHA-256.
    pub backbone_sha256: String,
    /// Front-end summary, e.g. `44100 Hz, 96 mel bins, hop 1024`.
    pub front_end: String,
    /// Layers, comma-separated.
    pub layers: String,
    /// Memory bank rows x dims.
    pub memory_bank: String,
    /// Normal clips fitted.
    pub clips_fitted: usize,
    /// Seconds fitted.
    pub seconds_fitted: f64,
    /// Clip threshold.
    pub threshold: f32,
    /// Segment threshold.
    pub segment_threshold: f32,
    /// Creation time.
    pub created: String,
    /// File size, bytes (0 before saving).
    pub size_bytes: usize,
}

/// The checksum stored in [`BankMeta::data_sha256`]: SHA-256 of `data` followed by `meta`'s JSON with
/// `data_sha256` empty.
pub fn checksum(meta: &BankMeta, data: &[u8]) -> String {
    let mut m = meta.clone();
    m.data_sha256 = String::new();
    let json = serde_json::to_vec(&m).expect("bank metadata serialises");
    let mut all = Vec::with_capacity(data.len() + json.len());
    all.extend_from_slice(data);
    all.extend_from_slice(&json);
    sha256_hex(&all)
}

/// True if `bytes` start like a bank file (a safetensors header with sonomaly metadata), whether or not the
/// rest is intact or of this version: used to tell a bank that may be overwritten from any other file.
pub fn looks_like_bank(bytes: &[u8]) -> bool {
    SafeTensors::read_metadata(bytes)
        .map(|(_, m)| m.metadata().as_ref().is_some_and(|m| m.contains_key(META_KEY)))
        .unwrap_or(false)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Current time as ISO 8601 UTC (`2026-11-29T22:03:31Z`).
pub fn now_iso8601() -> String {
    #[cfg(target_arch = "wasm32")]
    {
        let s: String = js_sys::Date::new_0().to_iso_string().into();
        // 2026-11-29T22:03:31.123Z -> drop milliseconds
        match s.find('.') {
            Some(i) => format!("{}Z", &s[..i]),
            None => s,
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        iso8601_from_unix(secs)
    }
}

/// Formats Unix seconds as ISO 8601 UTC (civil-from-days, H. Hinnant's algorithm).
pub fn iso8601_from_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl Bank {
    /// The clip-score threshold.
    pub fn threshold(&self) -> f32 {
        self.meta.threshold
    }

    /// Highest frequency judged, Hz (infinite when the fit had signal in every band).
    pub fn band_limit_hz(&self) -> f32 {
        self.meta.band_limit_hz.unwrap_or(f32::INFINITY)
    }

    /// Serialises to safetensors bytes.
    ///
    /// # Errors
    /// [`Error::Bank`] if serialisation fails.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let (state, rows) = self.detector.state();
        let cols = self.detector.config().state_cols(self.detector.dims());
        let data = f32_bytes(state);
        let mut meta = self.meta.clone();
        meta.data_sha256 = checksum(&meta, &data);
        let json = serde_json::to_string(&meta).map_err(|e| Error::bank(format!("metadata: {e}")))?;
        let view = TensorView::new(Dtype::F32, vec![rows, cols], &data)
            .map_err(|e| Error::bank(format!("memory bank tensor: {e}")))?;
        let info = HashMap::from([(META_KEY.to_string(), json)]);
        safetensors::serialize([("memory_bank", view)], Some(info)).map_err(|e| Error::bank(format!("writing: {e}")))
    }

    /// Parses and checks bank bytes.
    ///
    /// # Errors
    /// [`Error::Bank`] naming the problem: not a safetensors file, truncated, no or malformed metadata, another
    /// format or version, tensor shape or dtype not matching the metadata, data hash mismatch (corruption).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 8 {
            return Err(Error::bank(format!(
                "the file is {} bytes long, too short to be a bank (is it empty or truncated?)",
                bytes.len()
            )));
        }
        let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        if header_len > bytes.len() as u64 - 8 {
            return Err(Error::bank(format!(
                "the header claims {header_len} bytes but the file has {}: not a bank file, or truncated",
                bytes.len()
            )));
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            Error::bank(format!("not a valid bank file (safetensors: {e}); was it truncated or corrupted?"))
        })?;
        let (_, metadata) =
            SafeTensors::read_metadata(bytes).map_err(|e| Error::bank(format!("unreadable header: {e}")))?;
        let json = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| Error::bank("this safetensors file has no sonomaly metadata: it is not a bank"))?;
        let probe: serde_json::Value =
            serde_json::from_str(json).map_err(|e| Error::bank(format!("metadata is not JSON: {e}")))?;
        if probe.get("format").and_then(|v| v.as_str()) != Some(FORMAT) {
            return Err(Error::bank("metadata does not name the sonomaly bank format"));
        }
        let version = probe.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        if version != VERSION as u64 {
            return Err(Error::bank(format!(
                "bank format version {version} is not supported by this sonomaly (reads version {VERSION}); \
                 refit the bank with this version"
            )));
        }
        let meta: BankMeta =
            serde_json::from_str(json).map_err(|e| Error::bank(format!("metadata is malformed: {e}")))?;
        let t = st.tensor("memory_bank").map_err(|_| Error::bank("the bank has no 'memory_bank' tensor"))?;
        if t.dtype() != Dtype::F32 {
            return Err(Error::bank(format!("memory_bank has dtype {:?}, expected F32", t.dtype())));
        }
        let expect = [meta.memory_bank_rows, meta.detector.state_cols(meta.dims)];
        if t.shape() != expect || meta.dims == 0 || meta.memory_bank_rows == 0 {
            return Err(Error::bank(format!(
                "memory_bank has shape {:?} but the metadata says {:?}",
                t.shape(),
                expect
            )));
        }
        let data = t.data();
        if checksum(&meta, data) != meta.data_sha256 {
            return Err(Error::bank(
                "the bank's contents do not match their checksum: the file is corrupted (or was edited by hand)",
            ));
        }
        let memory_bank: Vec<f32> =
            data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
        if memory_bank.iter().any(|v| !v.is_finite()) {
            return Err(Error::bank("the memory bank holds non-finite values"));
        }
        let detector = match &meta.detector {
            DetectorConfig::Patchcore(c) => {
                c.validate().map_err(|e| Error::bank(format!("detector parameters: {e}")))?;
                Detector::Patchcore(PatchCore::from_memory_bank(memory_bank, meta.dims, c.clone()))
            }
            other => Detector::from_state(other, meta.dims, memory_bank)
                .map_err(|e| Error::bank(format!("detector state: {e}")))?,
        };
        if !(meta.threshold.is_finite() && meta.segment_threshold.is_finite()) {
            return Err(Error::bank("the thresholds are not finite numbers"));
        }
        Ok(Bank { meta, detector })
    }

    /// Refuses a bank made with another backbone, front end or embedding than `backbone`/`front_end`.
    ///
    /// # Errors
    /// [`Error::Bank`] naming what differs, with both values.
    pub fn check_compatible(&self, backbone: &BackboneIdentity, front_end: &LogMelConfig) -> Result<()> {
        let b = &self.meta.backbone;
        if b.sha256 != backbone.sha256 || b.name != backbone.name {
            return Err(Error::bank(format!(
                "this bank was fitted with backbone '{}' (sha256 {}), but the loaded backbone is '{}' (sha256 {}); \
                 load the matching backbone or refit the bank",
                b.name,
                &b.sha256[..b.sha256.len().min(12)],
                backbone.name,
                &backbone.sha256[..backbone.sha256.len().min(12)]
            )));
        }
        if &self.meta.front_end != front_end {
            return Err(Error::bank(format!(
                "this bank was fitted with front end {} but the backbone uses {}",
                front_end_summary(&self.meta.front_end),
                front_end_summary(front_end)
            )));
        }
        Ok(())
    }

    /// Summary for people.
    pub fn info(&self) -> BankInfo {
        let m = &self.meta;
        BankInfo {
            detector: self.detector.kind().to_string(),
            backbone: m.backbone.name.clone(),
            backbone_sha256: m.backbone.sha256.chars().take(12).collect(),
            front_end: front_end_summary(&m.front_end),
            layers: m.embedding.layers.join(","),
            memory_bank: format!("{} x {}", m.memory_bank_rows, m.dims),
            clips_fitted: m.clips_fitted,
            seconds_fitted: m.seconds_fitted,
            threshold: m.threshold,
            segment_threshold: m.segment_threshold,
            created: m.created.clone(),
            size_bytes: 0,
        }
    }
}

/// `44100 Hz, 96 mel bins, frame 2048, hop 1024` and the like.
pub fn front_end_summary(c: &LogMelConfig) -> String {
    format!(
        "{} Hz, {} mel bins, frame {}, hop {}{}",
        c.sample_rate,
        c.n_mels,
        c.n_fft,
        c.hop_length,
        if c.peak_normalize { ", peak-normalised" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601_from_unix(1_795_989_811), "2026-11-29T22:03:31Z");
    }

    #[test]
    fn rejects_garbage() {
        assert!(Bank::from_bytes(&[]).is_err());
        assert!(Bank::from_bytes(&[1, 2, 3]).is_err());
        let mut b = vec![0xffu8; 64];
        b[..8].copy_from_slice(&1000u64.to_le_bytes());
        let e = Bank::from_bytes(&b).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
