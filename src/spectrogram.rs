//! Log-mel spectrogram: the backbone's front end, exact to the reference (librosa or torchaudio semantics).
//!
//! Output layout everywhere: [`Spectrogram`] is `[frames, mel_bins]`, row-major, one row per STFT frame.
//!
//! [`LogMel`] follows librosa 0.11: `librosa.stft` (centre padding by `n_fft / 2`, window of `win_length`
//! zero-padded to `n_fft`, float64 FFT), `|X|^power`, `librosa.filters.mel` (float32 weights), then the log
//! compression of the preset (`librosa.power_to_db` for PANNs / CLAP, i.e. torchlibrosa's front end; aisfx's
//! `log10(1 + 10000 x) / 9.457798957824707`). `tests/spectrogram_parity.rs` checks every preset against librosa
//! outputs stored by `tests/reference/spectrogram_ref.py`. [`LogMelStream`] gives the same frames push by push.
//!
//! The `efficientat` preset follows EfficientAT's `AugmentMelSTFT` in eval mode (Schmid et al., ICASSP 2023,
//! `models/preprocess.py`) instead: a pre-emphasis filter before the STFT ([`LogMelConfig::pre_emphasis`]),
//! torch.stft with a symmetric Hann window, Kaldi mel filters (`torchaudio.compliance.kaldi.get_mel_banks`,
//! [`MelFilters::Kaldi`]) and `(ln(x + 1e-5) + 4.5) / 5` ([`LogCompression::Ln`]); checked against torch +
//! torchaudio outputs stored by `tests/reference/efficientat_frontend_ref.py` (`tests/efficientat.rs`).

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Window function applied to each frame before the FFT.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// Periodic Hann of `win_length` samples (`scipy.signal.get_window("hann", n, fftbins=True)`, librosa's default).
    HannPeriodic,
    /// Symmetric Hann (`np.hanning`).
    HannSymmetric,
}

/// How the signal is padded when frames are centred (`center=True` in librosa).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadMode {
    /// Zeros (librosa >= 0.10 default).
    Constant,
    /// Mirror without repeating the edge sample (`np.pad(mode="reflect")`, torchlibrosa).
    Reflect,
}

/// Mel frequency scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MelScale {
    /// `2595 log10(1 + f / 700)`.
    Htk,
    /// Slaney's Auditory Toolbox scale: linear below 1 kHz, logarithmic above (librosa's default).
    Slaney,
    /// Kaldi's `1127 ln(1 + f / 700)` (`torchaudio.compliance.kaldi.mel_scale`; HTK's scale in natural log).
    Kaldi,
}

/// How the triangular mel filters are laid over the FFT bins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MelFilters {
    /// `librosa.filters.mel`: `n_mels + 2` points equally spaced on the mel scale, triangles linear in Hz between
    /// them, over all `n_fft / 2 + 1` bins.
    #[default]
    Librosa,
    /// `torchaudio.compliance.kaldi.get_mel_banks` (no VTLN warping), as EfficientAT uses it: the same points,
    /// triangles linear in mel (`max(0, min(up, down))` of the two mel-domain slopes), over the first `n_fft / 2`
    /// bins; the last (Nyquist) bin gets weight 0 (EfficientAT pads the `[n_mels, n_fft / 2]` banks with a zero
    /// column). Needs an even `n_fft`.
    Kaldi,
}

impl MelFilters {
    fn is_librosa(&self) -> bool {
        *self == MelFilters::Librosa
    }
}

/// Normalisation of each triangular mel filter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MelNorm {
    /// Peak 1 triangles.
    None,
    /// Slaney area normalisation `2 / (f_hi - f_lo)` (librosa `norm="slaney"`).
    Slaney,
    /// Each filter sums to 1 over the FFT bins (librosa `norm=1.0`, the L1 norm).
    UnitSum,
}

/// Compression of mel power to the log scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogCompression {
    /// `10 log10(max(x, amin)) - 10 log10(max(amin, ref))`, then, if `top_db` is set, floored at `max - top_db`
    /// (librosa `power_to_db`).
    Db {
        /// Smallest power, e.g. `1e-10`.
        amin: f32,
        /// Reference power (0 dB), e.g. `1.0`.
        reference: f32,
        /// Dynamic range in dB below the maximum, or `None` for no floor.
        top_db: Option<f32>,
    },
    /// `log10(1 + c x) / d` (aisfx: `c = 10000`, `d = 9.457798957824707`).
    Log1p {
        /// Multiplier inside the logarithm.
        c: f32,
        /// Divisor after the logarithm.
        d: f32,
    },
    /// `(ln(x + eps) + shift) / scale` in float32 (EfficientAT: `eps = 1e-5`, `shift = 4.5`, `scale = 5`; its
    /// "fast normalization").
    Ln {
        /// Added to the mel power before the logarithm (> 0).
        eps: f32,
        /// Added after the logarithm.
        shift: f32,
        /// Divisor at the end (non-zero).
        scale: f32,
    },
}

impl LogCompression {
    /// The compressed value of zero power: what digital silence (and window padding) looks like after this
    /// compression. `Db`: `10 log10(amin) - 10 log10(max(amin, reference))`; `Log1p`: 0; `Ln`:
    /// `(ln(eps) + shift) / scale` (float32, as [`LogMel`] computes it).
    pub fn of_zero_power(&self) -> f32 {
        match *self {
            LogCompression::Db { amin, reference, .. } => 10.0 * amin.log10() - 10.0 * amin.max(reference).log10(),
            LogCompression::Log1p { .. } => 0.0,
            LogCompression::Ln { eps, shift, scale } => ((0.0f32 + eps).ln() + shift) / scale,
        }
    }
}

/// Named front-end presets, each equal to a reference implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// aisfx 0.1.2 librosa front end (Ma & Lerch, ISMIR 2022): 44.1 kHz, frame 2048, hop 1024, Hann, power,
    /// 96 HTK mel bands 0-22050 Hz with unit-sum filters, `log10(1 + 10000 x) / 9.457798957824707`.
    Aisfx,
    /// PANNs CNN14 (torchlibrosa): 32 kHz, frame 1024, hop 320, 64 Slaney bands 50-14000 Hz, `10 log10(max(x, 1e-10))`.
    PannsCnn14,
    /// PANNs CNN14 16 kHz: window 512, hop 160, 64 Slaney bands 50-8000 Hz.
    #[serde(rename = "panns-16k")]
    Panns16k,
    /// Microsoft CLAP 2022 audio encoder: 44.1 kHz, frame 1024, hop 320, 64 Slaney bands 50-14000 Hz.
    #[serde(rename = "clap-2022")]
    Clap2022,
    /// EfficientAT (`AugmentMelSTFT` in eval mode; Schmid, Koutini & Widmer, ICASSP 2023): 32 kHz, pre-emphasis
    /// `y[n] = x[n + 1] - 0.97 x[n]`, symmetric 800-tap Hann centred in a 1024 FFT, hop 320, centred frames with
    /// reflect padding, power, 128 Kaldi mel bands 0-15000 Hz, `(ln(x + 1e-5) + 4.5) / 5`.
    Efficientat,
}

/// Every parameter of the log-mel front end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogMelConfig {
    /// Sample rate the audio must have, Hz.
    pub sample_rate: u32,
    /// FFT length, samples.
    pub n_fft: usize,
    /// Window length, samples (<= `n_fft`; centred in the FFT frame when shorter, as librosa does).
    pub win_length: usize,
    /// Hop length between frames, samples.
    pub hop_length: usize,
    /// Window function.
    pub window: Window,
    /// Centre frames on `t * hop_length` by padding `n_fft / 2` samples at both ends.
    pub center: bool,
    /// Padding used when `center` is true.
    pub pad_mode: PadMode,
    /// Exponent of the magnitude spectrum (2.0 = power).
    pub power: f32,
    /// Number of mel bands.
    pub n_mels: usize,
    /// Lowest filter edge, Hz.
    pub f_min: f32,
    /// Highest filter edge, Hz.
    pub f_max: f32,
    /// Mel scale.
    pub mel_scale: MelScale,
    /// Filter normalisation.
    pub mel_norm: MelNorm,
    /// Log compression.
    pub log: LogCompression,
    /// Divide the whole clip (or stream window) by its peak absolute sample before the STFT (aisfx does this).
    pub peak_normalize: bool,
    /// How the mel filters are laid over the FFT bins (absent in JSON = [`MelFilters::Librosa`], so configs and
    /// banks written before this field load unchanged).
    #[serde(default, skip_serializing_if = "MelFilters::is_librosa")]
    pub mel_filters: MelFilters,
    /// Pre-emphasis coefficient `a`: the STFT sees `y[n] = x[n + 1] - a x[n]` (float32), one sample shorter than
    /// `x` (EfficientAT: 0.97, a 2-tap convolution without padding). `None` (absent in JSON): no pre-emphasis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_emphasis: Option<f32>,
}

