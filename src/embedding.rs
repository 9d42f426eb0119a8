//! Patch embeddings: feature maps of several layers aggregated locally, aligned to one grid and concatenated.
//!
//! Follows PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022) and
//! anomalib's `torch_model.py`: each layer is smoothed by a 3x3 average over its neighbourhood (zero padding,
//! divided by 9 like `AvgPool2d(3, 1, 1)`), resized to a common grid with bilinear interpolation
//! (`align_corners=False`), and the channels are concatenated. One extra pseudo-layer, [`LOGMEL_LAYER`], describes
//! each grid cell by the log-mel itself: the spectrogram averaged over the cell, then the 3x3 neighbourhood of
//! cells unrolled (9 values), so the detector sees local spectral shape and level directly.
//!
//! A window of `W` frames x `M` mel bins at grid stride `s` gives a [`PatchGrid`] of `W / s` rows (time) by
//! `M / s` columns (frequency); each patch is a `dims`-vector.

use serde::{Deserialize, Serialize};

use crate::backbone::{BackboneSpec, FeatureMap};
use crate::error::{Error, Result};

/// Name of the pseudo-layer made from the log-mel spectrogram itself.
pub const LOGMEL_LAYER: &str = "logmel";

/// Which layers make a patch, and on which grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingConfig {
    /// Layer names: backbone outputs (e.g. `conv_block2`) and/or [`LOGMEL_LAYER`].
    pub layers: Vec<String>,
    /// Side of the square neighbourhood averaged in each layer (PatchCore: 3).
    pub neighbourhood: usize,
    /// Spectrogram frames (and mel bins) per patch: the grid's stride. 4 = the grid of conv_block2.
    pub grid_stride: usize,
    /// Scale each layer so that its part of a normal patch has unit RMS norm, so that no layer dominates the
    /// distances by the mere size of its activations. The scales are measured on the normal clips at fit time.
    #[serde(default)]
    pub balance_layers: bool,
    /// Per-layer multipliers applied to the features (empty = all 1); set by fitting when `balance_layers`.
    #[serde(default)]
    pub layer_weights: Vec<f32>,
    /// Append the patch's frequency position (grid column x `position_weight`) to every patch, so that a patch is
    /// compared with normal patches of its own band: in a spectrogram, unlike a photo, where a pattern sits on the
    /// frequency axis matters (silence where a machine hums is not the silence of its quiet high bands).
    #[serde(default)]
    pub frequency_position: bool,
    /// Weight of one grid column in the position feature; set by fitting to a fraction
    /// ([`crate::pipeline::POSITION_FRACTION`]) of the RMS norm of the normal patches. 0 means 1 (before fitting).
    #[serde(default)]
    pub position_weight: f32,
}

impl Default for EmbeddingConfig {
    /// The default patch: the log-mel itself on a stride-4 grid (`logmel`). On the MIMII fan development split it
    /// separated normal from abnormal clips best of every layer set measured (ROC-AUC 1.00 against 0.91 for the
    /// paper's conv_block2+3+4; README, "Choosing the layers"): machine faults show as changes of level and
    /// spectral shape that the log-mel carries directly. Backbone layers are one `--layers` away.
    fn default() -> Self {
        EmbeddingConfig {
            layers: vec![LOGMEL_LAYER.to_string()],
            neighbourhood: 3,
            grid_stride: 4,
            balance_layers: false,
            layer_weights: Vec::new(),
            frequency_position: true,
            position_weight: 0.0,
        }
    }
}

impl EmbeddingConfig {
    /// Parses a comma-separated layer list such as `logmel,conv_block2`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty list.
    pub fn with_layers(mut self, list: &str) -> Result<Self> {
        let layers: Vec<String> = list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        if layers.is_empty() {
            return Err(Error::invalid("the layer list is empty; give e.g. 'logmel,conv_block2'"));
        }
        self.layers = layers;
        Ok(self)
    }

