//! Anomaly maps: patch scores upsampled to the spectrogram, smoothed, reduced to a temporal curve and segments.
//!
//! Post-processing as anomalib's `anomaly_map.py`: upsampling of the `[time, freq]` patch scores to the
//! spectrogram's `[frames, mel_bins]`, then a Gaussian blur with `sigma = 4` spectrogram pixels, kernel size
//! `2 * int(4 sigma + 0.5) + 1 = 33` taps, reflect border. The upsampling is bilinear (`align_corners=False`), as
//! anomalib's PaDiM map does; anomalib's PatchCore map calls `F.interpolate` without a mode, i.e. nearest, which
//! leaves blocky steps that the blur only partly hides.

use serde::Serialize;

use crate::embedding::resize_bilinear;

/// The Gaussian kernel anomalib uses for `sigma`: `2 * int(4 sigma + 0.5) + 1` taps, normalised to sum 1.
pub fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let half = (4.0 * sigma + 0.5) as usize;
    let k: Vec<f32> = (0..2 * half + 1)
        .map(|i| {
            let x = i as f32 - half as f32;
            (-0.5 * x * x / (sigma * sigma)).exp()
        })
        .collect();
    let s: f32 = k.iter().sum();
    k.into_iter().map(|v| v / s).collect()
}

/// Index `i` (possibly outside `0..n`) mirrored into range without repeating the edge (NumPy/PyTorch "reflect"),
/// periodically for offsets larger than the signal.
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let p = 2 * (n as isize - 1);
    let m = i.rem_euclid(p);
    (if m < n as isize { m } else { p - m }) as usize
}

/// Separable Gaussian blur of `map` `[rows, cols]` with reflect borders.
///
/// Each pixel is `sum_j k[j] x[i + j - h]` summed from `j = 0` up (the horizontal pass, then the vertical one),
/// computed a whole row at a time over rows padded by reflection so that the inner loops vectorise.
pub fn gaussian_blur(map: &[f32], rows: usize, cols: usize, sigma: f32) -> Vec<f32> {
    let k = gaussian_kernel(sigma);
    let h = k.len() / 2;
    if rows == 0 || cols == 0 {
        return Vec::new();
    }
    let col_idx: Vec<usize> = (0..cols + 2 * h).map(|i| reflect(i as isize - h as isize, cols)).collect();
    let mut ext = vec![0.0f32; cols + 2 * h];
    let mut tmp = vec![0.0f32; rows * cols];
    for (row, out) in map.chunks_exact(cols).zip(tmp.chunks_exact_mut(cols)) {
        for (e, &i) in ext.iter_mut().zip(&col_idx) {
            *e = row[i];
        }
        for (j, &w) in k.iter().enumerate() {
            for (o, &x) in out.iter_mut().zip(&ext[j..j + cols]) {
                *o += w * x;
            }
        }
    }
    let mut out = vec![0.0f32; rows * cols];
    for (r, o) in out.chunks_exact_mut(cols).enumerate() {
        for (j, &w) in k.iter().enumerate() {
            let sr = reflect(r as isize + j as isize - h as isize, rows);
            for (v, &x) in o.iter_mut().zip(&tmp[sr * cols..(sr + 1) * cols]) {
                *v += w * x;
            }
        }
    }
    out
}

/// Patch scores `[grid_time, grid_freq]` of one window -> smoothed map `[frames, mel_bins]` of that window.
pub fn window_map(
    patch_scores: &[f32],
    grid_time: usize,
    grid_freq: usize,
    frames: usize,
    mel_bins: usize,
    sigma: f32,
) -> Vec<f32> {
    let up = resize_bilinear(patch_scores, 1, grid_time, grid_freq, frames, mel_bins);
    gaussian_blur(&up, frames, mel_bins, sigma)
}

/// Temporal curve `[frames]`: the largest map value over mel bins at each frame.
pub fn temporal_curve(map: &[f32], mel_bins: usize) -> Vec<f32> {
    map.chunks_exact(mel_bins).map(|r| r.iter().cloned().fold(f32::NEG_INFINITY, f32::max)).collect()
}

/// Seconds rounded to the millisecond.
fn ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// A run of frames above a threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// Onset, seconds.
    pub start_s: f64,
    /// Offset, seconds.
    pub end_s: f64,
    /// Largest curve value inside.
    pub peak: f32,
}

/// Segments where `curve` (one value per frame, `hop_s` seconds apart) exceeds `threshold`. Frame `t` spans
/// `[t hop_s, (t + 1) hop_s)`; runs closer than `min_gap_frames` are merged; times are rounded to milliseconds.
pub fn segments(curve: &[f32], hop_s: f64, threshold: f32, min_gap_frames: usize) -> Vec<Segment> {
    let mut out: Vec<(usize, usize, f32)> = Vec::new();
    let mut t = 0;
    while t < curve.len() {
        if curve[t] > threshold {
            let start = t;
            let mut peak = curve[t];
            while t < curve.len() && curve[t] > threshold {
                peak = peak.max(curve[t]);
                t += 1;
            }
            match out.last_mut() {
                Some(last) if start - last.1 <= min_gap_frames => {
                    last.1 = t;
                    last.2 = last.2.max(peak);
                }
                _ => out.push((start, t, peak)),
            }
        } else {
            t += 1;
        }
    }
    out.into_iter()
        .map(|(a, b, p)| Segment { start_s: ms(a as f64 * hop_s), end_s: ms(b as f64 * hop_s), peak: p })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_has_33_taps_for_sigma_4() {
        let k = gaussian_kernel(4.0);
        assert_eq!(k.len(), 33);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(k[16] > k[15] && (k[15] - k[17]).abs() < 1e-9);
    }

    #[test]
    fn reflect_mirrors_without_edge_repeat() {
        let idx: Vec<usize> = (-3..7).map(|i| reflect(i, 4)).collect();
        assert_eq!(idx, vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
    }

    #[test]
    fn blur_keeps_constants_and_mass_centre() {
        let m = vec![2.5f32; 40 * 10];
        let b = gaussian_blur(&m, 40, 10, 4.0);
        assert!(b.iter().all(|v| (v - 2.5).abs() < 1e-5));
    }

    #[test]
    fn segments_merge_small_gaps() {
        let c = [0.0, 2.0, 3.0, 0.0, 2.0, 0.0, 0.0, 0.0, 5.0];
        let s = segments(&c, 0.5, 1.0, 1);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].start_s, s[0].end_s, s[0].peak), (0.5, 2.5, 3.0));
        assert_eq!((s[1].start_s, s[1].end_s), (4.0, 4.5));
    }
}