impl LogMelConfig {
    /// The configuration of a named preset.
    pub fn preset(preset: Preset) -> Self {
        match preset {
            Preset::Aisfx => LogMelConfig {
                sample_rate: 44_100,
                n_fft: 2048,
                win_length: 2048,
                hop_length: 1024,
                window: Window::HannPeriodic,
                center: true,
                pad_mode: PadMode::Constant,
                power: 2.0,
                n_mels: 96,
                f_min: 0.0,
                f_max: 22_050.0,
                mel_scale: MelScale::Htk,
                mel_norm: MelNorm::UnitSum,
                log: LogCompression::Log1p { c: 10_000.0, d: 9.457_799 },
                peak_normalize: false,
                mel_filters: MelFilters::Librosa,
                pre_emphasis: None,
            },
            Preset::PannsCnn14 | Preset::Clap2022 => LogMelConfig {
                sample_rate: if preset == Preset::PannsCnn14 { 32_000 } else { 44_100 },
                n_fft: 1024,
                win_length: 1024,
                hop_length: 320,
                window: Window::HannPeriodic,
                center: true,
                pad_mode: PadMode::Reflect,
                power: 2.0,
                n_mels: 64,
                f_min: 50.0,
                f_max: 14_000.0,
                mel_scale: MelScale::Slaney,
                mel_norm: MelNorm::Slaney,
                log: LogCompression::Db { amin: 1e-10, reference: 1.0, top_db: None },
                peak_normalize: false,
                mel_filters: MelFilters::Librosa,
                pre_emphasis: None,
            },
            Preset::Panns16k => LogMelConfig {
                sample_rate: 16_000,
                n_fft: 512,
                win_length: 512,
                hop_length: 160,
                window: Window::HannPeriodic,
                center: true,
                pad_mode: PadMode::Reflect,
                power: 2.0,
                n_mels: 64,
                f_min: 50.0,
                f_max: 8_000.0,
                mel_scale: MelScale::Slaney,
                mel_norm: MelNorm::Slaney,
                log: LogCompression::Db { amin: 1e-10, reference: 1.0, top_db: None },
                peak_normalize: false,
                mel_filters: MelFilters::Librosa,
                pre_emphasis: None,
            },
            Preset::Efficientat => LogMelConfig {
                sample_rate: 32_000,
                n_fft: 1024,
                win_length: 800,
                hop_length: 320,
                window: Window::HannSymmetric,
                center: true,
                pad_mode: PadMode::Reflect,
                power: 2.0,
                n_mels: 128,
                f_min: 0.0,
                f_max: 15_000.0,
                mel_scale: MelScale::Kaldi,
                mel_norm: MelNorm::None,
                log: LogCompression::Ln { eps: 1e-5, shift: 4.5, scale: 5.0 },
                peak_normalize: false,
                mel_filters: MelFilters::Kaldi,
                pre_emphasis: Some(0.97),
            },
        }
    }

    /// Checks that the parameters are usable (positive sizes, `win_length <= n_fft`, `f_min < f_max <= sr / 2`,
    /// a finite positive `power`, log parameters librosa accepts: `amin > 0`, `top_db >= 0`, `c > 0`, `d != 0`,
    /// and `eps > 0`, `scale != 0` for [`LogCompression::Ln`]), an even `n_fft` for [`MelFilters::Kaldi`] and a
    /// finite pre-emphasis coefficient.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.sample_rate == 0 || self.n_fft == 0 || self.hop_length == 0 || self.n_mels == 0 {
            return Err(Error::invalid("log-mel config: sample_rate, n_fft, hop_length and n_mels must be > 0"));
        }
        if self.win_length == 0 || self.win_length > self.n_fft {
            return Err(Error::invalid(format!(
                "log-mel config: win_length {} must be in 1..={} (n_fft)",
                self.win_length, self.n_fft
            )));
        }
        if !(self.f_min >= 0.0 && self.f_min < self.f_max && self.f_max <= self.sample_rate as f32 / 2.0 + 1e-3) {
            return Err(Error::invalid(format!(
                "log-mel config: need 0 <= f_min ({}) < f_max ({}) <= sample_rate / 2 ({})",
                self.f_min,
                self.f_max,
                self.sample_rate as f32 / 2.0
            )));
        }
        if !(self.power.is_finite() && self.power > 0.0) {
            return Err(Error::invalid(format!("log-mel config: power {} must be finite and > 0", self.power)));
        }
        match self.log {
            LogCompression::Db { amin, reference, top_db } => {
                if !(amin.is_finite() && amin > 0.0 && reference.is_finite()) {
                    return Err(Error::invalid(format!(
                        "log-mel config: dB compression needs finite amin > 0 (got {amin}) and finite reference (got {reference})"
                    )));
                }
                if let Some(t) = top_db {
                    if !(t.is_finite() && t >= 0.0) {
                        return Err(Error::invalid(format!("log-mel config: top_db {t} must be finite and >= 0")));
                    }
                }
            }
            LogCompression::Log1p { c, d } => {
                if !(c.is_finite() && c > 0.0 && d.is_finite() && d != 0.0) {
                    return Err(Error::invalid(format!(
                        "log-mel config: log1p compression needs finite c > 0 (got {c}) and finite d != 0 (got {d})"
                    )));
                }
            }
            LogCompression::Ln { eps, shift, scale } => {
                if !(eps.is_finite() && eps > 0.0 && shift.is_finite() && scale.is_finite() && scale != 0.0) {
                    return Err(Error::invalid(format!(
                        "log-mel config: ln compression needs finite eps > 0 (got {eps}), finite shift (got {shift}) \
                         and finite scale != 0 (got {scale})"
                    )));
                }
            }
        }
        if self.mel_filters == MelFilters::Kaldi && !self.n_fft.is_multiple_of(2) {
            return Err(Error::invalid(format!(
                "log-mel config: Kaldi mel filters need an even n_fft, got {}",
                self.n_fft
            )));
        }
        if let Some(a) = self.pre_emphasis {
            if !a.is_finite() {
                return Err(Error::invalid(format!("log-mel config: pre-emphasis coefficient {a} must be finite")));
            }
        }
        Ok(())
    }

    /// Duration of one hop, seconds.
    pub fn hop_seconds(&self) -> f64 {
        self.hop_length as f64 / self.sample_rate as f64
    }
}

/// A log-mel spectrogram, `[frames, mel_bins]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrogram {
    /// Number of frames (rows).
    pub frames: usize,
    /// Number of mel bands (columns).
    pub mel_bins: usize,
    /// `frames * mel_bins` values, frame-major.
    pub data: Vec<f32>,
}

impl Spectrogram {
    /// Row `t` (one frame, `mel_bins` values).
    pub fn frame(&self, t: usize) -> &[f32] {
        &self.data[t * self.mel_bins..(t + 1) * self.mel_bins]
    }
}

