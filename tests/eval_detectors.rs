//! PaDiM (both variants) and the baseline through the whole pipeline: fit, bank round trip, scoring; and
//! `sonomaly mix` + `eval` on real env/ recordings (../shared/data; marked ignored, run with --include-ignored).

#[path = "common/shared.rs"]
mod shared;

use sonomaly::bank::Bank;
use sonomaly::detector::{BaselineConfig, DetectorConfig, PadimConfig, PadimVariant};
use sonomaly::pipeline::{score_clip, FitConfig, Fitter, MemberConfig, Model};

fn noise(seconds: f64, sr: u32, seed: u32, level: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..(seconds * sr as f64) as usize)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            level * ((s as f32 / u32::MAX as f32) - 0.5)
        })
        .collect()
}

#[test]
fn new_detectors_fit_save_load_and_score() {
    let sr = 16_000;
    for cfg in [
        DetectorConfig::Padim(PadimConfig { variant: PadimVariant::Full, ..Default::default() }),
        DetectorConfig::Padim(PadimConfig { variant: PadimVariant::Frequency, ..Default::default() }),
        DetectorConfig::Baseline(BaselineConfig::default()),
    ] {
        let model = Model::embedded_default().unwrap();
        let mut fitter = Fitter::new(
            &model,
            FitConfig::with_members(vec![MemberConfig { embedding: model.embedding().clone(), detector: cfg.clone() }]),
        )
        .unwrap();
        for i in 0..4 {
            fitter.add_clip(&model, &noise(3.0, sr, i, 0.1), sr).unwrap();
        }
        let bank = fitter.finish(&model, &mut |_| true).unwrap();
        let bytes = bank.to_bytes().unwrap();
        let loaded = Bank::from_bytes(&bytes).unwrap();
        assert_eq!(loaded.detectors, bank.detectors, "{cfg:?}");
        let mut model = Model::embedded_default().unwrap();
        model.prepare_for(&loaded).unwrap();
        let quiet = score_clip(&model, &loaded, &noise(3.0, sr, 99, 0.1), sr).unwrap();
        let mut loud = noise(3.0, sr, 98, 0.1);
        for (k, v) in loud.iter_mut().enumerate().skip(sr as usize).take(sr as usize / 2) {
            *v += 0.5 * (k as f32 * 2.0 * std::f32::consts::PI * 1000.0 / sr as f32).sin();
        }
        let bad = score_clip(&model, &loaded, &loud, sr).unwrap();
        assert!(bad.score > quiet.score, "{}: {} vs {}", loaded.detectors[0].kind(), bad.score, quiet.score);
        assert_eq!(bad.map.len(), bad.frames * bad.mel_bins);
        // The curve peaks where the tone is (1.0-1.5 s).
        let peak = bad.curve.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        let t = peak as f64 * bad.hop_s;
        assert!((0.8..1.8).contains(&t), "{}: curve peak at {t} s", loaded.detectors[0].kind());
    }
}

#[test]
#[ignore = "needs ../shared/data (real recordings beside the repository): cargo test -- --include-ignored"]
fn mix_and_eval_on_real_recordings() {
    let data = shared::shared("data/env");
    let files = |d: &str| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(data.join(d)).unwrap().map(|e| e.unwrap().path()).collect();
        v.retain(|p| p.extension().is_some_and(|e| e == "wav"));
        v.sort();
        v
    };
    let backgrounds = files("urbansound8k_subset/air_conditioner");
    let events = files("urbansound8k_subset/dog_bark");
    let out = tempfile::tempdir().unwrap();
    let model = Model::embedded_default().unwrap();
    let cfg = sonomaly::mix::MixConfig {
        fit_clips: 4,
        test_normal: 3,
        test_anomalous: 3,
        length_s: 4.0,
        ..Default::default()
    };
    let s = sonomaly::mix::make_set(&backgrounds, &events, out.path(), &cfg, model.logmel()).unwrap();
    // Fit and test never share a background recording.
    for f in &s.fit_backgrounds {
        let (rf, _) = sonomaly::mix::recording_and_class(std::path::Path::new(f));
        for t in &s.test_backgrounds {
            assert_ne!(rf, sonomaly::mix::recording_and_class(std::path::Path::new(t)).0);
        }
    }
    let items = sonomaly::eval::read_test_csv(&out.path().join("test.csv")).unwrap();
    assert_eq!(items.iter().filter(|i| i.anomaly).count(), 3);
    assert!(items.iter().filter(|i| i.anomaly).all(|i| i.onset_s.unwrap() < i.offset_s.unwrap() && i.mask.is_some()));
    let fit: Vec<_> = sonomaly::eval::read_test_csv(&out.path().join("fit.csv")).unwrap();
    let mut fitter = Fitter::new(&model, FitConfig::for_model(&model)).unwrap();
    for it in &fit {
        let a = sonomaly::audio::decode_file(&it.path).unwrap();
        fitter.add_clip(&model, &a.channels[0], a.sample_rate).unwrap();
    }
    let bank = fitter.finish(&model, &mut |_| true).unwrap();
    let mut model = model;
    model.prepare_for(&bank).unwrap();
    let ecfg = sonomaly::eval::EvalConfig { bootstrap_rounds: 50, faithfulness_clips: 2, ..Default::default() };
    let r = sonomaly::eval::evaluate(&model, &bank, &items, &ecfg, "tiny").unwrap();
    for w in [Some(&r.overall.sample_auc), r.overall.temporal_auc.as_ref(), r.overall.spectrogram_auc.as_ref()] {
        let w = w.expect("every level measured");
        assert!((0.0..=1.0).contains(&w.value) && w.low <= w.value + 1e-9 && w.value <= w.high + 1e-9, "{w:?}");
    }
    assert_eq!(r.per_snr.len(), 3);
    assert_eq!(r.faithfulness.len(), 3);
    let html = sonomaly::eval::html(std::slice::from_ref(&r));
    assert!(html.contains("<svg") && html.contains("data:image/png;base64,"));
    eprintln!("{}", sonomaly::eval::markdown(&r));
}