    /// Checks the config against a backbone spec.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an unknown layer, a repeated layer, an even or zero neighbourhood, or a grid
    /// stride that leaves no patch in a window.
    pub fn validate(&self, spec: &BackboneSpec) -> Result<()> {
        if self.layers.is_empty() {
            return Err(Error::invalid("embedding: no layer chosen"));
        }
        for (i, l) in self.layers.iter().enumerate() {
            if l != LOGMEL_LAYER && spec.output(l).is_none() {
                return Err(Error::invalid(format!(
                    "embedding: layer '{l}' is neither '{LOGMEL_LAYER}' nor an output of backbone '{}' ({})",
                    spec.name,
                    spec.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
            if self.layers[..i].contains(l) {
                return Err(Error::invalid(format!("embedding: layer '{l}' is listed twice")));
            }
        }
        if self.neighbourhood == 0 || self.neighbourhood.is_multiple_of(2) {
            return Err(Error::invalid(format!(
                "embedding: neighbourhood must be odd and > 0, got {}",
                self.neighbourhood
            )));
        }
        if !self.layer_weights.is_empty()
            && (self.layer_weights.len() != self.layers.len()
                || self.layer_weights.iter().any(|w| !(w.is_finite() && *w > 0.0)))
        {
            return Err(Error::invalid(format!(
                "embedding: {} layer weights for {} layers, or a weight that is not a positive number",
                self.layer_weights.len(),
                self.layers.len()
            )));
        }
        let mel_bins = spec.front_end_config().n_mels;
        if self.grid_stride == 0 || self.grid_stride > spec.window_frames || self.grid_stride > mel_bins {
            return Err(Error::invalid(format!(
                "embedding: grid stride {} must be in 1..={}",
                self.grid_stride,
                spec.window_frames.min(mel_bins)
            )));
        }
        Ok(())
    }

    /// The backbone outputs this config needs, in order.
    pub fn backbone_layers(&self) -> Vec<String> {
        self.layers.iter().filter(|l| *l != LOGMEL_LAYER).cloned().collect()
    }

    /// Channels of each layer, in order.
    pub fn layer_dims(&self, spec: &BackboneSpec) -> Vec<usize> {
        let k = self.neighbourhood * self.neighbourhood;
        self.layers
            .iter()
            .map(|l| if l == LOGMEL_LAYER { k } else { spec.output(l).map_or(0, |o| o.channels) })
            .collect()
    }

    /// Patch dimension `D` for a spec.
    pub fn dims(&self, spec: &BackboneSpec) -> usize {
        self.layer_dims(spec).iter().sum::<usize>() + usize::from(self.frequency_position)
    }
}

/// Patches on a `[time, freq]` grid: `data` is `[time * freq, dims]` row-major, patch `(t, f)` at row
/// `t * freq + f`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchGrid {
    /// Rows (time).
    pub time: usize,
    /// Columns (frequency).
    pub freq: usize,
    /// Patch dimension `D`.
    pub dims: usize,
    /// `time * freq * dims` values.
    pub data: Vec<f32>,
}

impl PatchGrid {
    /// Patch `(t, f)`: `dims` values.
    pub fn patch(&self, t: usize, f: usize) -> &[f32] {
        let i = (t * self.freq + f) * self.dims;
        &self.data[i..i + self.dims]
    }
}

/// `k x k` average with zero padding, divided by `k * k` (PyTorch `AvgPool2d(k, 1, k / 2)` with
/// `count_include_pad=True`). `x` is `[channels, rows, cols]`.
pub fn neighbourhood_average(x: &[f32], channels: usize, rows: usize, cols: usize, k: usize) -> Vec<f32> {
    let r = (k / 2) as isize;
    let norm = 1.0 / (k * k) as f32;
    let mut out = vec![0.0f32; x.len()];
    let mut tmp = vec![0.0f32; rows * cols];
    for c in 0..channels {
        let plane = &x[c * rows * cols..(c + 1) * rows * cols];
        // Separable: sum along columns, then along rows.
        for i in 0..rows {
            for j in 0..cols {
                let mut s = 0.0;
                for d in -r..=r {
                    let jj = j as isize + d;
                    if jj >= 0 && (jj as usize) < cols {
                        s += plane[i * cols + jj as usize];
                    }
                }
                tmp[i * cols + j] = s;
            }
        }
        let o = &mut out[c * rows * cols..(c + 1) * rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                let mut s = 0.0;
                for d in -r..=r {
                    let ii = i as isize + d;
                    if ii >= 0 && (ii as usize) < rows {
                        s += tmp[ii as usize * cols + j];
                    }
                }
                o[i * cols + j] = s * norm;
            }
        }
    }
    out
}

/// Source coordinate and weights of bilinear resizing with `align_corners=False` (PyTorch `F.interpolate`).
fn bilinear_taps(out_len: usize, in_len: usize) -> Vec<(usize, usize, f32)> {
    let scale = in_len as f32 / out_len as f32;
    (0..out_len)
        .map(|o| {
            let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(in_len - 1);
            let i1 = (i0 + 1).min(in_len - 1);
            let w1 = (src - i0 as f32).clamp(0.0, 1.0);
            (i0, i1, w1)
        })
        .collect()
}

/// Bilinear resize of `[channels, rows, cols]` to `[channels, out_rows, out_cols]` (`align_corners=False`).
pub fn resize_bilinear(
    x: &[f32],
    channels: usize,
    rows: usize,
    cols: usize,
    out_rows: usize,
    out_cols: usize,
) -> Vec<f32> {
    if rows == out_rows && cols == out_cols {
        return x.to_vec();
    }
    let tr = bilinear_taps(out_rows, rows);
    let tc = bilinear_taps(out_cols, cols);
    let mut out = vec![0.0f32; channels * out_rows * out_cols];
    for c in 0..channels {
        let plane = &x[c * rows * cols..(c + 1) * rows * cols];
        let o = &mut out[c * out_rows * out_cols..(c + 1) * out_rows * out_cols];
        for (i, &(r0, r1, wr)) in tr.iter().enumerate() {
            for (j, &(c0, c1, wc)) in tc.iter().enumerate() {
                let top = plane[r0 * cols + c0] * (1.0 - wc) + plane[r0 * cols + c1] * wc;
                let bot = plane[r1 * cols + c0] * (1.0 - wc) + plane[r1 * cols + c1] * wc;
                o[i * out_cols + j] = top * (1.0 - wr) + bot * wr;
            }
        }
    }
    out
}

/// Builds the patches of one window.
///
/// `logmel` is the window's `[frames, mel_bins]` log-mel; `maps` are the backbone's outputs for it (at least the
/// layers the config names). Returns the [`PatchGrid`] of `frames / grid_stride` x `mel_bins / grid_stride`
/// patches.
///
/// # Errors
/// [`Error::InvalidInput`] if a layer is missing from `maps` or the window is smaller than one grid cell.
pub fn embed(
    config: &EmbeddingConfig,
    logmel: &[f32],
    frames: usize,
    mel_bins: usize,
    maps: &[FeatureMap],
) -> Result<PatchGrid> {
    let s = config.grid_stride;
    let (gt, gf) = (frames / s, mel_bins / s);
    if gt == 0 || gf == 0 || logmel.len() != frames * mel_bins {
        return Err(Error::invalid(format!("embedding: a {frames} x {mel_bins} window has no {s} x {s} patch")));
    }
    let k = config.neighbourhood;
    // Per layer, `[C, gt, gf]` planes.
    let mut planes: Vec<(usize, Vec<f32>)> = Vec::with_capacity(config.layers.len());
    for layer in &config.layers {
        if layer == LOGMEL_LAYER {
            planes.push((k * k, logmel_cells(logmel, frames, mel_bins, s, k)));
        } else {
            let m = maps
                .iter()
                .find(|m| &m.name == layer)
                .ok_or_else(|| Error::invalid(format!("embedding: the backbone did not return layer '{layer}'")))?;
            let avg = neighbourhood_average(&m.data, m.channels, m.time, m.freq, k);
            planes.push((m.channels, resize_bilinear(&avg, m.channels, m.time, m.freq, gt, gf)));
        }
    }
    let dims: usize = planes.iter().map(|p| p.0).sum::<usize>() + usize::from(config.frequency_position);
    let mut data = vec![0.0f32; gt * gf * dims];
    if config.frequency_position {
        let w = if config.position_weight > 0.0 { config.position_weight } else { 1.0 };
        for (p, patch) in data.chunks_exact_mut(dims).enumerate() {
            patch[dims - 1] = (p % gf) as f32 * w;
        }
    }
    let mut offset = 0;
    for (l, (c_n, plane)) in planes.iter().enumerate() {
        let w = config.layer_weights.get(l).copied().unwrap_or(1.0);
        for c in 0..*c_n {
            let src = &plane[c * gt * gf..(c + 1) * gt * gf];
            for (p, &v) in src.iter().enumerate() {
                data[p * dims + offset + c] = v * w;
            }
        }
        offset += c_n;
    }
    Ok(PatchGrid { time: gt, freq: gf, dims, data })
}

/// The log-mel pseudo-layer: the spectrogram averaged over `s x s` cells, then each cell's `k x k`
/// neighbourhood of cells unrolled (edges repeat the border cell). Returns `[k * k, rows, cols]`.
fn logmel_cells(logmel: &[f32], frames: usize, mel_bins: usize, s: usize, k: usize) -> Vec<f32> {
    let (gt, gf) = (frames / s, mel_bins / s);
    let mut cells = vec![0.0f32; gt * gf];
    let norm = 1.0 / (s * s) as f32;
    for t in 0..gt {
        for f in 0..gf {
            let mut acc = 0.0;
            for dt in 0..s {
                let row = &logmel[(t * s + dt) * mel_bins..];
                acc += row[f * s..f * s + s].iter().sum::<f32>();
            }
            cells[t * gf + f] = acc * norm;
        }
    }
    let r = (k / 2) as isize;
    let mut out = vec![0.0f32; k * k * gt * gf];
    let mut ch = 0;
    for dt in -r..=r {
        for df in -r..=r {
            let plane = &mut out[ch * gt * gf..(ch + 1) * gt * gf];
            for t in 0..gt {
                let tt = (t as isize + dt).clamp(0, gt as isize - 1) as usize;
                for f in 0..gf {
                    let ff = (f as isize + df).clamp(0, gf as isize - 1) as usize;
                    plane[t * gf + f] = cells[tt * gf + ff];
                }
            }
            ch += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbourhood_average_matches_avgpool_with_zero_padding() {
        // 1 channel 3x3 of ones: corners see 4 ones / 9, edges 6 / 9, centre 9 / 9.
        let out = neighbourhood_average(&[1.0; 9], 1, 3, 3, 3);
        let e = [4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0].map(|v: f32| v / 9.0);
        for (a, b) in out.iter().zip(e) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn bilinear_upsample_2x_matches_pytorch() {
        // torch.nn.functional.interpolate(torch.tensor([[[[0., 1.]]]]), size=(1, 4), mode="bilinear")
        // -> [0.0, 0.25, 0.75, 1.0]
        let out = resize_bilinear(&[0.0, 1.0], 1, 1, 2, 1, 4);
        assert_eq!(out, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn logmel_cells_unrolls_the_neighbourhood() {
        // 4 x 4 log-mel, stride 2 -> 2 x 2 cells with means 1, 2, 3, 4.
        let mut lm = vec![0.0f32; 16];
        for t in 0..4 {
            for f in 0..4 {
                lm[t * 4 + f] = (1 + (t / 2) * 2 + f / 2) as f32;
            }
        }
        let out = logmel_cells(&lm, 4, 4, 2, 3);
        // Channel 4 (centre) is the cell itself.
        assert_eq!(&out[4 * 4..5 * 4], &[1.0, 2.0, 3.0, 4.0]);
        // Channel 0 (up-left) of cell (1, 1) is cell (0, 0).
        assert_eq!(out[3], 1.0);
    }
}