/// The fixed, once-planned parts of a [`LogMel`] front end shared by [`LogMel::compute`] and [`LogMelStream`].
struct Plan {
    /// FFT length.
    n_fft: usize,
    /// Window zero-padded (centred) to `n_fft`, float64 as in librosa.
    window: Vec<f64>,
    /// Range `[lo, hi)` of `window` that may be non-zero (the `win_length` samples).
    win_lo: usize,
    win_hi: usize,
    /// Dense filterbank `[n_mels, n_bins]`, float32 exactly as `librosa.filters.mel` returns it.
    filterbank: Vec<f32>,
    /// Per mel band: first non-zero bin, offset into `sparse`, number of bins.
    rows: Vec<(usize, usize, usize)>,
    /// The non-zero filter weights of every band, back to back, widened to f64 for accumulation.
    sparse: Vec<f64>,
    /// The `n_mels + 2` mel points (filter edges), Hz, float64.
    mel_points: Vec<f64>,
    /// Real-to-complex FFT of length `n_fft`, float64 (numpy's `rfft` precision, which librosa uses).
    fft: Arc<dyn RealToComplex<f64>>,
}

/// Per-call (or per-stream) work buffers, so that no frame allocates.
struct Scratch {
    input: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    fft_scratch: Vec<Complex<f64>>,
}

impl Plan {
    fn new(c: &LogMelConfig) -> Self {
        let n_fft = c.n_fft;
        let n_bins = n_fft / 2 + 1;

        // Window of win_length samples, centred in n_fft (librosa.util.pad_center: lpad = (size - n) // 2).
        let win = window_values(c.window, c.win_length);
        let win_lo = (n_fft - c.win_length) / 2;
        let win_hi = win_lo + c.win_length;
        let mut window = vec![0.0f64; n_fft];
        window[win_lo..win_hi].copy_from_slice(&win);

        let (filterbank, mel_points) = mel_filterbank(c, n_bins);
        let mut rows = Vec::with_capacity(c.n_mels);
        let mut sparse = Vec::new();
        for m in 0..c.n_mels {
            let row = &filterbank[m * n_bins..(m + 1) * n_bins];
            match row.iter().position(|&w| w != 0.0) {
                Some(start) => {
                    let end = n_bins - row.iter().rev().position(|&w| w != 0.0).unwrap_or(0);
                    rows.push((start, sparse.len(), end - start));
                    sparse.extend(row[start..end].iter().map(|&w| w as f64));
                }
                None => rows.push((0, sparse.len(), 0)),
            }
        }

        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(n_fft);
        Plan { n_fft, window, win_lo, win_hi, filterbank, rows, sparse, mel_points, fft }
    }

    fn scratch(&self) -> Scratch {
        Scratch {
            input: self.fft.make_input_vec(),
            spectrum: self.fft.make_output_vec(),
            fft_scratch: self.fft.make_scratch_vec(),
        }
    }
}

/// Window of `n` samples, float64, as scipy / numpy compute it.
fn window_values(w: Window, n: usize) -> Vec<f64> {
    match w {
        // scipy.signal.windows.hann(n, sym=False) = general_cosine(n + 1, [0.5, 0.5]) truncated to n:
        // fac = linspace(-pi, pi, n + 1); w = 0.5 + 0.5 cos(fac).
        Window::HannPeriodic => {
            let fac = linspace(-std::f64::consts::PI, std::f64::consts::PI, n + 1);
            fac[..n].iter().map(|&f| 0.5 + 0.5 * f.cos()).collect()
        }
        // np.hanning(n) = 0.5 - 0.5 cos(2 pi k / (n - 1)); np.hanning(1) = [1.0].
        Window::HannSymmetric => {
            if n == 1 {
                return vec![1.0];
            }
            (0..n).map(|k| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / (n - 1) as f64).cos()).collect()
        }
    }
}

/// `np.linspace(start, stop, num)` (endpoint included), reproducing numpy's arithmetic: `i * step + start`, last
/// value set to `stop`.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// `librosa.hz_to_mel` for one frequency (Kaldi: `torchaudio.compliance.kaldi.mel_scale_scalar`).
fn hz_to_mel(f: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 2595.0 * (1.0 + f / 700.0).log10(),
        MelScale::Kaldi => 1127.0 * (1.0 + f / 700.0).ln(),
        MelScale::Slaney => {
            let f_sp = 200.0 / 3.0;
            let min_log_hz = 1000.0;
            let min_log_mel = min_log_hz / f_sp;
            let logstep = 6.4f64.ln() / 27.0;
            if f >= min_log_hz {
                min_log_mel + (f / min_log_hz).ln() / logstep
            } else {
                f / f_sp
            }
        }
    }
}

/// `librosa.mel_to_hz` for one mel value (Kaldi: `torchaudio.compliance.kaldi.inverse_mel_scale_scalar`).
fn mel_to_hz(m: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 700.0 * (10f64.powf(m / 2595.0) - 1.0),
        MelScale::Kaldi => 700.0 * ((m / 1127.0).exp() - 1.0),
        MelScale::Slaney => {
            let f_sp = 200.0 / 3.0;
            let min_log_hz = 1000.0;
            let min_log_mel = min_log_hz / f_sp;
            let logstep = 6.4f64.ln() / 27.0;
            if m >= min_log_mel {
                min_log_hz * (logstep * (m - min_log_mel)).exp()
            } else {
                f_sp * m
            }
        }
    }
}

/// `librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk, norm, dtype=float32)` (or, for [`MelFilters::Kaldi`],
/// `torchaudio.compliance.kaldi.get_mel_banks` padded with a zero Nyquist column): returns the dense
/// `[n_mels, n_bins]` float32 weights and the `n_mels + 2` mel points in Hz. Ramps are computed in float64 from
/// `np.fft.rfftfreq(n_fft, 1 / sr)` and the mel points, then cast to float32, then normalised the way librosa
/// does (Slaney: float32 weights times a float64 `2 / (f_hi - f_lo)`; L1: float32 weights divided by their
/// float64 sum, rows whose sum is below float32's `tiny` left unchanged).
fn mel_filterbank(c: &LogMelConfig, n_bins: usize) -> (Vec<f32>, Vec<f64>) {
    let n_mels = c.n_mels;
    // np.fft.rfftfreq(n, d=1/sr): k * (1 / (n * d)).
    let val = 1.0 / (c.n_fft as f64 * (1.0 / c.sample_rate as f64));
    let fftfreqs: Vec<f64> = (0..n_bins).map(|k| k as f64 * val).collect();
    let min_mel = hz_to_mel(c.f_min as f64, c.mel_scale);
    let max_mel = hz_to_mel(c.f_max as f64, c.mel_scale);
    let mel_f: Vec<f64> =
        linspace(min_mel, max_mel, n_mels + 2).into_iter().map(|m| mel_to_hz(m, c.mel_scale)).collect();
    let fdiff: Vec<f64> = mel_f.windows(2).map(|w| w[1] - w[0]).collect();

    let mut weights = vec![0.0f32; n_mels * n_bins];
    for i in 0..n_mels {
        let row = &mut weights[i * n_bins..(i + 1) * n_bins];
        match c.mel_filters {
            MelFilters::Librosa => {
                for (k, w) in row.iter_mut().enumerate() {
                    let lower = -(mel_f[i] - fftfreqs[k]) / fdiff[i];
                    let upper = (mel_f[i + 2] - fftfreqs[k]) / fdiff[i + 1];
                    *w = lower.min(upper).max(0.0) as f32;
                }
            }
            MelFilters::Kaldi => {
                // get_mel_banks: mel_freq_delta = (mel_high - mel_low) / (n_mels + 1); left, centre and right
                // mels of band i are mel_low + (i, i + 1, i + 2) * delta; bin k < n_fft / 2 sits at mel(k sr / n_fft).
                let delta = (max_mel - min_mel) / (n_mels + 1) as f64;
                let (left, centre, right) =
                    (min_mel + i as f64 * delta, min_mel + (i + 1) as f64 * delta, min_mel + (i + 2) as f64 * delta);
                for (k, w) in row[..c.n_fft / 2].iter_mut().enumerate() {
                    let mel = hz_to_mel(fftfreqs[k], c.mel_scale);
                    let up = (mel - left) / (centre - left);
                    let down = (right - mel) / (right - centre);
                    *w = up.min(down).max(0.0) as f32;
                }
            }
        }
        match c.mel_norm {
            MelNorm::None => {}
            MelNorm::Slaney => {
                let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
                for w in row.iter_mut() {
                    *w = (*w as f64 * enorm) as f32;
                }
            }
            MelNorm::UnitSum => {
                let sum: f64 = row.iter().map(|&w| (w as f64).abs()).sum();
                if sum >= f32::MIN_POSITIVE as f64 {
                    for w in row.iter_mut() {
                        *w = (*w as f64 / sum) as f32;
                    }
                }
            }
        }
    }
    (weights, mel_f)
}

