//! Pictures of a scored clip (native builds): the log-mel spectrogram in grey with the anomaly map painted over
//! it in a perceptual colour map (magma), time axis in seconds, frequency axis in Hz, a colour bar with the
//! segment threshold marked, and the temporal curve with its threshold underneath.

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::pipeline::ClipResult;

/// Magma colour map control points (matplotlib's `magma` at 0, 1/8, ..., 1).
const MAGMA: [[f32; 3]; 9] = [
    [0.0, 0.0, 4.0],
    [28.0, 16.0, 68.0],
    [79.0, 18.0, 123.0],
    [129.0, 37.0, 129.0],
    [181.0, 54.0, 122.0],
    [229.0, 80.0, 100.0],
    [251.0, 135.0, 97.0],
    [254.0, 194.0, 135.0],
    [252.0, 253.0, 191.0],
];

/// Magma colour of `v` in [0, 1].
pub fn magma(v: f32) -> [u8; 3] {
    let v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 } * 8.0;
    let i = (v.floor() as usize).min(7);
    let f = v - i as f32;
    let mut c = [0u8; 3];
    for k in 0..3 {
        c[k] = (MAGMA[i][k] * (1.0 - f) + MAGMA[i + 1][k] * f).round() as u8;
    }
    c
}

fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, colour: [u8; 3]) {
    for (n, ch) in s.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else { continue };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    put(img, x + n as i64 * 8 + col, y + row as i64, colour);
                }
            }
        }
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, Rgb(c));
    }
}

fn nice_step(range: f64, target_ticks: f64) -> f64 {
    // 1-2-5 step giving about `target_ticks` ticks over `range`.
    let raw = range / target_ticks;
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if raw <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}

