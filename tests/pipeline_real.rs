//! End-to-end on real recordings (MIMII fan id_00 from ../shared/data): fit, score, ROC-AUC, bank round trip,
//! streaming equals whole-clip scoring, and refusals of foreign or damaged banks.
//! Every test needs ../shared/data and is marked ignored without it (run them with `cargo test -- --include-ignored`).

#[path = "common/shared.rs"]
mod shared;

use std::path::PathBuf;
use std::sync::OnceLock;

use sonomaly::audio::{decode_file, to_mono, ChannelSelect};
use sonomaly::bank::Bank;
use sonomaly::metrics::{bootstrap, roc_auc};
use sonomaly::pipeline::{score_clip, FitConfig, Fitter, Model, StreamScorer};

fn fan_dir() -> PathBuf {
    shared::shared("data/industrial/mimii_fan_id00")
}

fn read(p: &std::path::Path) -> (Vec<f32>, u32) {
    let a = decode_file(p).expect("decodes");
    (to_mono(&a, ChannelSelect::Channel(0)).expect("channel 0"), a.sample_rate)
}

fn clip(kind: &str, i: usize) -> PathBuf {
    fan_dir().join(kind).join(format!("{i:08}.wav"))
}

/// The fan bank fitted on normal clips 0-9 with the default settings (the embedded default model and the default
/// preset), shared by the tests of this file.
fn fan_bank() -> &'static (Model, Bank) {
    static BANK: OnceLock<(Model, Bank)> = OnceLock::new();
    BANK.get_or_init(|| {
        let mut model = Model::embedded_default().expect("default model");
        let config = FitConfig::default_for(model.spec()).expect("default preset");
        model.set_embeddings(config.embeddings()).expect("default members");
        let mut fitter = Fitter::new(&model, config).unwrap();
        for i in 0..10 {
            let (x, sr) = read(&clip("normal", i));
            fitter.add_clip(&model, &x, sr).expect("fit clip");
        }
        let bank = fitter.finish(&model, &mut |_| true).expect("bank");
        let mut model = model;
        model.prepare_for(&bank).expect("the model takes the bank's fitted embedding");
        (model, bank)
    })
}

#[test]
#[ignore = "needs ../shared/data (real recordings beside the repository): cargo test -- --include-ignored"]
fn fan_roc_auc_at_least_085() {
    let (model, bank) = fan_bank();
    let mut labels = Vec::new();
    let mut scores = Vec::new();
    for (kind, range) in [("normal", 10..20), ("abnormal", 0..20)] {
        for i in range {
            let (x, sr) = read(&clip(kind, i));
            let r = score_clip(model, bank, &x, sr).expect("score");
            assert!(r.score.is_finite() && r.map.iter().all(|v| v.is_finite()));
            assert_eq!(r.map.len(), r.frames * r.mel_bins);
            labels.push(kind == "abnormal");
            scores.push(r.score);
        }
    }
    let auc = bootstrap(&labels, &scores, roc_auc, 2000, 0.95, 0).unwrap();
    let flagged_normal = labels.iter().zip(&scores).filter(|(l, s)| !**l && **s > bank.threshold()).count();
    let flagged_abnormal = labels.iter().zip(&scores).filter(|(l, s)| **l && **s > bank.threshold()).count();
    println!(
        "MIMII fan id_00, fit normal 0-9, test normal 10-19 + abnormal 0-19: ROC-AUC {:.3} (95% CI {:.3}-{:.3}); \
         threshold {:.4}: {flagged_normal}/10 normal and {flagged_abnormal}/20 abnormal flagged",
        auc.value,
        auc.low,
        auc.high,
        bank.threshold()
    );
    assert!(auc.value >= 0.9, "ROC-AUC {:.3} < 0.9", auc.value);
    // The bank's own label-free threshold catches the faults without crying wolf (RESULTS.md, "Threshold").
    assert!(flagged_abnormal >= 16, "only {flagged_abnormal} of 20 abnormal clips flagged");
    assert!(flagged_normal <= 1, "{flagged_normal} of 10 normal clips flagged");
}

#[test]
#[ignore = "needs ../shared/data (real recordings beside the repository): cargo test -- --include-ignored"]
fn bank_round_trip_is_bit_identical() {
    let (model, bank) = fan_bank();
    let bytes = bank.to_bytes().unwrap();
    let loaded = Bank::from_bytes(&bytes).unwrap();
    assert_eq!(&loaded, bank);
    assert_eq!(loaded.to_bytes().unwrap().len(), bytes.len());
    let (x, sr) = read(&clip("abnormal", 3));
    let a = score_clip(model, bank, &x, sr).unwrap();
    let b = score_clip(model, &loaded, &x, sr).unwrap();
    assert_eq!(a.score.to_bits(), b.score.to_bits());
    assert!(a.map.iter().zip(&b.map).all(|(p, q)| p.to_bits() == q.to_bits()));
}

