//! [`AnalysedClip`] as bytes: how the page's pool of workers hands the clips it analysed to the worker that fits.
//!
//! A safetensors buffer: the clip's log-mel (`logmel`, F32 `[frames, mel_bins]`) and each window's patches of each
//! member (`w{window}.m{member}`, F32 `[time * freq, dims]`), with the rest (fingerprint, durations, windows'
//! frames and owned ranges, grid shapes) as JSON under the header key `sonomaly.analysed`. Reading checks every
//! shape and range against the JSON, so that a damaged or foreign buffer is refused in words, never added.

use std::collections::HashMap;
use std::ops::Range;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::fit::AnalysedClip;
use super::windows::{MemberPatches, Window};
use crate::embedding::PatchGrid;
use crate::error::{Error, Result};

/// Header key of the JSON part.
const META_KEY: &str = "sonomaly.analysed";
/// Layout version; a reader refuses any other.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Meta {
    version: u32,
    /// [`AnalysedClip::fingerprint`] as a decimal string (JSON numbers lose bits above 2^53).
    fingerprint: String,
    frames: usize,
    seconds: f64,
    band_limit_hz: f32,
    mel_bins: usize,
    windows: Vec<WindowMeta>,
}

#[derive(Serialize, Deserialize)]
struct WindowMeta {
    start: usize,
    owned: [usize; 2],
    /// Per member: `[time, freq, dims, owned patches start, owned patches end]`.
    members: Vec<[usize; 5]>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::invalid(format!("not a clip analysed by this version of sonomaly: {what}"))
}

impl AnalysedClip {
    /// The clip as bytes (see the module's description), for [`AnalysedClip::from_bytes`].
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if serialisation fails (it does not for a clip made by
    /// [`super::Fitter::analyse_clip`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let meta = Meta {
            version: VERSION,
            fingerprint: self.fingerprint.to_string(),
            frames: self.frames,
            seconds: self.seconds,
            band_limit_hz: self.band_limit_hz,
            mel_bins: self.mel_bins,
            windows: self
                .windows
                .iter()
                .map(|w| WindowMeta {
                    start: w.start,
                    owned: [w.owned.start, w.owned.end],
                    members: w
                        .members
                        .iter()
                        .map(|m| {
                            let g = &m.grid;
                            [g.time, g.freq, g.dims, m.owned_patches.start, m.owned_patches.end]
                        })
                        .collect(),
                })
                .collect(),
        };
        let json = serde_json::to_string(&meta).map_err(|e| Error::invalid(format!("analysed clip: {e}")))?;
        let mut data: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
        let rows = self.logmel.len().checked_div(self.mel_bins).unwrap_or(0);
        data.push(("logmel".into(), f32_bytes(&self.logmel), vec![rows, self.mel_bins]));
        for (i, w) in self.windows.iter().enumerate() {
            for (j, m) in w.members.iter().enumerate() {
                let g = &m.grid;
                data.push((format!("w{i}.m{j}"), f32_bytes(&g.data), vec![g.time * g.freq, g.dims]));
            }
        }
        let mut views = Vec::with_capacity(data.len());
        for (name, bytes, shape) in &data {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map_err(|e| Error::invalid(format!("analysed clip, tensor {name}: {e}")))?;
            views.push((name.clone(), view));
        }
        let info = HashMap::from([(META_KEY.to_string(), json)]);
        safetensors::serialize(views, Some(info)).map_err(|e| Error::invalid(format!("analysed clip: {e}")))
    }

    /// A clip written by [`AnalysedClip::to_bytes`], checked: every tensor's shape agrees with the windows' grids,
    /// every owned range lies inside its window or grid, every value is finite.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming what does not agree (not such a buffer, another layout version, a missing
    /// or misshapen tensor, a range outside its grid, a non-finite value).
    pub fn from_bytes(bytes: &[u8]) -> Result<AnalysedClip> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors buffer ({e})")))?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("unreadable header ({e})")))?;
        let json = header.metadata().as_ref().and_then(|m| m.get(META_KEY)).ok_or_else(|| bad("no clip header"))?;
        let meta: Meta = serde_json::from_str(json).map_err(|e| bad(format!("malformed header ({e})")))?;
        if meta.version != VERSION {
            return Err(bad(format!("layout version {} (this version reads {VERSION})", meta.version)));
        }
        let fingerprint = meta.fingerprint.parse::<u64>().map_err(|_| bad("malformed fingerprint"))?;
        if meta.mel_bins == 0 || !meta.seconds.is_finite() || meta.seconds <= 0.0 || meta.band_limit_hz.is_nan() {
            return Err(bad("no mel bins, or a duration or band limit that is not a positive number"));
        }
        let tensor = |name: &str, rows: usize, cols: usize| -> Result<Vec<f32>> {
            let t = st.tensor(name).map_err(|_| bad(format!("tensor {name} is missing")))?;
            if t.dtype() != Dtype::F32 || t.shape() != [rows, cols] {
                return Err(bad(format!("tensor {name} is {:?} {:?}, not F32 [{rows}, {cols}]", t.dtype(), t.shape())));
            }
            let v: Vec<f32> =
                t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
            if v.iter().any(|x| !x.is_finite()) {
                return Err(bad(format!("tensor {name} holds a value that is not finite")));
            }
            Ok(v)
        };
        let logmel = tensor("logmel", meta.frames, meta.mel_bins)?;
        let mut windows = Vec::with_capacity(meta.windows.len());
        for (i, w) in meta.windows.iter().enumerate() {
            let owned: Range<usize> = w.owned[0]..w.owned[1];
            if owned.start > owned.end || owned.end > meta.frames {
                return Err(bad(format!("window {i} owns frames {owned:?} of a clip of {} frames", meta.frames)));
            }
            let mut members = Vec::with_capacity(w.members.len());
            for (j, &[time, freq, dims, a, b]) in w.members.iter().enumerate() {
                let rows =
                    time.checked_mul(freq).ok_or_else(|| bad(format!("window {i} member {j}: grid too large")))?;
                if dims == 0 || a > b || b > rows {
                    return Err(bad(format!("window {i} member {j}: owned patches {a}..{b} of a grid of {rows}")));
                }
                let data = tensor(&format!("w{i}.m{j}"), rows, dims)?;
                members.push(MemberPatches { grid: PatchGrid { time, freq, dims, data }, owned_patches: a..b });
            }
            windows.push(Window { start: w.start, owned, members });
        }
        if windows.is_empty() {
            return Err(bad("no analysis window"));
        }
        Ok(AnalysedClip {
            windows,
            fingerprint,
            frames: meta.frames,
            seconds: meta.seconds,
            band_limit_hz: meta.band_limit_hz,
            logmel,
            mel_bins: meta.mel_bins,
        })
    }
}