/// Renders `r` as an RGB picture.
pub fn render(r: &ClipResult) -> RgbImage {
    let (t, stride) = (r.frames.max(1), r.mel_bins.max(1));
    // Show the bands up to the highest frequency judged (a 16 kHz recording has nothing above 8 kHz).
    let m = if r.mel_hz.len() == stride {
        r.mel_hz.iter().filter(|&&h| h <= r.band_limit_hz).count().clamp(1, stride)
    } else {
        stride
    };
    let pw = (t * 2).clamp(480, 1600) as u32;
    let ph = (m * 4).clamp(200, 512) as u32;
    let (left, top, gap, curve_h, bottom, right) = (72u32, 24u32, 16u32, 90u32, 36u32, 110u32);
    let width = left + pw + right;
    let height = top + ph + gap + curve_h + bottom;
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let white = [255, 255, 255];
    let ink = [20, 20, 20];
    let (lo, hi) = r.logmel.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |a, &v| (a.0.min(v), a.1.max(v)));
    let lspan = if hi > lo { hi - lo } else { 1.0 };
    // The heat ramp: transparent below the display floor, full colour from the ceiling (or the clip's largest value,
    // if higher, so that a clip anomalous throughout still shows where it is most anomalous).
    let map_max = r.map.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let heat_lo = r.display_floor;
    let heat_hi = map_max.max(r.display_ceiling).max(heat_lo + 1e-6);
    let heat = |x: f32| (x - heat_lo) / (heat_hi - heat_lo);
    // Spectrogram (grey, low frequencies at the bottom) with the map over it.
    for py in 0..ph {
        let mb = ((ph - 1 - py) as usize * m / ph as usize).min(m - 1);
        for px in 0..pw {
            let f = (px as usize * t / pw as usize).min(t - 1);
            let i = f * stride + mb;
            let g = if r.logmel.is_empty() { 0.0 } else { (r.logmel[i] - lo) / lspan };
            let grey = g * 255.0;
            let v = if r.map.is_empty() { -1.0 } else { heat(r.map[i]) };
            let c = magma(v.clamp(0.0, 1.0));
            let a = if v < 0.0 { 0.0 } else { 0.35 + 0.55 * v.min(1.0) };
            let mix = |k: usize| (grey * (1.0 - a) + c[k] as f32 * a).round() as u8;
            img.put_pixel(left + px, top + py, Rgb([mix(0), mix(1), mix(2)]));
        }
    }
    let dur = t as f64 * r.hop_s;
    // Time axis (under the curve panel).
    let step = nice_step(dur.max(1e-3), 8.0);
    let axis_y = top + ph + gap + curve_h;
    let mut s = 0.0;
    while s <= dur + 1e-9 {
        let x = left as i64 + (s / dur * pw as f64) as i64;
        for d in 0..5 {
            put(&mut img, x, axis_y as i64 + d, ink);
            put(&mut img, x, (top + ph) as i64 + d, ink);
        }
        let label = if step < 0.1 {
            format!("{s:.2}")
        } else if step < 1.0 {
            format!("{s:.1}")
        } else {
            format!("{s:.0}")
        };
        text(&mut img, x - 4 * label.len() as i64, axis_y as i64 + 8, &label, ink);
        s += step;
    }
    text(&mut img, (left + pw / 2) as i64 - 32, axis_y as i64 + 22, "time (s)", ink);
    // Frequency axis: ticks at round Hz values, placed through the mel centre frequencies (mel scales crowd the
    // high frequencies, so a 1-2-5 series keeps labels apart).
    if r.mel_hz.len() == stride {
        let fmax = r.mel_hz[m - 1];
        let mut last_y = i64::MAX;
        for f in [0.0f32, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4] {
            if f > fmax {
                break;
            }
            let bin = r.mel_hz.iter().position(|&h| h >= f).unwrap_or(m - 1);
            let y = (top + ph) as i64 - 1 - (bin as f64 / m as f64 * ph as f64) as i64;
            if last_y - y < 14 {
                continue;
            }
            last_y = y;
            for d in 0..5 {
                put(&mut img, left as i64 - 1 - d, y, ink);
            }
            let label = if f >= 1000.0 { format!("{}k", f / 1000.0) } else { format!("{f:.0}") };
            text(&mut img, left as i64 - 8 - 8 * label.len() as i64, y - 4, &label, ink);
        }
        text(&mut img, 2, top as i64 - 16, "Hz", ink);
    }
    // Temporal curve with the segment threshold.
    let cy0 = top + ph + gap;
    let cmin = r.curve.iter().cloned().fold(r.display_floor.min(0.0), f32::min);
    let cmax = r.curve.iter().cloned().fold(r.segment_threshold, f32::max);
    let cspan = ((cmax - cmin) * 1.05).max(1e-6);
    let cy = |v: f32| cy0 as i64 + curve_h as i64 - ((v - cmin) / cspan * curve_h as f32) as i64;
    for px in 0..pw {
        put(&mut img, (left + px) as i64, (cy0 + curve_h) as i64, [150, 150, 150]);
    }
    let ty = cy(r.segment_threshold);
    for px in (0..pw).step_by(4) {
        put(&mut img, (left + px) as i64, ty, [200, 30, 30]);
        put(&mut img, (left + px + 1) as i64, ty, [200, 30, 30]);
    }
    let mut prev: Option<i64> = None;
    for px in 0..pw {
        let f = (px as usize * t / pw as usize).min(t - 1);
        let v = r.curve.get(f).cloned().unwrap_or(cmin);
        let y = cy(v);
        let (a, b) = match prev {
            Some(p) => (p.min(y), p.max(y)),
            None => (y, y),
        };
        for yy in a..=b {
            put(&mut img, (left + px) as i64, yy, if v > r.segment_threshold { [200, 30, 30] } else { ink });
        }
        prev = Some(y);
    }
    text(&mut img, 2, (cy0 + curve_h) as i64 - 12, "score", ink);
    text(&mut img, (left + pw + 4) as i64, ty - 4, &format!("{:.3}", r.segment_threshold), [200, 30, 30]);
    text(&mut img, 2, ty - 4, "thresh", [200, 30, 30]);
    // Segments as bars above the spectrogram.
    for seg in &r.segments {
        let x0 = left as i64 + (seg.start_s / dur * pw as f64) as i64;
        let x1 = left as i64 + (seg.end_s / dur * pw as f64) as i64;
        for x in x0..=x1.max(x0) {
            for y in (top as i64 - 6)..(top as i64 - 2) {
                put(&mut img, x, y, [200, 30, 30]);
            }
        }
    }
    // Colour bar.
    let bx = left + pw + 24;
    for py in 0..ph {
        let v = (ph - 1 - py) as f32 / (ph - 1) as f32;
        let c = magma(v);
        for dx in 0..16 {
            img.put_pixel(bx + dx, top + py, Rgb(c));
        }
    }
    for k in 0..=4 {
        let v = k as f32 / 4.0;
        let y = (top + ph - 1) as i64 - (v * (ph - 1) as f32) as i64;
        text(&mut img, (bx + 20) as i64, y - 4, &format!("{:.2}", heat_lo + v * (heat_hi - heat_lo)), ink);
    }
    let y = (top + ph - 1) as i64 - (heat(r.segment_threshold).clamp(0.0, 1.0) * (ph - 1) as f32) as i64;
    for dx in -3..20 {
        put(&mut img, bx as i64 + dx, y, [200, 30, 30]);
    }
    text(&mut img, bx as i64 - 8, top as i64 - 16, if r.units == "z" { "anomaly (z)" } else { "anomaly" }, ink);
    let verdict = format!(
        "score {:.3}  threshold {:.3}{}  {}",
        r.score,
        r.threshold,
        if r.units == "z" { " (z)" } else { "" },
        if r.is_anomaly { "ANOMALOUS" } else { "normal" }
    );
    text(&mut img, left as i64, 4, &verdict, if r.is_anomaly { [200, 30, 30] } else { ink });
    let _ = white;
    img
}

/// Renders `r` and writes it as a PNG to `path`.
///
/// # Errors
/// [`Error::Io`] if the file cannot be written.
pub fn save_png(r: &ClipResult, path: &std::path::Path) -> Result<()> {
    render(r)
        .save(path)
        .map_err(|e| Error::io(format!("writing {}", path.display()), std::io::Error::other(e.to_string())))
}
