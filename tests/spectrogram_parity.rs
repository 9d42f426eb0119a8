//! Parity of `spectrogram::LogMel` with librosa 0.11 for every preset.
//!
//! The reference log-mels are in `tests/fixtures/spectrogram_ref.safetensors`, written by
//! `python3 tests/reference/spectrogram_ref.py` (see that script for the exact librosa calls). The inputs are
//! regenerated here exactly as the script makes them: two real clips (first 3 s of WAVs under `../shared/data`,
//! PCM16 / 32768, fed to each preset without resampling) and synthetic signals (silence, a full-scale square
//! wave, sines shorter than one frame, a single sample). The real clips need ../shared/data (that test is marked ignored; run it with --include-ignored).

#[path = "common/shared.rs"]
mod shared;

use std::collections::HashMap;
use std::path::Path;

use sonomaly::spectrogram::{LogMel, LogMelConfig, LogMelStream, Preset};

/// Largest allowed absolute difference on the log scale (dB for PANNs / CLAP, log1p units for aisfx).
const TOL: f32 = 1e-3;

const PRESETS: [(&str, Preset); 4] = [
    ("aisfx", Preset::Aisfx),
    ("panns-cnn14", Preset::PannsCnn14),
    ("panns-16k", Preset::Panns16k),
    ("clap-2022", Preset::Clap2022),
];

struct Fixture {
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
    metadata: HashMap<String, String>,
}

fn load_fixture() -> Fixture {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/spectrogram_ref.safetensors");
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}; run tests/reference/spectrogram_ref.py"));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("fixture header");
    let metadata = meta.metadata().clone().unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("fixture");
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        let data = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        tensors.insert(name, (view.shape().to_vec(), data));
    }
    Fixture { tensors, metadata }
}

/// First 3 s of a PCM16 WAV, as float32 `sample / 32768`.
fn wav_first_3s(path: &Path) -> Vec<f32> {
    let mut reader = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = reader.spec();
    assert_eq!((spec.channels, spec.bits_per_sample, spec.sample_format), (1, 16, hound::SampleFormat::Int));
    let n = 3 * spec.sample_rate as usize;
    reader.samples::<i16>().take(n).map(|s| s.unwrap() as f32 / 32768.0).collect()
}

fn synthetic(case: &str, sr: usize) -> Vec<f32> {
    let sine = |k: usize| -> Vec<f32> {
        (0..k).map(|n| (0.5 * (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / sr as f64).sin()) as f32).collect()
    };
    match case {
        "silence" => vec![0.0; sr],
        "square" => (0..sr).map(|n| if 2 * ((n * 441) % sr) < sr { 1.0 } else { -1.0 }).collect(),
        "short_sine" => sine(300),
        "tiny_sine" => sine(37),
        "one_sample" => vec![0.25],
        _ => unreachable!("{case}"),
    }
}

/// Compares one case: whole-clip compute against the reference, and streaming against whole-clip compute.
fn check(fx: &Fixture, preset_name: &str, preset: Preset, case: &str, samples: &[f32]) -> f32 {
    let key = format!("{preset_name}/{case}");
    let (shape, want) = fx.tensors.get(&key).unwrap_or_else(|| panic!("fixture lacks {key}"));
    let cfg = LogMelConfig::preset(preset);
    let mel = LogMel::new(cfg.clone()).unwrap();
    let got = mel.compute(samples).unwrap_or_else(|e| panic!("{key}: {e}"));
    assert_eq!(vec![got.frames, got.mel_bins], *shape, "{key}: shape");
    assert_eq!(got.frames, mel.n_frames(samples.len()), "{key}: n_frames");
    let err = got.data.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("{key:28} frames {:4}  max abs error {err:.3e}", got.frames);
    assert!(err <= TOL, "{key}: max abs error {err} > {TOL}");

    // Streaming in uneven chunks gives the same frames, bit for bit.
    let mut stream = LogMelStream::new(cfg).unwrap();
    let mut streamed = Vec::new();
    let mut i = 0;
    let mut k = 1;
    while i < samples.len() {
        let j = (i + k).min(samples.len());
        streamed.extend(stream.push(&samples[i..j]).unwrap());
        i = j;
        k = (k * 7 + 13) % 5000;
    }
    streamed.extend(stream.finish().unwrap());
    assert!(
        streamed.len() == got.data.len() && streamed.iter().zip(&got.data).all(|(a, b)| a.to_bits() == b.to_bits()),
        "{key}: streaming differs from compute"
    );
    err
}

#[test]
fn synthetic_inputs_match_librosa() {
    let fx = load_fixture();
    for (name, preset) in PRESETS {
        let sr = LogMelConfig::preset(preset).sample_rate as usize;
        for case in ["silence", "square", "short_sine", "tiny_sine", "one_sample"] {
            check(&fx, name, preset, case, &synthetic(case, sr));
        }
    }
}

#[test]
#[ignore = "needs ../shared/data (real recordings beside the repository): cargo test -- --include-ignored"]
fn real_clips_match_librosa() {
    let fx = load_fixture();
    let data = shared::shared("data");
    let mimii = fx.metadata.get("mimii_file").expect("fixture metadata names the MIMII file");
    let birds = fx.metadata.get("birds_file").expect("fixture metadata names the birds file");
    // The script takes the first sorted file of the folder; make sure it is still the one the fixture used.
    let mimii_dir = data.join("industrial/mimii_fan_id00/abnormal");
    {
        let entries = std::fs::read_dir(&mimii_dir).unwrap_or_else(|e| panic!("{}: {e}", mimii_dir.display()));
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.to_lowercase().ends_with(".wav"))
            .collect();
        names.sort();
        assert_eq!(
            format!("industrial/mimii_fan_id00/abnormal/{}", names[0]),
            *mimii,
            "shared data changed: regenerate the fixture"
        );
    }
    for (case, rel) in [("mimii_fan", mimii), ("birds", birds)] {
        let samples = wav_first_3s(&shared::shared(&format!("data/{rel}")));
        for (name, preset) in PRESETS {
            check(&fx, name, preset, case, &samples);
        }
    }
}

#[test]
fn ten_seconds_at_32k_is_1001_frames() {
    let mel = LogMel::new(LogMelConfig::preset(Preset::PannsCnn14)).unwrap();
    assert_eq!(mel.n_frames(320_000), 1001);
    let x: Vec<f32> = (0..320_000).map(|n| ((n % 97) as f32 / 97.0 - 0.5) * 0.1).collect();
    let s = mel.compute(&x).unwrap();
    assert_eq!((s.frames, s.mel_bins), (1001, 64));
}
