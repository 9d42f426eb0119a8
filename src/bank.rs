//! Bank files: everything needed to score, in one safetensors file.
//!
//! A bank holds one or more **members**, each a detector fitted on its own patch embedding of the same front end
//! and backbone (e.g. PatchCore on log-mel patches and PatchCore on EfficientAT blocks). Each member is
//! calibrated on held-out normal clips: its clip scores and maps become robust z-scores ([`Norm`]), so members
//! are comparable and the bank's clip score, temporal curve and map are the largest member z-score (max fusion,
//! as in DCASE Task 2 ensembles of z-normalised systems).
//!
//! Layout: a safetensors file whose header key `sonomaly` holds [`BankMeta`] as JSON: format name and version,
//! front end, backbone identity (name, SHA-256 of the ONNX bytes, output names), the members (name, detector and
//! parameters, embedding, held-out normal scores and their normalisation), the fused calibration and thresholds,
//! band levels of the normal clips, clips and seconds fitted, creation time, and a SHA-256 over the tensors and
//! the metadata. Tensors: `member{i}` `[rows, cols]` f32, one per member (PatchCore: the memory bank).
//!
//! Version 1 banks (one detector, raw distances, a gamma threshold) still load: they become a one-member bank whose
//! normalisation is the identity, so they score exactly as before; saving writes version 2.
//!
//! Loading checks, before allocating anything, that the header parses, that the file is as long as the header
//! says, that the tensor shapes agree with the metadata, and that the checksum matches; a bank made for another
//! backbone or front end is refused by [`Bank::check_compatible`] with an error naming both sides.

use std::collections::HashMap;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::backbone::{sha256_hex, BackboneIdentity};
use crate::detector::{Detector, DetectorConfig};
use crate::embedding::EmbeddingConfig;
use crate::error::{Error, Result};
use crate::spectrogram::LogMelConfig;
use crate::threshold::{Norm, NormalStats, ThresholdRule, ThresholdSupport};

/// Format name in every bank's metadata.
pub const FORMAT: &str = "sonomaly-bank";
/// Current format version (written); version 1 is still read.
pub const VERSION: u32 = 2;
const META_KEY: &str = "sonomaly";

/// One member of a bank: a detector on one patch embedding, with its calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberMeta {
    /// Short name for people, e.g. `logmel` or `features.12+features.15`.
    pub name: String,
    /// Detector kind and parameters.
    pub detector: DetectorConfig,
    /// Patch dimension `D`.
    pub dims: usize,
    /// Rows of the stored state (PatchCore: memory bank rows).
    pub state_rows: usize,
    /// Layers and grid of the patches, with the weights set at fit time.
    pub embedding: EmbeddingConfig,
    /// Held-out normal clip scores (raw detector units) and their gamma fit.
    pub normal_scores: NormalStats,
    /// Held-out normal maxima of the temporal curve (raw units) and their gamma fit.
    pub normal_curve_peaks: NormalStats,
    /// Raw clip score -> z-score.
    pub score_norm: Norm,
    /// Raw map value -> z-score (from the held-out curve peaks, so a normal clip's peak sits near 0).
    pub map_norm: Norm,
}

/// Mean and spread of each mel band's level over the normal clips: tells a recording of another sound from the
/// sound the bank learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandLevels {
    /// Per mel band `[M]`: mean over the normal clips of the clip's mean log-mel value.
    pub mean: Vec<f32>,
    /// Per mel band `[M]`: standard deviation of the clips' mean log-mel values, floored (see
    /// [`crate::pipeline::LEVEL_STD_FLOOR`]).
    pub std: Vec<f32>,
}