/// The log compression, precomputed.
#[derive(Clone, Copy)]
enum Compress {
    Db { amin: f32, offset: f32 },
    Log1p { c: f32, d: f32 },
    Ln { eps: f32, shift: f32, scale: f32 },
}

impl Compress {
    fn new(log: &LogCompression) -> Self {
        match *log {
            LogCompression::Db { amin, reference, .. } => {
                Compress::Db { amin, offset: 10.0 * amin.max(reference).log10() }
            }
            LogCompression::Log1p { c, d } => Compress::Log1p { c, d },
            LogCompression::Ln { eps, shift, scale } => Compress::Ln { eps, shift, scale },
        }
    }

    /// float32 arithmetic, as numpy does on the float32 mel spectrogram.
    #[inline]
    fn apply(self, x: f32) -> f32 {
        match self {
            Compress::Db { amin, offset } => {
                let db = 10.0 * x.max(amin).log10();
                if offset == 0.0 {
                    db
                } else {
                    db - offset
                }
            }
            Compress::Log1p { c, d } => (1.0 + c * x).log10() / d,
            // torch: (melspec + 0.00001).log(), then (x + 4.5) / 5., all float32.
            Compress::Ln { eps, shift, scale } => ((x + eps).ln() + shift) / scale,
        }
    }
}

/// One pre-emphasised sample `next - a prev`, float32 (torch's `conv1d` with the kernel `[-a, 1]`).
#[inline]
fn pre_emphasize(prev: f32, next: f32, a: f32) -> f32 {
    next - a * prev
}

fn too_short_for_pre_emphasis(n: usize) -> Error {
    Error::audio(format!("clip of {n} sample(s) is too short: the front end's pre-emphasis needs at least 2 samples"))
}

/// First non-finite sample, as an [`Error::Audio`].
fn check_finite(samples: &[f32], offset: usize) -> Result<()> {
    if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
        let what = if samples[i].is_nan() { "NaN" } else { "infinite" };
        return Err(Error::audio(format!(
            "sample {} is {what}; the log-mel front end needs finite samples (check the decoder or the source)",
            offset + i
        )));
    }
    Ok(())
}

/// `np.pad(x, (p, p), mode="reflect")` for a 1-D signal, including numpy's rules for short signals: a signal of
/// length `L >= 2` is reflected repeatedly (the padded signal is the periodic "fold" of period `2 (L - 1)`, which
/// is a single mirror image when `p <= L - 1`), and a signal of length 1 is repeated (numpy's legacy edge rule).
fn pad_reflect_into(x: &[f32], p: usize, out: &mut Vec<f32>) {
    let l = x.len();
    let fold = |j: isize| -> usize {
        if l == 1 {
            return 0;
        }
        let period = 2 * (l as isize - 1);
        let m = j.rem_euclid(period);
        if m < l as isize {
            m as usize
        } else {
            (period - m) as usize
        }
    };
    out.extend((0..p).map(|i| x[fold(i as isize - p as isize)]));
    out.extend_from_slice(x);
    out.extend((0..p).map(|i| x[fold((l + i) as isize)]));
}

/// A planned log-mel front end: window, mel filterbank and FFT plan are computed once, by [`LogMel::new`].
///
/// Follows librosa 0.11 (`librosa.feature.melspectrogram` on `librosa.stft`, then the configured log compression):
/// frames centred on `t * hop_length` by padding `n_fft / 2` samples at both ends with the pad mode, a window of
/// `win_length` samples zero-padded (centred) to `n_fft`, a float64 real FFT (numpy's precision), `|X|^power`, the
/// mel filterbank of `librosa.filters.mel` (float32 weights), then the log. It is `Send + Sync`; each call to
/// [`LogMel::compute`] allocates its work buffers once and none per frame. It uses no threads (it builds for
/// wasm32).
pub struct LogMel {
    config: LogMelConfig,
    plan: Plan,
    compress: Compress,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel").field("config", &self.config).finish_non_exhaustive()
    }
}

impl LogMel {
    /// Plans the front end for `config`: the window (`n_fft` values), the mel filterbank (`[n_mels, n_fft/2+1]`)
    /// and the float64 real FFT of length `n_fft`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the config does not validate.
    pub fn new(config: LogMelConfig) -> Result<Self> {
        config.validate()?;
        let plan = Plan::new(&config);
        let compress = Compress::new(&config.log);
        Ok(LogMel { config, plan, compress })
    }

    /// The configuration this front end was planned with.
    pub fn config(&self) -> &LogMelConfig {
        &self.config
    }

    /// Number of frames produced for `n_samples` samples: librosa's count, `1 + (n + 2 (n_fft / 2) - n_fft) / hop`
    /// when centred (`1 + n / hop` for an even `n_fft`), `1 + (n - n_fft) / hop` otherwise (0 when `n < n_fft`),
    /// where `n` is one less than `n_samples` with pre-emphasis (10 s at 32 kHz: 1000 frames with `efficientat`,
    /// 1001 with `panns-cnn14`). [`LogMel::compute`] rejects an empty clip (and, with pre-emphasis, a one-sample
    /// clip) even though this returns 1 for them with centring.
    pub fn n_frames(&self, n_samples: usize) -> usize {
        let c = &self.config;
        let n = if c.pre_emphasis.is_some() { n_samples.saturating_sub(1) } else { n_samples };
        let padded = if c.center { n + 2 * (c.n_fft / 2) } else { n };
        if padded < c.n_fft {
            0
        } else {
            1 + (padded - c.n_fft) / c.hop_length
        }
    }

    /// The mel filterbank, `[n_mels, n_fft / 2 + 1]` row-major float32, equal to
    /// `librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk, norm)` (weights per one-sided FFT bin `k`, whose
    /// frequency is `k * sample_rate / n_fft` Hz).
    pub fn filterbank(&self) -> &[f32] {
        &self.plan.filterbank
    }

    /// Centre frequency of each mel band (the peak of its triangle), Hz, `n_mels` values ascending: the inner
    /// points of `librosa.mel_frequencies(n_mels + 2, fmin, fmax, htk)`. For plot axes.
    pub fn mel_frequencies_hz(&self) -> Vec<f32> {
        self.plan.mel_points[1..=self.config.n_mels].iter().map(|&f| f as f32).collect()
    }