#[test]
#[ignore = "needs ../shared/data (real recordings beside the repository): cargo test -- --include-ignored"]
fn streaming_equals_whole_clip() {
    let (model, bank) = fan_bank();
    let (x, sr) = read(&clip("abnormal", 7));
    let whole = score_clip(model, bank, &x, sr).unwrap();
    let mut s = StreamScorer::new(model, bank, sr).unwrap();
    let mut map = Vec::new();
    let mut next = 0;
    // Irregular block sizes, as an audio callback would deliver.
    let mut pos = 0;
    let mut k = 0;
    while pos < x.len() {
        let n = [128, 4096, 777, 16000][k % 4].min(x.len() - pos);
        for u in s.push(model, bank, &x[pos..pos + n]).unwrap() {
            assert_eq!(u.start_frame, next);
            next += u.frames;
            map.extend(u.map);
        }
        pos += n;
        k += 1;
    }
    for u in s.finish(model, bank).unwrap() {
        assert_eq!(u.start_frame, next);
        next += u.frames;
        map.extend(u.map);
    }
    assert_eq!(next, whole.frames);
    let max_diff = map.iter().zip(&whole.map).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("stream vs whole clip: max map diff {max_diff:e}, scores {} vs {}", s.score(bank), whole.score);
    assert!(max_diff <= 1e-4 * whole.map.iter().cloned().fold(1.0f32, f32::max));
    assert!((s.score(bank) - whole.score).abs() <= 1e-5 * whole.score.abs().max(1.0));
}

#[test]
#[ignore = "needs ../shared/data (real recordings beside the repository): cargo test -- --include-ignored"]
fn foreign_and_damaged_banks_are_refused() {
    let (_, bank) = fan_bank();
    let bytes = bank.to_bytes().unwrap();
    // Truncated.
    for cut in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        let e = Bank::from_bytes(&bytes[..cut]).unwrap_err().to_string();
        assert!(e.starts_with("bank:"), "cut {cut}: {e}");
    }
    // One flipped byte in the tensor data.
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n - 5] ^= 0x40;
    let e = Bank::from_bytes(&bad).unwrap_err().to_string();
    assert!(e.contains("corrupted"), "{e}");
    // Made for another backbone.
    let mut other = bank.clone();
    other.meta.backbone.sha256 = "0".repeat(64);
    other.meta.backbone.name = "panns-cnn14".into();
    let mut model = Model::embedded_default().unwrap();
    let e = model.prepare_for(&other).unwrap_err().to_string();
    assert!(e.contains("panns-cnn14") && e.contains("efficientat-mn04"), "{e}");
    // Another front end.
    let mut other = bank.clone();
    other.meta.front_end.n_mels = 64;
    let e = model.prepare_for(&other).unwrap_err().to_string();
    assert!(e.contains("64 mel bins") && e.contains("128 mel bins"), "{e}");
}

#[test]
fn bad_audio_gives_errors_not_panics() {
    let model = Model::embedded_default().unwrap();
    let mut fitter = Fitter::new(&model, FitConfig::for_model(&model)).unwrap();
    assert!(fitter.add_clip(&model, &[], 16_000).is_err());
    assert!(fitter.add_clip(&model, &[0.0, f32::NAN, 0.0], 16_000).is_err());
    assert!(fitter.add_clip(&model, &[0.0; 100], 0).is_err());
    // A clip too short to be scored (0.2 s) is too short to learn from, and leaves the fit as it was.
    let e = fitter.add_clip(&model, &vec![0.1f32; 3_200], 16_000).unwrap_err().to_string();
    assert!(e.contains("too short to learn from") && e.contains("0.37 s"), "{e}");
    assert_eq!(fitter.clips(), 0);
    // A single short clip cannot calibrate a threshold: a clear error.
    let mut fitter = Fitter::new(&model, FitConfig::for_model(&model)).unwrap();
    fitter.add_clip(&model, &vec![0.1f32; 16_000], 16_000).unwrap();
    let e = fitter.finish(&model, &mut |_| true).unwrap_err().to_string();
    assert!(e.contains("too little normal audio"), "{e}");
    // Cancelling.
    let mut fitter = Fitter::new(&model, FitConfig::for_model(&model)).unwrap();
    for k in 0..2 {
        fitter.add_clip(&model, &vec![0.1f32 + 0.05 * k as f32; 48_000], 16_000).unwrap();
    }
    let e = fitter.finish(&model, &mut |_| false).unwrap_err();
    assert!(matches!(e, sonomaly::Error::Cancelled));
}

#[test]
#[ignore = "needs ../shared/data (real recordings beside the repository): cargo test -- --include-ignored"]
fn silence_is_not_normal_for_a_running_fan() {
    let (model, bank) = fan_bank();
    let r = score_clip(model, bank, &vec![0.0f32; 16_000 * 5], 16_000).unwrap();
    println!("digital silence: score {:.4}, threshold {:.4}", r.score, bank.threshold());
    assert!(r.is_anomaly, "a silent clip scored {} against threshold {}", r.score, bank.threshold());
}

#[test]
#[ignore = "needs ../shared/data (real recordings beside the repository): cargo test -- --include-ignored"]
fn edited_metadata_is_detected() {
    let (_, bank) = fan_bank();
    let bytes = bank.to_bytes().unwrap();
    // The metadata JSON sits in the safetensors header as an escaped string.
    let text = format!(r#"threshold\":{}"#, serde_json::to_string(&bank.meta.threshold).unwrap());
    let pos = bytes.windows(text.len()).position(|w| w == text.as_bytes()).expect("threshold in the header");
    let mut edited = bytes.clone();
    // Change one digit of the threshold.
    let digit = pos + text.len() - 1;
    edited[digit] = if edited[digit] == b'1' { b'2' } else { b'1' };
    let e = Bank::from_bytes(&edited).unwrap_err().to_string();
    assert!(e.contains("checksum"), "{e}");
}

#[test]
fn silent_normal_material_is_refused() {
    let model = Model::embedded_default().unwrap();
    let mut fitter = Fitter::new(&model, FitConfig::for_model(&model)).unwrap();
    let e = fitter.add_clip(&model, &vec![0.0f32; 16_000 * 10], 16_000).unwrap_err().to_string();
    assert!(e.contains("digital silence"), "{e}");
}