/// A bank's metadata (stored as JSON in the safetensors header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BankMeta {
    /// Always [`FORMAT`].
    pub format: String,
    /// Format version, [`VERSION`].
    pub version: u32,
    /// sonomaly version that wrote it.
    pub writer: String,
    /// The front end the patches were computed with.
    pub front_end: LogMelConfig,
    /// The backbone the patches were computed with.
    pub backbone: BackboneIdentity,
    /// Highest frequency the fit had signal in (the lowest Nyquist frequency of the normal clips as the model saw
    /// them), Hz; mel bands above it are not judged. `None`: all bands.
    #[serde(default)]
    pub band_limit_hz: Option<f32>,
    /// Normal clips fitted.
    pub clips_fitted: usize,
    /// Seconds of normal audio fitted.
    pub seconds_fitted: f64,
    /// The members, in the order of their tensors.
    pub members: Vec<MemberMeta>,
    /// Held-out normal clip scores of the fused bank (z units; raw units for a version 1 bank).
    pub fused_scores: Vec<f32>,
    /// Held-out normal temporal-curve maxima of the fused bank (same units).
    pub fused_curve_peaks: Vec<f32>,
    /// How the thresholds were set.
    pub threshold_rule: ThresholdRule,
    /// Clip-score threshold (label-free default).
    pub threshold: f32,
    /// Temporal-curve threshold for segments (label-free default).
    pub segment_threshold: f32,
    /// Band levels of the normal clips (`None` in version 1 banks).
    #[serde(default)]
    pub band_levels: Option<BandLevels>,
    /// Creation time, ISO 8601 UTC.
    pub created: String,
    /// SHA-256 of the tensor bytes (in member order) followed by this metadata's JSON with this field empty,
    /// lower-case hex: any change to a memory bank, a threshold, a config value or a name is detected at loading.
    pub data_sha256: String,
}

/// Version 1 metadata: one detector, raw distances (read only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BankMetaV1 {
    format: String,
    version: u32,
    writer: String,
    detector: DetectorConfig,
    dims: usize,
    memory_bank_rows: usize,
    front_end: LogMelConfig,
    backbone: BackboneIdentity,
    embedding: EmbeddingConfig,
    #[serde(default)]
    band_limit_hz: Option<f32>,
    clips_fitted: usize,
    seconds_fitted: f64,
    normal_scores: NormalStats,
    normal_curve_peaks: NormalStats,
    threshold: f32,
    segment_threshold: f32,
    created: String,
    data_sha256: String,
}

/// A fitted bank: its metadata and one fitted detector per member.
#[derive(Debug, Clone, PartialEq)]
pub struct Bank {
    /// Metadata.
    pub meta: BankMeta,
    /// The fitted detectors, one per [`BankMeta::members`] entry.
    pub detectors: Vec<Detector>,
}

/// Summary for people (CLI `info`, the page's "loaded" panel).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BankInfo {
    /// Detector kinds of the members, e.g. `patchcore` or `patchcore + patchcore`.
    pub detector: String,
    /// Backbone name.
    pub backbone: String,
    /// First 12 hex digits of the backbone's SHA-256.
    pub backbone_sha256: String,
    /// Front-end summary, e.g. `44100 Hz, 96 mel bins, hop 1024`.
    pub front_end: String,
    /// Layers of each member, members separated by ` + `, e.g. `logmel + features.12,features.15`.
    pub layers: String,
    /// Stored rows x dims of each member, separated by ` + `.
    pub memory_bank: String,
    /// Units of scores and thresholds: `z` (robust z-scores against held-out normal clips) or `distance`
    /// (version 1 banks).
    pub units: String,
    /// Normal clips fitted.
    pub clips_fitted: usize,
    /// Seconds fitted.
    pub seconds_fitted: f64,
    /// Clip threshold.
    pub threshold: f32,
    /// Segment threshold.
    pub segment_threshold: f32,
    /// Held-out normal units the thresholds were set from (clips, or parts of the clip for a bank fitted on one).
    pub held_out_units: usize,
    /// True when the threshold rests on too little normal audio to be trusted ([`Bank::threshold_support`]).
    pub threshold_rough: bool,
    /// For a rough threshold, the sentence to show (what is rough, why, how much more normal audio to fit on);
    /// `None` otherwise.
    pub threshold_note: Option<String>,
    /// Creation time.
    pub created: String,
    /// File size, bytes (0 before saving).
    pub size_bytes: usize,
}