    /// Log-mel spectrogram of mono `samples` at `config.sample_rate`: `[frames, mel_bins]` with
    /// `frames = n_frames(samples.len())` and `mel_bins = n_mels`, in the units of the log compression (dB for
    /// [`LogCompression::Db`]).
    ///
    /// With `center`, the signal is padded by `n_fft / 2` samples at both ends: zeros for [`PadMode::Constant`];
    /// for [`PadMode::Reflect`] exactly `np.pad(y, n_fft // 2, mode="reflect")` of the whole signal, including
    /// numpy's rule for signals shorter than `n_fft / 2 + 1` samples (reflected again and again, a one-sample
    /// signal repeated), so a clip shorter than one frame gives the same frames as librosa. (librosa pads the head
    /// and tail of long signals separately; that equals padding the whole signal whenever
    /// `hop_length < n_fft / 2`, as in every preset.) With `peak_normalize`, samples are divided by the largest
    /// absolute sample first when it is non-zero. With `pre_emphasis` `a`, the STFT then sees
    /// `y[n] = x[n + 1] - a x[n]` (float32, `n_samples - 1` values: EfficientAT's 2-tap convolution). A
    /// [`LogCompression::Db`] `top_db` floor is taken against the maximum of this whole clip, as
    /// `librosa.power_to_db` does.
    ///
    /// # Errors
    /// [`Error::Audio`] if a sample is NaN or infinite, if the clip is empty (or has one sample with
    /// pre-emphasis), or if `center` is false and the clip is shorter than `n_fft`.
    pub fn compute(&self, samples: &[f32]) -> Result<Spectrogram> {
        let c = &self.config;
        if samples.is_empty() {
            return Err(Error::audio("empty clip: there are no samples to compute a log-mel spectrogram from"));
        }
        check_finite(samples, 0)?;
        if c.pre_emphasis.is_some() && samples.len() < 2 {
            return Err(too_short_for_pre_emphasis(samples.len()));
        }
        if self.n_frames(samples.len()) == 0 {
            return Err(Error::audio(format!(
                "clip of {} samples is shorter than one frame ({} samples) and the front end does not centre frames",
                samples.len(),
                c.n_fft + usize::from(c.pre_emphasis.is_some())
            )));
        }

        let normalized: Option<Vec<f32>> = if c.peak_normalize {
            let peak = samples.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            (peak > 0.0).then(|| samples.iter().map(|x| x / peak).collect())
        } else {
            None
        };
        let x: &[f32] = normalized.as_deref().unwrap_or(samples);
        match c.pre_emphasis {
            Some(a) => {
                let y: Vec<f32> = x.windows(2).map(|w| pre_emphasize(w[0], w[1], a)).collect();
                Ok(self.compute_signal(&y))
            }
            None => Ok(self.compute_signal(x)),
        }
    }

    /// The STFT, mel filters and log of `x`, the signal after peak normalisation and pre-emphasis; `x` is not
    /// empty and long enough for one frame (checked by the callers).
    fn compute_signal(&self, x: &[f32]) -> Spectrogram {
        let c = &self.config;
        let padded = if c.center { x.len() + 2 * (c.n_fft / 2) } else { x.len() };
        let n_frames = 1 + (padded - c.n_fft) / c.hop_length;

        let padded_storage;
        let signal: &[f32] = if c.center {
            let p = c.n_fft / 2;
            let mut v = Vec::with_capacity(x.len() + 2 * p);
            match c.pad_mode {
                PadMode::Constant => {
                    v.resize(p, 0.0);
                    v.extend_from_slice(x);
                    v.resize(x.len() + 2 * p, 0.0);
                }
                PadMode::Reflect => pad_reflect_into(x, p, &mut v),
            }
            padded_storage = v;
            &padded_storage
        } else {
            x
        };

        let m = c.n_mels;
        let mut data = vec![0.0f32; n_frames * m];
        let mut scratch = self.plan.scratch();
        for (t, out) in data.chunks_exact_mut(m).enumerate() {
            let start = t * c.hop_length;
            self.frame(&signal[start..start + c.n_fft], &mut scratch, out);
        }
        if let LogCompression::Db { top_db: Some(top_db), .. } = c.log {
            let max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let floor = max - top_db;
            for v in &mut data {
                *v = v.max(floor);
            }
        }
        Spectrogram { frames: n_frames, mel_bins: m, data }
    }

    /// One frame of `n_fft` (already padded) samples -> `n_mels` log-mel values. No allocation.
    #[inline]
    fn frame(&self, frame: &[f32], s: &mut Scratch, out: &mut [f32]) {
        let p = &self.plan;
        debug_assert_eq!(frame.len(), p.n_fft);
        let input = &mut s.input;
        input[..p.win_lo].fill(0.0);
        input[p.win_hi..].fill(0.0);
        for i in p.win_lo..p.win_hi {
            input[i] = frame[i] as f64 * p.window[i];
        }
        p.fft
            .process_with_scratch(input, &mut s.spectrum, &mut s.fft_scratch)
            .expect("FFT buffers are sized by the plan");
        // |X|^power in place, kept in the real parts.
        let power = self.config.power;
        for z in s.spectrum.iter_mut() {
            let p2 = z.re * z.re + z.im * z.im;
            z.re = if power == 2.0 {
                p2
            } else if power == 1.0 {
                p2.sqrt()
            } else {
                p2.powf(power as f64 / 2.0)
            };
        }
        for (o, &(start, off, len)) in out.iter_mut().zip(&p.rows) {
            let w = &p.sparse[off..off + len];
            let bins = &s.spectrum[start..start + len];
            let mut acc = 0.0f64;
            for (wk, b) in w.iter().zip(bins) {
                acc += wk * b.re;
            }
            *o = self.compress.apply(acc as f32);
        }
    }
}

/// Push-based streaming log-mel with bounded memory: the frames of [`LogMel::compute`] on the whole stream, given
/// as the audio arrives.
///
/// [`LogMelStream::push`] returns the frames completed by each chunk, [`LogMelStream::finish`] the frames that
/// need the end padding; their concatenation equals `LogMel::compute` on the concatenated samples, bit for bit.
/// Memory holds at most about `max(n_fft, hop_length + n_fft / 2 + 1)` samples beyond the current chunk. With
/// [`PadMode::Reflect`] the first frame waits for `n_fft / 2 + 1` samples (its left padding mirrors them); a stream
/// that ends before that is computed whole in `finish`, with numpy's short-signal reflection. With pre-emphasis the
/// stream keeps the last raw sample, so `y[n] = x[n + 1] - a x[n]` runs across chunk boundaries.
pub struct LogMelStream {
    mel: LogMel,
    scratch: Scratch,
    /// Samples of the padded signal (after pre-emphasis) at padded indices `[buf_start, buf_start + buf.len())`;
    /// before the left padding is written (`started == false`), the signal samples received so far.
    buf: Vec<f32>,
    buf_start: usize,
    started: bool,
    /// Raw samples received so far.
    n_in: usize,
    /// Signal samples (after pre-emphasis: one fewer than raw once any arrived) received so far.
    n_signal: usize,
    /// The last raw sample, for pre-emphasis across chunks.
    last_raw: Option<f32>,
    /// Index of the next frame to emit.
    next_frame: usize,
}

impl std::fmt::Debug for LogMelStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMelStream")
            .field("config", &self.mel.config)
            .field("samples_in", &self.n_in)
            .field("frames_out", &self.next_frame)
            .finish_non_exhaustive()
    }
}

impl LogMelStream {
    /// Plans a stream for `config` (same planning as [`LogMel::new`]).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the config does not validate, if `peak_normalize` is set (a stream cannot know
    /// the peak of audio it has not received), or if a `top_db` floor is set (it depends on the maximum of the
    /// whole spectrogram).
    pub fn new(config: LogMelConfig) -> Result<Self> {
        if config.peak_normalize {
            return Err(Error::invalid(
                "log-mel streaming cannot use peak_normalize: the peak of audio not yet received is unknown; \
                 normalise the stream window yourself or use LogMel::compute on whole clips",
            ));
        }
        if let LogCompression::Db { top_db: Some(_), .. } = config.log {
            return Err(Error::invalid(
                "log-mel streaming cannot use top_db: the floor depends on the maximum of the whole spectrogram",
            ));
        }
        let mel = LogMel::new(config)?;
        let scratch = mel.plan.scratch();
        let mut s = LogMelStream {
            mel,
            scratch,
            buf: Vec::new(),
            buf_start: 0,
            started: false,
            n_in: 0,
            n_signal: 0,
            last_raw: None,
            next_frame: 0,
        };
        s.reset();
        Ok(s)
    }

    /// The configuration of the stream.
    pub fn config(&self) -> &LogMelConfig {
        &self.mel.config
    }

    /// Number of samples pushed since the start (or the last `finish`).
    pub fn samples_pushed(&self) -> usize {
        self.n_in
    }

    /// Number of frames returned since the start (or the last `finish`).
    pub fn frames_emitted(&self) -> usize {
        self.next_frame
    }

    fn half(&self) -> usize {
        self.mel.config.n_fft / 2
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.buf_start = 0;
        self.n_in = 0;
        self.n_signal = 0;
        self.last_raw = None;
        self.next_frame = 0;
        self.started = false;
        let c = &self.mel.config;
        if !c.center {
            self.started = true;
        } else if c.pad_mode == PadMode::Constant {
            let p = self.half();
            self.buf.resize(p, 0.0);
            self.started = true;
        }
    }

