//! EnvMix-style evaluation sets: real backgrounds with real isolated events inserted at a known onset and SNR.
//!
//! From a pool of background recordings and a pool of event recordings, [`make_set`] writes
//!
//! - `fit/*.wav`: normal clips (background only) for fitting;
//! - `test/*.wav`: normal clips and anomalous clips (background + one event);
//! - `test/masks/*.pgm`: per anomalous clip, the spectrogram-level ground truth: the time-frequency pixels of the
//!   front end's log-mel `[T, M]` (PGM image, `M` wide, `T` high, 255 = event) where the inserted event's log-mel
//!   exceeds the background's, computed from the isolated (scaled) event and the background separately;
//! - `fit.csv`, `test.csv`: `path,label,onset_s,offset_s,snr_db,mask,background,event` (paths relative to the
//!   CSV; `label` is `normal` or `anomaly`);
//! - `split.json`: which recordings went to fit and which to test.
//!
//! Rules:
//! - **Recordings never cross the split.** Backgrounds are grouped by recording (UrbanSound8K files
//!   `fsID-class-occurrence-slice.wav` by their `fsID`, other files by name) and by class (UrbanSound8K: the
//!   folder; others: the file name without trailing digits, within its folder); within each class, recordings
//!   are shuffled (seeded) and dealt alternately to fit and test, so both sides see every class that has at least
//!   two recordings; a class with a single recording goes to fit only. Events are used by test clips only.
//! - **Clips** are `length_s` long, cut at a random offset from a background; a background shorter than that is
//!   looped with a 100 ms equal-power crossfade. Backgrounds shorter than `min_background_s` are skipped.
//! - **Events** are trimmed to where their 10 ms RMS is within 40 dB of their loudest 10 ms, cut to the clip's
//!   length if longer, and inserted at a uniformly random onset so that they end inside the clip. The SNR cycles
//!   through `snrs_db` (default -6, 0, +6 dB): the event is scaled so that its energy over its span equals the
//!   background's energy over the same span times `10^(snr/10)`.
//! - An event mixed into a background recorded at a lower rate is first band-limited to that rate (resampled
//!   down and up), so that a band where the background has no signal at all does not give the event away.
//! - Everything is mixed at `sample_rate` (default 16 kHz, the rate of most of the sources) and written as
//!   32-bit float WAV (no clipping). Everything random comes from one seed.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::audio::{decode_file, resample, to_mono, ChannelSelect};
use crate::error::{Error, Result};
use crate::spectrogram::LogMel;

/// What [`make_set`] builds.
#[derive(Debug, Clone, PartialEq)]
pub struct MixConfig {
    /// Clip length, seconds.
    pub length_s: f64,
    /// Sample rate of the written clips, Hz.
    pub sample_rate: u32,
    /// Normal clips for fitting.
    pub fit_clips: usize,
    /// Normal clips in the test set.
    pub test_normal: usize,
    /// Anomalous clips in the test set (spread evenly over `snrs_db`).
    pub test_anomalous: usize,
    /// Event-to-background SNRs, dB.
    pub snrs_db: Vec<f64>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Backgrounds shorter than this are not used, seconds.
    pub min_background_s: f64,
}

impl Default for MixConfig {
    fn default() -> Self {
        MixConfig {
            length_s: 10.0,
            sample_rate: 16_000,
            fit_clips: 30,
            test_normal: 30,
            test_anomalous: 60,
            snrs_db: vec![-6.0, 0.0, 6.0],
            seed: 0,
            min_background_s: 1.0,
        }
    }
}

/// One written clip (a CSV row).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixRow {
    /// Path relative to the output folder.
    pub path: String,
    /// Anomalous (an event was inserted).
    pub anomaly: bool,
    /// Event onset, seconds (anomalous clips).
    pub onset_s: Option<f64>,
    /// Event offset, seconds (anomalous clips).
    pub offset_s: Option<f64>,
    /// SNR, dB (anomalous clips).
    pub snr_db: Option<f64>,
    /// Mask path relative to the output folder (anomalous clips).
    pub mask: Option<String>,
    /// Background recording (path as given).
    pub background: String,
    /// Event recording (anomalous clips).
    pub event: Option<String>,
}