/// The checksum stored in [`BankMeta::data_sha256`]: SHA-256 of the tensors' bytes in member order followed by
/// `meta`'s JSON with `data_sha256` empty.
pub fn checksum(meta: &BankMeta, data: &[&[u8]]) -> String {
    let mut m = meta.clone();
    m.data_sha256 = String::new();
    checksum_of(&serde_json::to_vec(&m).expect("bank metadata serialises"), data)
}

fn checksum_of(json: &[u8], data: &[&[u8]]) -> String {
    let mut all = Vec::with_capacity(data.iter().map(|d| d.len()).sum::<usize>() + json.len());
    for d in data {
        all.extend_from_slice(d);
    }
    all.extend_from_slice(json);
    sha256_hex(&all)
}

/// Name of member `i`'s tensor.
fn tensor_name(i: usize) -> String {
    format!("member{i}")
}

/// Name of member `i`'s extra tensor `suffix` (see [`Detector::extra_tensors`]), e.g. `member0.sources`.
fn extra_name(i: usize, suffix: &str) -> String {
    format!("member{i}.{suffix}")
}

/// The tensors a bank stores, in checksum order: each member's state (`member{i}`, F32 `[rows, cols]`), then each
/// member's extra tensors (`member{i}.{suffix}`, e.g. PatchCore's row sources, U64 `[rows]`) in member order and by
/// suffix: (name, bytes, dtype, shape).
fn tensor_bytes(detectors: &[Detector]) -> Vec<(String, Vec<u8>, Dtype, Vec<usize>)> {
    let mut out: Vec<_> = detectors
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let (state, rows) = d.state();
            (tensor_name(i), f32_bytes(state), Dtype::F32, vec![rows, d.config().state_cols(d.dims())])
        })
        .collect();
    for (i, d) in detectors.iter().enumerate() {
        let mut extra = d.extra_tensors();
        extra.sort_by_key(|t| t.suffix);
        out.extend(extra.into_iter().map(|t| (extra_name(i, t.suffix), t.bytes, t.dtype, t.shape)));
    }
    out
}

/// True if `bytes` start like a bank file (a safetensors header with sonomaly metadata), whether or not the
/// rest is intact or of this version: used to tell a bank that may be overwritten from any other file.
pub fn looks_like_bank(bytes: &[u8]) -> bool {
    SafeTensors::read_metadata(bytes)
        .map(|(_, m)| m.metadata().as_ref().is_some_and(|m| m.contains_key(META_KEY)))
        .unwrap_or(false)
}