    /// Feeds mono `samples` at `config.sample_rate`; returns the frames they complete, row-major
    /// `[k, n_mels]` (`k * n_mels` values, possibly none).
    ///
    /// # Errors
    /// [`Error::Audio`] if a sample is NaN or infinite; the stream is then unchanged (the chunk is dropped whole).
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<f32>> {
        check_finite(samples, self.n_in)?;
        self.n_in += samples.len();
        let before = self.buf.len();
        match self.mel.config.pre_emphasis {
            Some(a) => {
                for &x in samples {
                    if let Some(prev) = self.last_raw {
                        self.buf.push(pre_emphasize(prev, x, a));
                    }
                    self.last_raw = Some(x);
                }
            }
            None => self.buf.extend_from_slice(samples),
        }
        self.n_signal += self.buf.len() - before;
        if !self.started {
            // Reflect padding: the left pad mirrors samples 1..=p, so wait for p + 1 samples.
            let p = self.half();
            if self.n_signal < p + 1 {
                return Ok(Vec::new());
            }
            let mut v = Vec::with_capacity(p + self.buf.len());
            v.extend((0..p).map(|i| self.buf[p - i]));
            v.extend_from_slice(&self.buf);
            self.buf = v;
            self.buf_start = 0;
            self.started = true;
        }
        let mut out = Vec::new();
        self.emit(&mut out);
        Ok(out)
    }

    /// Emits every frame that fits in the buffer, then drops the samples no later frame (nor the end padding)
    /// needs.
    fn emit(&mut self, out: &mut Vec<f32>) {
        let c = &self.mel.config;
        let (n_fft, hop, m) = (c.n_fft, c.hop_length, c.n_mels);
        let buf_end = self.buf_start + self.buf.len();
        let first = self.next_frame;
        while self.next_frame * hop + n_fft <= buf_end {
            self.next_frame += 1;
        }
        let k = self.next_frame - first;
        if k > 0 {
            out.reserve(k * m);
            let base = out.len();
            out.resize(base + k * m, 0.0);
            for (i, row) in out[base..].chunks_exact_mut(m).enumerate() {
                let s = (first + i) * hop - self.buf_start;
                self.mel.frame(&self.buf[s..s + n_fft], &mut self.scratch, row);
            }
        }
        // Keep the next frame's samples, and the last n_fft/2 + 1 raw samples for the end reflection.
        let keep = if c.center && c.pad_mode == PadMode::Reflect { n_fft / 2 + 1 } else { 0 };
        let keep_from = (self.next_frame * hop).min(buf_end.saturating_sub(keep));
        if keep_from > self.buf_start {
            self.buf.drain(..keep_from - self.buf_start);
            self.buf_start = keep_from;
        }
    }

    /// Ends the stream: returns the remaining frames (those that reach into the end padding), row-major
    /// `[k, n_mels]`, and resets the stream for a new clip.
    ///
    /// # Errors
    /// [`Error::Audio`] if no sample was pushed, or if `center` is false and fewer than `n_fft` samples were
    /// pushed (no frame at all). The stream is reset either way.
    pub fn finish(&mut self) -> Result<Vec<f32>> {
        let result = self.finish_inner();
        self.reset();
        result
    }