impl MixRow {
    /// A normal clip (no event) cut from `background`.
    fn normal(path: String, background: String) -> Self {
        MixRow {
            path,
            anomaly: false,
            onset_s: None,
            offset_s: None,
            snr_db: None,
            mask: None,
            background,
            event: None,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct MixSummary {
    /// Fit clips.
    pub fit: Vec<MixRow>,
    /// Test clips.
    pub test: Vec<MixRow>,
    /// Background recordings used for fitting.
    pub fit_backgrounds: Vec<String>,
    /// Background recordings used for testing.
    pub test_backgrounds: Vec<String>,
    /// Event recordings (test only).
    pub events: Vec<String>,
    /// Backgrounds skipped as too short.
    pub skipped_short: Vec<String>,
}

/// Recording id and class of a background file (see the module documentation).
pub fn recording_and_class(path: &Path) -> (String, String) {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
    let folder = path.parent().map(|p| p.display().to_string()).unwrap_or_default();
    let parts: Vec<&str> = stem.split('-').collect();
    if parts.len() == 4 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) {
        return (format!("urbansound8k:{}", parts[0]), folder);
    }
    let class = stem.trim_end_matches(|c: char| c.is_ascii_digit()).to_string();
    (format!("{folder}/{stem}"), format!("{folder}/{class}"))
}

/// Event-to-background energy ratio over `span` in dB, `None` if either is silent.
pub fn snr_db(background: &[f32], event: &[f32]) -> Option<f64> {
    let e = event.iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
    let b = background.iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
    (e > 0.0 && b > 0.0).then(|| 10.0 * (e / b).log10())
}

/// Gain that brings `event` to `snr` dB over `background` (same length).
pub fn gain_for_snr(background: &[f32], event: &[f32], snr: f64) -> Option<f32> {
    let now = snr_db(background, event)?;
    Some(10f64.powf((snr - now) / 20.0) as f32)
}

/// `[first, last)` samples of `x` whose 10 ms RMS is within 40 dB of the loudest 10 ms.
pub fn active_span(x: &[f32], sample_rate: u32) -> (usize, usize) {
    let hop = (sample_rate as usize / 100).max(1);
    let rms: Vec<f64> =
        x.chunks(hop).map(|c| c.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / c.len() as f64).collect();
    let peak = rms.iter().cloned().fold(0.0, f64::max);
    if peak <= 0.0 {
        return (0, x.len());
    }
    let floor = peak * 1e-4;
    let first = rms.iter().position(|&r| r >= floor).unwrap_or(0);
    let last = rms.iter().rposition(|&r| r >= floor).unwrap_or(rms.len() - 1);
    (first * hop, ((last + 1) * hop).min(x.len()))
}

/// `len` samples of `x` from `offset`, looping `x` with a crossfade of `fade` samples when it is shorter.
pub fn loop_to(x: &[f32], len: usize, offset: usize, fade: usize) -> Vec<f32> {
    if x.len() >= len {
        let o = offset.min(x.len() - len);
        return x[o..o + len].to_vec();
    }
    let fade = fade.min(x.len() / 4);
    let period = x.len() - fade;
    let mut out = vec![0.0f32; len + x.len()];
    let mut start = 0;
    while start < len {
        for (i, &v) in x.iter().enumerate() {
            // Equal-power (sine/cosine) crossfade: the seam keeps the level of noise-like backgrounds, whose two
            // ends are uncorrelated (a linear fade would dip by 3 dB and mark every seam).
            let half_pi = std::f32::consts::FRAC_PI_2;
            let w = if fade > 0 && i < fade && start > 0 {
                (half_pi * i as f32 / fade as f32).sin()
            } else if fade > 0 && i >= x.len() - fade {
                (half_pi * (x.len() - i) as f32 / fade as f32).sin()
            } else {
                1.0
            };
            out[start + i] += v * w;
        }
        start += period;
    }
    out.truncate(len);
    out
}

/// Spectrogram-level ground truth `[T, M]` (1 = event): pixels where the log-mel of `event` (placed in an
/// otherwise silent clip) exceeds that of `background`, both at `sample_rate` Hz, with `front`'s front end.
///
/// # Errors
/// As [`LogMel::compute`] and [`resample`].
pub fn event_mask(
    front: &LogMel,
    background: &[f32],
    event: &[f32],
    sample_rate: u32,
) -> Result<(Vec<u8>, usize, usize)> {
    let to = front.config().sample_rate;
    let b = front.compute(&resample(background, sample_rate, to)?)?;
    let e = front.compute(&resample(event, sample_rate, to)?)?;
    let mask = e.data.iter().zip(&b.data).map(|(e, b)| u8::from(e > b)).collect();
    Ok((mask, b.frames, b.mel_bins))
}

/// Writes mono `x` as a 32-bit float WAV.
///
/// # Errors
/// [`Error::Io`] naming the path.
pub fn write_wav_f32(path: &Path, x: &[f32], sample_rate: u32) -> Result<()> {
    let data_len = (x.len() * 4) as u32;
    let mut b = Vec::with_capacity(44 + x.len() * 4);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&3u16.to_le_bytes()); // IEEE float
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&sample_rate.to_le_bytes());
    b.extend_from_slice(&(sample_rate * 4).to_le_bytes());
    b.extend_from_slice(&4u16.to_le_bytes());
    b.extend_from_slice(&32u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for v in x {
        b.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, b).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Writes a `[rows, cols]` 0/1 mask as a binary PGM (`cols` wide, `rows` high, 255 = 1).
///
/// # Errors
/// [`Error::Io`] naming the path.
pub fn write_mask_pgm(path: &Path, mask: &[u8], rows: usize, cols: usize) -> Result<()> {
    let mut b = format!("P5\n{cols} {rows}\n255\n").into_bytes();
    b.extend(mask.iter().map(|&v| if v > 0 { 255u8 } else { 0 }));
    std::fs::write(path, b).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Reads a binary PGM written by [`write_mask_pgm`]: `(mask [rows, cols] as 0/1, rows, cols)`.
///
/// # Errors
/// [`Error::Io`] for an unreadable file, [`Error::InvalidInput`] for another format.
pub fn read_mask_pgm(path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    let b = std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let bad = || Error::invalid(format!("{}: not a binary PGM mask (P5, maxval 255)", path.display()));
    // Header: four whitespace-separated tokens, then one whitespace byte.
    let mut tokens = Vec::new();
    let mut i = 0;
    while tokens.len() < 4 {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let s = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        if s == i {
            return Err(bad());
        }
        tokens.push(String::from_utf8_lossy(&b[s..i]).to_string());
    }
    i += 1;
    if tokens[0] != "P5" || tokens[3] != "255" {
        return Err(bad());
    }
    let cols: usize = tokens[1].parse().map_err(|_| bad())?;
    let rows: usize = tokens[2].parse().map_err(|_| bad())?;
    // Checked: the sizes come from the file (an overflow would pass the length check and misreport the mask).
    let end = rows.checked_mul(cols).and_then(|n| n.checked_add(i)).ok_or_else(bad)?;
    if b.len() < end {
        return Err(bad());
    }
    Ok((b[i..end].iter().map(|&v| u8::from(v > 127)).collect(), rows, cols))
}

fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

/// Mono samples at `sample_rate` and the recording's own rate.
fn load(path: &Path, sample_rate: u32) -> Result<(Vec<f32>, u32)> {
    let a = decode_file(path)?;
    let mono = to_mono(&a, ChannelSelect::Mix)?;
    Ok((resample(&mono, a.sample_rate, sample_rate)?, a.sample_rate))
}

fn csv_field(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_default()
}

/// Writes `rows` as CSV at `path`.
///
/// # Errors
/// [`Error::Io`] naming the path.
pub fn write_csv(path: &Path, rows: &[MixRow], base: &str) -> Result<()> {
    let mut s = String::from("path,label,onset_s,offset_s,snr_db,mask,background,event\n");
    let q = |x: &str| {
        if x.contains(',') || x.contains('"') {
            format!("\"{}\"", x.replace('"', "\"\""))
        } else {
            x.to_string()
        }
    };
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            q(r.path.strip_prefix(base).unwrap_or(&r.path)),
            if r.anomaly { "anomaly" } else { "normal" },
            csv_field(r.onset_s),
            csv_field(r.offset_s),
            r.snr_db.map(|x| format!("{x}")).unwrap_or_default(),
            q(r.mask.as_deref().map(|m| m.strip_prefix(base).unwrap_or(m)).unwrap_or("")),
            q(&r.background),
            q(r.event.as_deref().unwrap_or(""))
        ));
    }
    std::fs::write(path, s).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Builds the set in `out` (see the module documentation). `front` is the front end of the masks.
///
/// # Errors
/// [`Error::InvalidInput`] when there are not enough usable backgrounds (at least one for fit and one for test)
/// or no events; [`Error::Io`] / [`Error::Audio`] for unreadable inputs or unwritable outputs.
pub fn make_set(
    backgrounds: &[PathBuf],
    events: &[PathBuf],
    out: &Path,
    cfg: &MixConfig,
    front: &LogMel,
) -> Result<MixSummary> {
    if cfg.snrs_db.is_empty() || cfg.length_s.is_nan() || cfg.length_s <= 0.0 || cfg.sample_rate == 0 {
        return Err(Error::invalid("mix: need at least one SNR, a positive length and sample rate"));
    }
    let sr = cfg.sample_rate;
    let len = (cfg.length_s * sr as f64).round() as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    // Group backgrounds by class, then recording.
    let mut by_class: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<PathBuf>>> =
        Default::default();
    for p in backgrounds {
        let (rec, class) = recording_and_class(p);
        by_class.entry(class).or_default().entry(rec).or_default().push(p.clone());
    }
    let (mut fit_bg, mut test_bg) = (Vec::new(), Vec::new());
    for recs in by_class.values() {
        let mut r: Vec<&Vec<PathBuf>> = recs.values().collect();
        shuffle(&mut r, &mut rng);
        for (i, files) in r.iter().enumerate() {
            let side = if r.len() < 2 || i % 2 == 0 { &mut fit_bg } else { &mut test_bg };
            side.extend(files.iter().cloned());
        }
    }
    let mut skipped_short = Vec::new();
    let mut rates = std::collections::HashMap::new();
    let mut load_pool = |files: Vec<PathBuf>| -> Result<Vec<(PathBuf, Vec<f32>)>> {
        let mut v = Vec::new();
        for f in files {
            let (x, rate) = load(&f, sr)?;
            if (x.len() as f64) < cfg.min_background_s * sr as f64 {
                skipped_short.push(f.display().to_string());
                continue;
            }
            rates.insert(f.display().to_string(), rate);
            v.push((f, x));
        }
        Ok(v)
    };
    let mut fit_pool = load_pool(fit_bg)?;
    let mut test_pool = load_pool(test_bg)?;
    if fit_pool.is_empty() || test_pool.is_empty() {
        return Err(Error::invalid(format!(
            "mix: {} fit and {} test backgrounds after the split; give more background recordings (at least two of a \
             class)",
            fit_pool.len(),
            test_pool.len()
        )));
    }
    let mut ev_pool = Vec::new();
    for f in events {
        let (x, _) = load(f, sr)?;
        let (a, b) = active_span(&x, sr);
        let mut x = x[a..b].to_vec();
        x.truncate(len);
        if x.len() >= sr as usize / 100 {
            ev_pool.push((f.clone(), x));
        }
    }
    if ev_pool.is_empty() {
        return Err(Error::invalid("mix: no usable event recording"));
    }
    shuffle(&mut fit_pool, &mut rng);
    shuffle(&mut test_pool, &mut rng);
    shuffle(&mut ev_pool, &mut rng);
    for d in ["fit", "test", "test/masks"] {
        std::fs::create_dir_all(out.join(d))
            .map_err(|e| Error::io(format!("creating {}", out.join(d).display()), e))?;
    }
    let fade = sr as usize / 10;
    let cut = |pool: &[(PathBuf, Vec<f32>)], i: usize, rng: &mut ChaCha8Rng| {
        let (p, x) = &pool[i % pool.len()];
        let off = if x.len() > len { rng.random_range(0..=x.len() - len) } else { 0 };
        (p.display().to_string(), loop_to(x, len, off, fade))
    };
    let mut fit = Vec::new();
    for i in 0..cfg.fit_clips {
        let (bg, x) = cut(&fit_pool, i, &mut rng);
        let path = format!("fit/fit_{i:04}.wav");
        write_wav_f32(&out.join(&path), &x, sr)?;
        fit.push(MixRow::normal(path, bg));
    }
    let mut test = Vec::new();
    for i in 0..cfg.test_normal {
        let (bg, x) = cut(&test_pool, i, &mut rng);
        let path = format!("test/normal_{i:04}.wav");
        write_wav_f32(&out.join(&path), &x, sr)?;
        test.push(MixRow::normal(path, bg));
    }
    // Anomalous clips use the test backgrounds in another order than the normal ones.
    let offset = test_pool.len() / 2;
    for i in 0..cfg.test_anomalous {
        let (bg, x) = cut(&test_pool, i + offset, &mut rng);
        let (ev_path, ev) = &ev_pool[i % ev_pool.len()];
        // An event is band-limited to its background's bandwidth: a band where the background recording has no
        // signal at all (an 11 kHz loop has none above 5.5 kHz) would otherwise give every event away.
        let bg_rate = rates.get(&bg).copied().unwrap_or(sr);
        let limited;
        let ev = if bg_rate < sr {
            limited = resample(&resample(ev, sr, bg_rate)?, bg_rate, sr)?;
            &limited[..ev.len().min(limited.len())]
        } else {
            ev.as_slice()
        };
        let snr = cfg.snrs_db[i % cfg.snrs_db.len()];
        let onset = rng.random_range(0..=len - ev.len());
        let span = &x[onset..onset + ev.len()];
        let g = gain_for_snr(span, ev, snr).unwrap_or(1.0);
        let mut placed = vec![0.0f32; len];
        for (k, v) in ev.iter().enumerate() {
            placed[onset + k] = v * g;
        }
        let mix: Vec<f32> = x.iter().zip(&placed).map(|(a, b)| a + b).collect();
        let (mask, rows, cols) = event_mask(front, &x, &placed, sr)?;
        let path = format!("test/anomaly_{i:04}.wav");
        let mpath = format!("test/masks/anomaly_{i:04}.pgm");
        write_wav_f32(&out.join(&path), &mix, sr)?;
        write_mask_pgm(&out.join(&mpath), &mask, rows, cols)?;
        test.push(MixRow {
            path,
            anomaly: true,
            onset_s: Some(onset as f64 / sr as f64),
            offset_s: Some((onset + ev.len()) as f64 / sr as f64),
            snr_db: Some(snr),
            mask: Some(mpath),
            background: bg,
            event: Some(ev_path.display().to_string()),
        });
    }
    write_csv(&out.join("fit.csv"), &fit, "")?;
    write_csv(&out.join("test.csv"), &test, "")?;
    let summary = MixSummary {
        fit,
        test,
        fit_backgrounds: fit_pool.iter().map(|p| p.0.display().to_string()).collect(),
        test_backgrounds: test_pool.iter().map(|p| p.0.display().to_string()).collect(),
        events: ev_pool.iter().map(|p| p.0.display().to_string()).collect(),
        skipped_short,
    };
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "config": {"length_s": cfg.length_s, "sample_rate": cfg.sample_rate, "seed": cfg.seed, "snrs_db": cfg.snrs_db},
        "fit_backgrounds": summary.fit_backgrounds,
        "test_backgrounds": summary.test_backgrounds,
        "events": summary.events,
        "skipped_short": summary.skipped_short,
    }))
    .map_err(|e| Error::invalid(format!("split.json: {e}")))?;
    std::fs::write(out.join("split.json"), json).map_err(|e| Error::io("writing split.json", e))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snr_gain_hits_the_target() {
        let bg: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.2).collect();
        let ev: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.05).sin()).collect();
        for snr in [-6.0, 0.0, 6.0] {
            let g = gain_for_snr(&bg, &ev, snr).unwrap();
            let scaled: Vec<f32> = ev.iter().map(|v| v * g).collect();
            assert!((snr_db(&bg, &scaled).unwrap() - snr).abs() < 1e-3);
        }
    }

    #[test]
    fn recordings_and_classes() {
        let (r, c) = recording_and_class(Path::new("/d/us/dog_bark/100795-3-1-1.wav"));
        assert_eq!((r.as_str(), c.as_str()), ("urbansound8k:100795", "/d/us/dog_bark"));
        let (r, c) = recording_and_class(Path::new("/d/lincity/Farm2.wav"));
        assert_eq!((r.as_str(), c.as_str()), ("/d/lincity/Farm2", "/d/lincity/Farm"));
    }

    #[test]
    fn loop_and_span() {
        // Equal power: two uncorrelated signals crossfaded keep their power (sin^2 + cos^2 = 1).
        let x: Vec<f32> = (0..400).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let y = loop_to(&x, 1000, 0, 40);
        assert_eq!(y.len(), 1000);
        assert_eq!(&y[..300], &x[..300]);
        let hp = std::f32::consts::FRAC_PI_2;
        for i in 0..40 {
            let (a, b) = ((hp * (40 - i) as f32 / 40.0).sin(), (hp * i as f32 / 40.0).sin());
            assert!((a * a + b * b - 1.0).abs() < 1e-5);
        }
        let mut z = vec![0.0f32; 16000];
        z[8000..9000].iter_mut().for_each(|v| *v = 0.5);
        let (a, b) = active_span(&z, 16000);
        assert_eq!((a, b), (8000, 9120));
    }
}