/// True if the file at `path` starts like a bank file ([`looks_like_bank`]), reading only its header (at most
/// 100 MB): to tell a bank from a recording without reading either whole. False if it cannot be read.
#[cfg(not(target_arch = "wasm32"))]
pub fn file_looks_like_bank(path: &std::path::Path) -> bool {
    use std::io::Read;
    let Ok(mut file) = std::fs::File::open(path) else { return false };
    let mut head = [0u8; 8];
    if file.read_exact(&mut head).is_err() {
        return false;
    }
    let n = u64::from_le_bytes(head);
    if n > 100_000_000 {
        return false;
    }
    // The header alone (safetensors' own reader wants the tensors' bytes too).
    let mut header = Vec::new();
    if file.take(n).read_to_end(&mut header).is_err() {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(&header)
        .is_ok_and(|h| h.get("__metadata__").and_then(|m| m.get(META_KEY)).is_some())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The temporary files of [`write_file_atomically`] calls in progress, for [`remove_partial_files`].
#[cfg(not(target_arch = "wasm32"))]
static PARTIALS: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes the temporary files of the [`write_file_atomically`] calls in progress: for a handler of Ctrl-C or
/// SIGTERM, which ends the process before those calls can clean up (the files they would have replaced are left
/// as they were).
#[cfg(not(target_arch = "wasm32"))]
pub fn remove_partial_files() {
    let mut partials = PARTIALS.lock().unwrap_or_else(|e| e.into_inner());
    for p in partials.drain(..) {
        let _ = std::fs::remove_file(p);
    }
}

/// Writes `bytes` to `path` through a temporary file beside it, then renames it into place: an interrupted write
/// never leaves half a bank, and the temporary name (`.<name>.<process id>.<n>.partial`, created new) never
/// replaces a file that is already there. The caller decides whether `path` may be overwritten. While the call
/// runs, the temporary file is listed for [`remove_partial_files`].
///
/// # Errors
/// [`Error::Io`] naming the file if writing or renaming fails (the temporary file is removed).
#[cfg(not(target_arch = "wasm32"))]
pub fn write_file_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let name = path.file_name().map_or_else(|| "bank".into(), |n| n.to_string_lossy().into_owned());
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let io = |e: std::io::Error| Error::Io { context: format!("writing {}", path.display()), cause: e };
    let (tmp, mut file) = (0u32..)
        .map(|n| dir.join(format!(".{name}.{}.{n}.partial", std::process::id())))
        .find_map(|t| match std::fs::OpenOptions::new().write(true).create_new(true).open(&t) {
            Ok(f) => Some(Ok((t, f))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => None,
            Err(e) => Some(Err(e)),
        })
        .expect("an unused temporary name")
        .map_err(io)?;
    let partials = || PARTIALS.lock().unwrap_or_else(|e| e.into_inner());
    partials().push(tmp.clone());
    let written = file.write_all(bytes).and_then(|_| file.sync_all()).and_then(|_| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    partials().retain(|t| t != &tmp);
    written.map_err(io)
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
    /// A bank from fitted members: fills in the format, version, writer, creation time and checksum.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the members and detectors disagree in number, dimension or state size, or a
    /// threshold is not finite.
    pub fn new(mut meta: BankMeta, detectors: Vec<Detector>) -> Result<Bank> {
        if meta.members.is_empty() || meta.members.len() != detectors.len() {
            return Err(Error::invalid(format!(
                "a bank needs one detector per member: {} members, {} detectors",
                meta.members.len(),
                detectors.len()
            )));
        }
        for (m, d) in meta.members.iter_mut().zip(&detectors) {
            if m.dims != d.dims() || m.detector != d.config() {
                return Err(Error::invalid(format!("member '{}' does not describe its detector", m.name)));
            }
            m.state_rows = d.state().1;
        }
        if !(meta.threshold.is_finite() && meta.segment_threshold.is_finite()) {
            return Err(Error::invalid("the thresholds are not finite numbers"));
        }
        meta.format = FORMAT.to_string();
        meta.version = VERSION;
        meta.writer = format!("sonomaly {}", env!("CARGO_PKG_VERSION"));
        if meta.created.is_empty() {
            meta.created = now_iso8601();
        }
        let data = tensor_bytes(&detectors);
        meta.data_sha256 = checksum(&meta, &data.iter().map(|d| d.1.as_slice()).collect::<Vec<_>>());
        Ok(Bank { meta, detectors })
    }

    /// The clip-score threshold.
    pub fn threshold(&self) -> f32 {
        self.meta.threshold
    }

    /// Replaces the clip threshold with `threshold` (the bank's units) and moves the segment threshold with it:
    /// by the same difference for z-scored banks, in proportion for raw-distance banks. The command line's
    /// `--threshold` and the page's slider both go through here, so they give the same segments.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a non-finite threshold, or one that is not positive for a raw-distance bank.
    pub fn override_threshold(&mut self, threshold: f32) -> Result<()> {
        if !threshold.is_finite() {
            return Err(Error::invalid(format!("the threshold must be a finite number, got {threshold}")));
        }
        if self.is_z_scored() {
            self.meta.segment_threshold += threshold - self.meta.threshold;
        } else {
            if threshold <= 0.0 {
                return Err(Error::invalid(format!(
                    "this bank's scores are distances (0 or more): the threshold must be a positive number, got \
                     {threshold}"
                )));
            }
            if self.meta.threshold > 0.0 {
                self.meta.segment_threshold *= threshold / self.meta.threshold;
            }
        }
        self.meta.threshold = threshold;
        Ok(())
    }

    /// True when scores are robust z-scores (format version 2); false for the raw distances of version 1 banks.
    pub fn is_z_scored(&self) -> bool {
        matches!(self.meta.threshold_rule, ThresholdRule::RobustZ { .. })
    }

    /// Highest frequency judged, Hz (infinite when the fit had signal in every band).
    pub fn band_limit_hz(&self) -> f32 {
        self.meta.band_limit_hz.unwrap_or(f32::INFINITY)
    }

    /// The members' embeddings, in member order.
    pub fn embeddings(&self) -> Vec<EmbeddingConfig> {
        self.meta.members.iter().map(|m| m.embedding.clone()).collect()
    }

    /// Serialises to safetensors bytes (format version 2).
    ///
    /// # Errors
    /// [`Error::Bank`] if serialisation fails.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let data = tensor_bytes(&self.detectors);
        let mut meta = self.meta.clone();
        // A version 1 bank read into memory is written in this version's layout.
        meta.version = VERSION;
        meta.data_sha256 = checksum(&meta, &data.iter().map(|d| d.1.as_slice()).collect::<Vec<_>>());
        let json = serde_json::to_string(&meta).map_err(|e| Error::bank(format!("metadata: {e}")))?;
        let mut views = Vec::with_capacity(data.len());
        for (name, bytes, dtype, shape) in &data {
            let view = TensorView::new(*dtype, shape.clone(), bytes)
                .map_err(|e| Error::bank(format!("tensor {name}: {e}")))?;
            views.push((name.clone(), view));
        }
        let info = HashMap::from([(META_KEY.to_string(), json)]);
        safetensors::serialize(views, Some(info)).map_err(|e| Error::bank(format!("writing: {e}")))
    }

    /// Parses and checks bank bytes (format version 1 or 2).
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
        let bank = match version {
            1 => Self::from_v1(&st, json)?,
            2 => Self::from_v2(&st, json)?,
            _ => {
                return Err(Error::bank(format!(
                    "bank format version {version} is not supported by this sonomaly (reads versions 1 and \
                     {VERSION}); refit the bank with this version"
                )))
            }
        };
        if !(bank.meta.threshold.is_finite() && bank.meta.segment_threshold.is_finite()) {
            return Err(Error::bank("the thresholds are not finite numbers"));
        }
        Ok(bank)
    }

    fn from_v2(st: &SafeTensors, json: &str) -> Result<Self> {
        let meta: BankMeta =
            serde_json::from_str(json).map_err(|e| Error::bank(format!("metadata is malformed: {e}")))?;
        if meta.members.is_empty() {
            return Err(Error::bank("the bank has no member"));
        }
        // Each member's extra tensors, by suffix (the order they were written and checksummed in).
        let mut extras: Vec<Vec<(String, TensorView)>> = (0..meta.members.len()).map(|_| Vec::new()).collect();
        for (name, t) in st.tensors() {
            let Some((i, suffix)) = name.strip_prefix("member").and_then(|r| r.split_once('.')) else { continue };
            match i.parse::<usize>() {
                Ok(i) if i < extras.len() => extras[i].push((suffix.to_string(), t)),
                _ => return Err(Error::bank(format!("the bank holds a tensor '{name}' of no member"))),
            }
        }
        extras.iter_mut().for_each(|e| e.sort_by(|a, b| a.0.cmp(&b.0)));
        let n_extra: usize = extras.iter().map(|e| e.len()).sum();
        if st.len() != meta.members.len() + n_extra {
            return Err(Error::bank(format!(
                "the bank holds {} tensors but its metadata lists {} members",
                st.len(),
                meta.members.len()
            )));
        }
        let mut data = Vec::with_capacity(meta.members.len());
        for (i, m) in meta.members.iter().enumerate() {
            let name = tensor_name(i);
            let t = st.tensor(&name).map_err(|_| Error::bank(format!("the bank has no '{name}' tensor")))?;
            check_tensor(&name, &t, m.state_rows, m.detector.state_cols(m.dims), m.dims)?;
            data.push(t.data());
        }
        let all: Vec<&[u8]> = data.iter().copied().chain(extras.iter().flatten().map(|(_, t)| t.data())).collect();
        if stored_checksum(json, &all)? != meta.data_sha256 {
            return Err(corrupted());
        }
        for m in &meta.members {
            for n in [m.score_norm, m.map_norm] {
                if !(n.loc.is_finite() && n.scale.is_finite() && n.scale > 0.0) {
                    return Err(Error::bank(format!("member '{}' has a broken normalisation", m.name)));
                }
            }
        }
        let mut detectors = Vec::with_capacity(meta.members.len());
        for ((m, d), extra) in meta.members.iter().zip(data).zip(&extras) {
            let mut det = detector_from(&m.detector, m.dims, d)?;
            for (suffix, t) in extra {
                det = det.with_extra_tensor(suffix, t.dtype(), t.shape(), t.data()).map_err(|e| {
                    Error::bank(format!("member '{}': {}", m.name, e.to_string().trim_start_matches("invalid input: ")))
                })?;
            }
            detectors.push(det);
        }
        Ok(Bank { meta, detectors })
    }

    fn from_v1(st: &SafeTensors, json: &str) -> Result<Self> {
        let v1: BankMetaV1 =
            serde_json::from_str(json).map_err(|e| Error::bank(format!("metadata is malformed: {e}")))?;
        let t = st.tensor("memory_bank").map_err(|_| Error::bank("the bank has no 'memory_bank' tensor"))?;
        check_tensor("memory_bank", &t, v1.memory_bank_rows, v1.detector.state_cols(v1.dims), v1.dims)?;
        if stored_checksum(json, &[t.data()])? != v1.data_sha256 {
            return Err(corrupted());
        }
        let detector = detector_from(&v1.detector, v1.dims, t.data())?;
        let member = MemberMeta {
            name: v1.embedding.layers.join(","),
            detector: v1.detector,
            dims: v1.dims,
            state_rows: v1.memory_bank_rows,
            embedding: v1.embedding,
            score_norm: Norm::IDENTITY,
            map_norm: Norm::IDENTITY,
            normal_scores: v1.normal_scores.clone(),
            normal_curve_peaks: v1.normal_curve_peaks.clone(),
        };
        let meta = BankMeta {
            format: FORMAT.to_string(),
            version: 1,
            writer: v1.writer,
            front_end: v1.front_end,
            backbone: v1.backbone,
            band_limit_hz: v1.band_limit_hz,
            clips_fitted: v1.clips_fitted,
            seconds_fitted: v1.seconds_fitted,
            members: vec![member],
            fused_scores: v1.normal_scores.scores.clone(),
            fused_curve_peaks: v1.normal_curve_peaks.scores.clone(),
            threshold_rule: ThresholdRule::Gamma { quantile: v1.normal_scores.quantile },
            threshold: v1.threshold,
            segment_threshold: v1.segment_threshold,
            band_levels: None,
            created: v1.created,
            data_sha256: String::new(),
        };
        Ok(Bank { meta, detectors: vec![detector] })
    }

    /// Refuses a bank made with another backbone or front end than `backbone`/`front_end`.
    ///
    /// # Errors
    /// [`Error::Bank`] naming what differs, with both values.
    pub fn check_compatible(&self, backbone: &BackboneIdentity, front_end: &LogMelConfig) -> Result<()> {
        let b = &self.meta.backbone;
        if b.sha256 != backbone.sha256 || b.name != backbone.name {
            let same_name = b.name == backbone.name;
            return Err(Error::bank(format!(
                "this bank was fitted with backbone '{}' (sha256 {}), but the loaded backbone is '{}' (sha256 {}){}; \
                 load the matching backbone or refit the bank",
                b.name,
                &b.sha256[..b.sha256.len().min(12)],
                backbone.name,
                &backbone.sha256[..backbone.sha256.len().min(12)],
                if same_name { ": same name, different weights" } else { "" }
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
        let join = |f: &dyn Fn(&MemberMeta, &Detector) -> String| {
            m.members.iter().zip(&self.detectors).map(|(mm, d)| f(mm, d)).collect::<Vec<_>>().join(" + ")
        };
        let support = self.threshold_support();
        BankInfo {
            detector: join(&|_, d| d.kind().to_string()),
            backbone: m.backbone.name.clone(),
            backbone_sha256: m.backbone.sha256.chars().take(12).collect(),
            front_end: front_end_summary(&m.front_end),
            layers: join(&|mm, _| mm.embedding.layers.join(",")),
            memory_bank: join(&|mm, _| format!("{} x {}", mm.state_rows, mm.dims)),
            units: if self.is_z_scored() { "z" } else { "distance" }.to_string(),
            clips_fitted: m.clips_fitted,
            seconds_fitted: m.seconds_fitted,
            threshold: m.threshold,
            segment_threshold: m.segment_threshold,
            held_out_units: m.fused_scores.len(),
            threshold_rough: support.rough,
            threshold_note: support.note,
            created: m.created.clone(),
            size_bytes: 0,
        }
    }

    /// What the bank's threshold rests on ([`ThresholdSupport::new`]): the held-out normal clips (the smaller of
    /// the clips fitted and the held-out units, so a merged bank calibrated on a few clips counts those) and the
    /// seconds fitted.
    pub fn threshold_support(&self) -> ThresholdSupport {
        let m = &self.meta;
        ThresholdSupport::new(m.clips_fitted.min(m.fused_scores.len()), m.seconds_fitted)
    }

    /// Floats of detector state over all members.
    pub fn state_floats(&self) -> usize {
        self.detectors.iter().map(|d| d.state().0.len()).sum()
    }
}

/// The checksum of a stored bank, computed on the metadata JSON exactly as it was written (with the checksum's
/// value emptied), so that fields added to the configs by later versions never invalidate older banks.
fn stored_checksum(json: &str, data: &[&[u8]]) -> Result<String> {
    const KEY: &str = "\"data_sha256\":\"";
    let at = json.rfind(KEY).ok_or_else(|| Error::bank("the bank's metadata has no checksum"))? + KEY.len();
    let end = json[at..].find('"').map(|e| at + e).ok_or_else(|| Error::bank("the bank's checksum is malformed"))?;
    let blank = format!("{}{}", &json[..at], &json[end..]);
    Ok(checksum_of(blank.as_bytes(), data))
}

fn corrupted() -> Error {
    Error::bank("the bank's contents do not match their checksum: the file is corrupted (or was edited by hand)")
}

/// Checks a state tensor's dtype and shape against the metadata before its values are read.
fn check_tensor(name: &str, t: &TensorView, rows: usize, cols: usize, dims: usize) -> Result<()> {
    if t.dtype() != Dtype::F32 {
        return Err(Error::bank(format!("{name} has dtype {:?}, expected F32", t.dtype())));
    }
    if t.shape() != [rows, cols] || dims == 0 || rows == 0 {
        return Err(Error::bank(format!("{name} has shape {:?} but the metadata says {:?}", t.shape(), [rows, cols])));
    }
    Ok(())
}

/// A fitted detector from its stored state bytes (little-endian f32, already shape-checked).
fn detector_from(config: &DetectorConfig, dims: usize, data: &[u8]) -> Result<Detector> {
    let state: Vec<f32> = data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
    if state.iter().any(|v| !v.is_finite()) {
        return Err(Error::bank("the memory bank holds non-finite values"));
    }
    Detector::from_state(config, dims, state).map_err(|e| Error::bank(format!("detector state: {e}")))
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