    fn finish_inner(&mut self) -> Result<Vec<f32>> {
        if self.n_in == 0 {
            return Err(Error::audio("empty stream: no samples were pushed before finish"));
        }
        if self.n_signal == 0 {
            return Err(too_short_for_pre_emphasis(self.n_in));
        }
        if !self.started {
            // A reflect-padded stream shorter than n_fft/2 + 1 samples: the buffer is the whole signal.
            return Ok(self.mel.compute_signal(&self.buf).data);
        }
        let (center, pad_mode, n_fft) = (self.mel.config.center, self.mel.config.pad_mode, self.mel.config.n_fft);
        if center {
            let p = self.half();
            match pad_mode {
                PadMode::Constant => self.buf.resize(self.buf.len() + p, 0.0),
                PadMode::Reflect => {
                    let n = self.buf.len();
                    for i in 0..p {
                        let v = self.buf[n - 2 - i];
                        self.buf.push(v);
                    }
                }
            }
        }
        let mut out = Vec::new();
        self.emit(&mut out);
        if self.next_frame == 0 {
            return Err(Error::audio(format!(
                "stream of {} samples is shorter than one frame ({} samples) and the front end does not centre frames",
                self.n_in,
                n_fft + usize::from(self.mel.config.pre_emphasis.is_some())
            )));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const PRESETS: [Preset; 5] =
        [Preset::Aisfx, Preset::PannsCnn14, Preset::Panns16k, Preset::Clap2022, Preset::Efficientat];

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-0.5f32..0.5)).collect()
    }

    #[test]
    fn front_ends_can_be_shared_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<LogMel>();
        send_sync::<LogMelStream>();
    }

    #[test]
    fn unit_sum_filters_sum_to_one() {
        let mel = LogMel::new(LogMelConfig::preset(Preset::Aisfx)).unwrap();
        let n_bins = 2048 / 2 + 1;
        let fb = mel.filterbank();
        assert_eq!(fb.len(), 96 * n_bins);
        for (m, row) in fb.chunks_exact(n_bins).enumerate() {
            let s: f64 = row.iter().map(|&w| w as f64).sum();
            assert!((s - 1.0).abs() < 1e-5, "band {m} sums to {s}");
            assert!(row.iter().all(|&w| w >= 0.0));
        }
    }

    #[test]
    fn slaney_filters_have_the_slaney_area() {
        // norm="slaney": peak-1 triangle times 2 / (f_hi - f_lo), so the integral over Hz is ~1 for wide bands.
        let cfg = LogMelConfig::preset(Preset::PannsCnn14);
        let mel = LogMel::new(cfg.clone()).unwrap();
        let n_bins = cfg.n_fft / 2 + 1;
        let df = cfg.sample_rate as f64 / cfg.n_fft as f64;
        let rows: Vec<&[f32]> = mel.filterbank().chunks_exact(n_bins).collect();
        assert_eq!(rows.len(), 64);
        let area: f64 = rows[63].iter().map(|&w| w as f64 * df).sum();
        assert!((area - 1.0).abs() < 0.02, "area {area}");
    }

    #[test]
    fn mel_centres_ascend_within_range() {
        for preset in PRESETS {
            let cfg = LogMelConfig::preset(preset);
            let f = LogMel::new(cfg.clone()).unwrap().mel_frequencies_hz();
            assert_eq!(f.len(), cfg.n_mels);
            assert!(f.windows(2).all(|w| w[0] < w[1]));
            assert!(f[0] > cfg.f_min && *f.last().unwrap() < cfg.f_max);
        }
        // HTK mel of 1000 Hz is 1000 mel (to a fraction); Slaney is linear below 1 kHz.
        assert!((hz_to_mel(1000.0, MelScale::Htk) - 1000.0).abs() < 0.1);
        assert!((hz_to_mel(500.0, MelScale::Slaney) - 7.5).abs() < 1e-12);
        for f in [0.0, 123.0, 999.0, 1000.0, 4321.0, 22050.0] {
            for s in [MelScale::Htk, MelScale::Slaney] {
                assert!((mel_to_hz(hz_to_mel(f, s), s) - f).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn frame_counts() {
        let panns = LogMel::new(LogMelConfig::preset(Preset::PannsCnn14)).unwrap();
        assert_eq!(panns.n_frames(320_000), 1001);
        assert_eq!(panns.n_frames(300), 1);
        let aisfx = LogMel::new(LogMelConfig::preset(Preset::Aisfx)).unwrap();
        assert_eq!(aisfx.n_frames(44_100), 44);
        let s = aisfx.compute(&noise(44_100, 1)).unwrap();
        assert_eq!((s.frames, s.mel_bins, s.data.len()), (44, 96, 44 * 96));
        let mut cfg = LogMelConfig::preset(Preset::Panns16k);
        cfg.center = false;
        let m = LogMel::new(cfg).unwrap();
        assert_eq!(m.n_frames(511), 0);
        assert_eq!(m.n_frames(512), 1);
        assert_eq!(m.n_frames(512 + 159), 1);
        assert_eq!(m.n_frames(512 + 160), 2);
        assert!(matches!(m.compute(&noise(400, 2)), Err(Error::Audio(_))));
        assert_eq!(m.compute(&noise(16_000, 2)).unwrap().frames, 1 + (16_000 - 512) / 160);
        // Odd n_fft: librosa pads n_fft // 2 on each side.
        let mut cfg = LogMelConfig::preset(Preset::Panns16k);
        cfg.n_fft = 511;
        cfg.win_length = 400;
        let m = LogMel::new(cfg).unwrap();
        assert_eq!(m.n_frames(1000), 1 + (1000 + 510 - 511) / 160);
        assert_eq!(m.compute(&noise(1000, 3)).unwrap().frames, m.n_frames(1000));
    }

    #[test]
    fn non_finite_and_empty_input_are_audio_errors() {
        let m = LogMel::new(LogMelConfig::preset(Preset::PannsCnn14)).unwrap();
        let mut x = noise(4000, 4);
        x[1234] = f32::NAN;
        match m.compute(&x) {
            Err(Error::Audio(msg)) => assert!(msg.contains("1234") && msg.contains("NaN"), "{msg}"),
            other => panic!("expected an audio error, got {other:?}"),
        }
        x[1234] = f32::INFINITY;
        assert!(matches!(m.compute(&x), Err(Error::Audio(msg)) if msg.contains("infinite")));
        assert!(matches!(m.compute(&[]), Err(Error::Audio(_))));

        let mut s = LogMelStream::new(LogMelConfig::preset(Preset::PannsCnn14)).unwrap();
        s.push(&noise(1000, 5)).unwrap();
        assert!(matches!(s.push(&[0.0, f32::NEG_INFINITY]), Err(Error::Audio(msg)) if msg.contains("1001")));
        assert_eq!(s.samples_pushed(), 1000, "a rejected chunk leaves the stream unchanged");
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let base = LogMelConfig::preset(Preset::PannsCnn14);
        let mut c = base.clone();
        c.win_length = 2048;
        assert!(matches!(LogMel::new(c), Err(Error::InvalidInput(_))));
        let mut c = base.clone();
        c.f_max = 20_000.0;
        assert!(LogMel::new(c).is_err());
        let mut c = base.clone();
        c.power = 0.0;
        assert!(LogMel::new(c).is_err());
        let mut c = base.clone();
        c.log = LogCompression::Db { amin: 0.0, reference: 1.0, top_db: None };
        assert!(LogMel::new(c).is_err());
        let mut c = base.clone();
        c.peak_normalize = true;
        assert!(matches!(LogMelStream::new(c.clone()), Err(Error::InvalidInput(msg)) if msg.contains("peak")));
        assert!(LogMel::new(c).is_ok());
        let mut c = base;
        c.log = LogCompression::Db { amin: 1e-10, reference: 1.0, top_db: Some(80.0) };
        assert!(matches!(LogMelStream::new(c), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn reflect_padding_follows_numpy() {
        // np.pad([1, 2, 3], (5, 5), mode="reflect") and np.pad([7], (3, 3), mode="reflect").
        let mut v = Vec::new();
        pad_reflect_into(&[1.0, 2.0, 3.0], 5, &mut v);
        assert_eq!(v, [2., 1., 2., 3., 2., 1., 2., 3., 2., 1., 2., 3., 2.]);
        v.clear();
        pad_reflect_into(&[7.0], 3, &mut v);
        assert_eq!(v, [7.0; 7]);
        v.clear();
        pad_reflect_into(&[1.0, 2.0, 3.0, 4.0, 5.0], 2, &mut v);
        assert_eq!(v, [3., 2., 1., 2., 3., 4., 5., 4., 3.]);
    }

    #[test]
    fn short_clips_work_when_centred() {
        for preset in PRESETS {
            let m = LogMel::new(LogMelConfig::preset(preset)).unwrap();
            for n in [1usize, 2, 3, 37, 300] {
                if n == 1 && preset == Preset::Efficientat {
                    // Pre-emphasis leaves nothing of a one-sample clip.
                    let err = m.compute(&[0.5]).unwrap_err();
                    assert!(matches!(&err, Error::Audio(msg) if msg.contains("pre-emphasis")), "{err}");
                    continue;
                }
                let s = m.compute(&noise(n, n as u64)).unwrap();
                assert_eq!(s.frames, m.n_frames(n));
                assert!(s.data.iter().all(|v| v.is_finite()));
            }
        }
    }

    #[test]
    fn silence_and_peak_normalisation() {
        let m = LogMel::new(LogMelConfig::preset(Preset::PannsCnn14)).unwrap();
        let s = m.compute(&vec![0.0; 3200]).unwrap();
        assert!(s.data.iter().all(|&v| v == -100.0));
        let a = LogMel::new(LogMelConfig::preset(Preset::Aisfx)).unwrap();
        assert!(a.compute(&vec![0.0; 3000]).unwrap().data.iter().all(|&v| v == 0.0));

        let mut cfg = LogMelConfig::preset(Preset::Aisfx);
        cfg.peak_normalize = true;
        let pn = LogMel::new(cfg).unwrap();
        let x = noise(5000, 9);
        let peak = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let y: Vec<f32> = x.iter().map(|v| v / peak).collect();
        assert_eq!(pn.compute(&x).unwrap(), a.compute(&y).unwrap());
        assert_eq!(pn.compute(&vec![0.0; 3000]).unwrap(), a.compute(&vec![0.0; 3000]).unwrap());
    }

    #[test]
    fn a_sine_peaks_in_the_band_around_its_frequency() {
        for preset in [Preset::PannsCnn14, Preset::Efficientat] {
            let cfg = LogMelConfig::preset(preset);
            let m = LogMel::new(cfg.clone()).unwrap();
            let f0 = 3000.0f64;
            let x: Vec<f32> = (0..cfg.sample_rate as usize)
                .map(|n| (2.0 * std::f64::consts::PI * f0 * n as f64 / cfg.sample_rate as f64).sin() as f32)
                .collect();
            let s = m.compute(&x).unwrap();
            let row = s.frame(50);
            let best = (0..s.mel_bins).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
            let centres = m.mel_frequencies_hz();
            let nearest = (0..centres.len())
                .min_by(|&a, &b| (centres[a] as f64 - f0).abs().total_cmp(&(centres[b] as f64 - f0).abs()))
                .unwrap();
            assert!(best.abs_diff(nearest) <= 1, "{preset:?}: peak band {best}, nearest centre {nearest}");
        }
    }

    #[test]
    fn kaldi_filters_are_mel_triangles_without_the_nyquist_bin() {
        let cfg = LogMelConfig::preset(Preset::Efficientat);
        let mel = LogMel::new(cfg.clone()).unwrap();
        let n_bins = cfg.n_fft / 2 + 1;
        let rows: Vec<&[f32]> = mel.filterbank().chunks_exact(n_bins).collect();
        assert_eq!(rows.len(), 128);
        let df = cfg.sample_rate as f64 / cfg.n_fft as f64;
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row[n_bins - 1], 0.0, "band {i}: the Nyquist bin has weight 0");
            assert!(row.iter().all(|&w| (0.0..=1.0).contains(&w)), "band {i}: peak-1 triangle");
            // Linear in mel: the weight of bin k is the mel-domain slope, so weights below the centre rise in
            // proportion to mel(f_k) - mel(left).
            let delta = hz_to_mel(15_000.0, MelScale::Kaldi) / 129.0;
            let left = i as f64 * delta;
            for (k, &w) in row.iter().enumerate().take(n_bins - 1) {
                let m = hz_to_mel(k as f64 * df, MelScale::Kaldi);
                let want = ((m - left) / delta).min((left + 2.0 * delta - m) / delta).max(0.0);
                assert!((w as f64 - want).abs() < 1e-6, "band {i}, bin {k}: {w} vs {want}");
            }
        }
        // Kaldi's scale is HTK's in natural log: 1127 ln(1 + f / 700).
        assert!((hz_to_mel(700.0, MelScale::Kaldi) - 1127.0 * 2f64.ln()).abs() < 1e-9);
        assert!((mel_to_hz(hz_to_mel(4321.0, MelScale::Kaldi), MelScale::Kaldi) - 4321.0).abs() < 1e-9);
        let mut odd = cfg.clone();
        odd.n_fft = 1023;
        assert!(matches!(LogMel::new(odd), Err(Error::InvalidInput(msg)) if msg.contains("even")));
    }

    #[test]
    fn pre_emphasis_and_ln_compression() {
        let cfg = LogMelConfig::preset(Preset::Efficientat);
        let m = LogMel::new(cfg.clone()).unwrap();
        // 10 s at 32 kHz: the pre-emphasised signal is one sample shorter, 1 + 319_999 / 320 = 1000 frames.
        assert_eq!(m.n_frames(320_000), 1000);
        assert_eq!(m.n_frames(320_001), 1001);
        // Pre-emphasis of x equals the plain front end on y[n] = x[n + 1] - 0.97 x[n].
        let x = noise(5000, 21);
        let y: Vec<f32> = x.windows(2).map(|w| w[1] - 0.97 * w[0]).collect();
        let mut plain = cfg.clone();
        plain.pre_emphasis = None;
        assert_eq!(m.compute(&x).unwrap(), LogMel::new(plain).unwrap().compute(&y).unwrap());
        // Digital silence gives the compressed zero power everywhere: (ln(1e-5) + 4.5) / 5.
        let zero = cfg.log.of_zero_power();
        assert!((zero as f64 - ((1e-5f64).ln() + 4.5) / 5.0).abs() < 1e-6, "{zero}");
        assert!(m.compute(&vec![0.0; 4000]).unwrap().data.iter().all(|&v| v == zero));
        assert_eq!(LogMelConfig::preset(Preset::PannsCnn14).log.of_zero_power(), -100.0);
        assert_eq!(LogMelConfig::preset(Preset::Aisfx).log.of_zero_power(), 0.0);
        let mut bad = cfg.clone();
        bad.log = LogCompression::Ln { eps: 0.0, shift: 4.5, scale: 5.0 };
        assert!(LogMel::new(bad).is_err());
        let mut bad = cfg.clone();
        bad.log = LogCompression::Ln { eps: 1e-5, shift: 4.5, scale: 0.0 };
        assert!(LogMel::new(bad).is_err());
        let mut bad = cfg;
        bad.pre_emphasis = Some(f32::NAN);
        assert!(matches!(LogMel::new(bad), Err(Error::InvalidInput(msg)) if msg.contains("pre-emphasis")));
        let mut s = LogMelStream::new(LogMelConfig::preset(Preset::Efficientat)).unwrap();
        s.push(&[0.25]).unwrap();
        assert!(matches!(s.finish(), Err(Error::Audio(msg)) if msg.contains("pre-emphasis")));
    }

    #[test]
    fn configs_written_before_the_new_fields_load_equal() {
        // A front end as banks stored it before `mel_filters` and `pre_emphasis` existed.
        for preset in [Preset::Aisfx, Preset::PannsCnn14, Preset::Panns16k, Preset::Clap2022] {
            let cfg = LogMelConfig::preset(preset);
            let json = serde_json::to_string(&cfg).unwrap();
            assert!(!json.contains("mel_filters") && !json.contains("pre_emphasis"), "{json}");
            let back: LogMelConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, cfg);
        }
        let old = r#"{"sample_rate":44100,"n_fft":2048,"win_length":2048,"hop_length":1024,"window":"hann_periodic",
            "center":true,"pad_mode":"constant","power":2.0,"n_mels":96,"f_min":0.0,"f_max":22050.0,"mel_scale":"htk",
            "mel_norm":"unit_sum","log":{"kind":"log1p","c":10000.0,"d":9.457799},"peak_normalize":false}"#;
        assert_eq!(serde_json::from_str::<LogMelConfig>(old).unwrap(), LogMelConfig::preset(Preset::Aisfx));
        let e = LogMelConfig::preset(Preset::Efficientat);
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""mel_filters":"kaldi""#) && json.contains(r#""pre_emphasis":0.97"#), "{json}");
        assert_eq!(serde_json::from_str::<LogMelConfig>(&json).unwrap(), e);
    }

    fn stream_in_chunks(cfg: &LogMelConfig, x: &[f32], seed: u64, max_chunk: usize) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut s = LogMelStream::new(cfg.clone()).unwrap();
        let mut out = Vec::new();
        let mut i = 0;
        while i < x.len() {
            let k = rng.random_range(0..=max_chunk).min(x.len() - i);
            let got = s.push(&x[i..i + k]).unwrap();
            assert_eq!(got.len() % cfg.n_mels, 0);
            out.extend(got);
            i += k;
        }
        out.extend(s.finish().unwrap());
        assert_eq!(s.samples_pushed(), 0, "finish resets the stream");
        out
    }

    #[test]
    fn streaming_equals_whole_clip() {
        let mut configs: Vec<LogMelConfig> = PRESETS.iter().map(|&p| LogMelConfig::preset(p)).collect();
        let mut c = LogMelConfig::preset(Preset::Panns16k);
        c.center = false;
        configs.push(c);
        let mut c = LogMelConfig::preset(Preset::Efficientat);
        c.center = false; // pre-emphasis without centring
        configs.push(c);
        let mut c = LogMelConfig::preset(Preset::Panns16k);
        c.pre_emphasis = Some(0.5); // pre-emphasis with zero padding
        c.pad_mode = PadMode::Constant;
        configs.push(c);
        let mut c = LogMelConfig::preset(Preset::Panns16k);
        c.hop_length = 700; // hop > n_fft: frames skip samples
        c.win_length = 300;
        configs.push(c);
        let mut c = LogMelConfig::preset(Preset::Panns16k);
        c.n_fft = 511; // odd FFT length, window shorter than the FFT
        c.win_length = 400;
        c.hop_length = 256;
        c.power = 1.0;
        c.window = Window::HannSymmetric;
        configs.push(c);
        for (ci, cfg) in configs.iter().enumerate() {
            let m = LogMel::new(cfg.clone()).unwrap();
            for (n, max_chunk) in [(20_000usize, 3000usize), (20_000, 50), (5_000, 20_000), (300, 40), (1, 1), (2, 1)] {
                if (!cfg.center && n < cfg.n_fft + usize::from(cfg.pre_emphasis.is_some()))
                    || (cfg.pre_emphasis.is_some() && n < 2)
                {
                    continue;
                }
                let x = noise(n, (ci * 1000 + n) as u64);
                let whole = m.compute(&x).unwrap();
                for seed in 0..3 {
                    let streamed = stream_in_chunks(cfg, &x, seed, max_chunk);
                    assert_eq!(streamed.len(), whole.data.len(), "config {ci}, n {n}");
                    assert!(
                        streamed.iter().zip(&whole.data).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "config {ci}, n {n}, seed {seed}: streamed frames differ"
                    );
                }
            }
        }
    }

    #[test]
    fn streaming_errors_and_reuse() {
        let cfg = LogMelConfig::preset(Preset::PannsCnn14);
        let mut s = LogMelStream::new(cfg.clone()).unwrap();
        assert!(matches!(s.finish(), Err(Error::Audio(_))));
        let x = noise(4000, 11);
        let a = stream_in_chunks(&cfg, &x, 1, 700);
        s.push(&x[..100]).unwrap();
        let mut b = s.push(&x[100..]).unwrap();
        b.extend(s.finish().unwrap());
        assert_eq!(a, b);
        let mut c = cfg;
        c.center = false;
        let mut s = LogMelStream::new(c).unwrap();
        s.push(&x[..500]).unwrap();
        assert!(matches!(s.finish(), Err(Error::Audio(_))));
    }
}
