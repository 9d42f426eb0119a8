//! Calibration by leaving each clip's memory-bank rows out: sources kept per row and stored in the bank, held-out
//! scoring of a bank's own clips reproduces the fit's calibration, merged banks recalibrated on their shards'
//! clips, bad calibration input refused, and clips analysed elsewhere (the page's pool) fitting the same bank.
//! Synthetic audio only (no ../shared data needed).

use sonomaly::bank::Bank;
use sonomaly::detector::patchcore::{same_clip, source_id};
use sonomaly::detector::{Detector, PatchCore, PatchCoreConfig};
use sonomaly::embedding::EmbeddingConfig;
use sonomaly::merge::merge_banks;
use sonomaly::pipeline::{calibrate, clip_fingerprint, FitConfig, Fitter, HeldOut, MemberConfig, Model};

/// A hum with noise whose tone and noise level vary with `seed`: `seconds` at `sr`.
fn hum(seconds: f32, sr: u32, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let f0 = 110.0 + 7.0 * (seed % 5) as f32;
    (0..(seconds * sr as f32) as usize)
        .map(|i| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let n = ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5;
            let t = i as f32 / sr as f32;
            0.2 * (0.5 * (2.0 * std::f32::consts::PI * f0 * t).sin() + (0.2 + 0.05 * (seed % 3) as f32) * n)
        })
        .collect()
}

const SR: u32 = 16_000;

/// Two members (log-mel patches at strides 4 and 8) on the default model.
fn config() -> FitConfig {
    let fine = EmbeddingConfig::default();
    let coarse = EmbeddingConfig { grid_stride: 8, ..EmbeddingConfig::default() };
    FitConfig::with_members(vec![MemberConfig::patchcore(fine), MemberConfig::patchcore(coarse)])
}

fn fit(seeds: impl Iterator<Item = u64>) -> (Model, Bank) {
    let config = config();
    let mut model = Model::embedded_default().unwrap();
    model.set_embeddings(config.embeddings()).unwrap();
    let mut fitter = Fitter::new(&model, config).unwrap();
    for seed in seeds {
        fitter.add_clip(&model, &hum(3.0, SR, seed), SR).unwrap();
    }
    let bank = fitter.finish(&model, &mut |_| true).unwrap();
    model.prepare_for(&bank).unwrap();
    (model, bank)
}

fn held_out(model: &Model, bank: &Bank, seeds: impl Iterator<Item = u64>) -> Vec<Vec<HeldOut>> {
    let mut f = Fitter::new(model, FitConfig::for_bank(bank)).unwrap();
    for seed in seeds {
        f.add_clip(model, &hum(3.0, SR, seed), SR).unwrap();
    }
    f.held_out_against(model, bank, &mut |_| true).unwrap()
}

fn rel(a: f32, b: f32) -> f32 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

#[test]
fn every_row_knows_its_clip_and_the_bank_keeps_it() {
    let (_, bank) = fit(0..4);
    let fingerprints: Vec<u64> = (0..4).map(|s| clip_fingerprint(&hum(3.0, SR, s), SR)).collect();
    for d in &bank.detectors {
        let Detector::Patchcore(pc) = d else { panic!("PatchCore members") };
        assert_eq!(pc.sources().len(), pc.len());
        for &s in pc.sources() {
            assert!(fingerprints.iter().any(|&f| s == source_id(f, 0)), "row source {s:x} is no clip's");
        }
        // Every clip gave rows.
        for &f in &fingerprints {
            assert!(pc.sources().iter().any(|&s| same_clip(s, f)));
        }
    }
    let again = Bank::from_bytes(&bank.to_bytes().unwrap()).unwrap();
    assert_eq!(again, bank, "sources survive the round trip");
    // A changed source is caught by the checksum.
    let mut bytes = bank.to_bytes().unwrap();
    let Detector::Patchcore(pc) = &bank.detectors[0] else { unreachable!() };
    let needle = pc.sources()[0].to_le_bytes();
    let at = bytes.windows(8).position(|w| w == needle).expect("the source is stored");
    bytes[at] ^= 1;
    let e = Bank::from_bytes(&bytes).unwrap_err().to_string();
    assert!(e.contains("checksum"), "{e}");
}

#[test]
fn the_fits_own_clips_held_out_again_give_the_fits_calibration() {
    let (model, bank) = fit(0..5);
    let held = held_out(&model, &bank, 0..5);
    assert_eq!((held.len(), held[0].len()), (5, 2));
    for (i, m) in bank.meta.members.iter().enumerate() {
        for (k, clip) in held.iter().enumerate() {
            assert!(rel(clip[i].score, m.normal_scores.scores[k]) < 1e-4, "member {i} clip {k}");
            assert!(rel(clip[i].peak, m.normal_curve_peaks.scores[k]) < 1e-4, "member {i} clip {k}");
        }
    }
    let again = calibrate(&bank, &held).unwrap();
    for (a, b) in again.meta.members.iter().zip(&bank.meta.members) {
        assert!(rel(a.score_norm.loc, b.score_norm.loc) < 1e-4 && rel(a.score_norm.scale, b.score_norm.scale) < 1e-4);
        assert!(rel(a.map_norm.loc, b.map_norm.loc) < 1e-4 && rel(a.map_norm.scale, b.map_norm.scale) < 1e-4);
    }
    assert_eq!(again.detectors, bank.detectors, "calibration keeps the memory banks");
}

#[test]
fn a_clip_scored_with_its_own_rows_looks_normal_and_without_them_held_out() {
    // Scoring a fitted clip against the whole bank finds its own rows (distances near 0); held out, its score is
    // the one the calibration used, well above that.
    let (model, bank) = fit(0..4);
    let x = hum(3.0, SR, 2);
    let r = sonomaly::pipeline::score_clip(&model, &bank, &x, SR).unwrap();
    let held = held_out(&model, &bank, 0..4);
    for (i, m) in r.members.iter().enumerate() {
        assert!(m.raw < held[2][i].score, "member {i}: own rows {} vs held out {}", m.raw, held[2][i].score);
    }
}

#[test]
fn a_merged_bank_is_recalibrated_on_its_shards_clips() {
    let (model, a) = fit(0..3);
    let (_, b) = fit(3..6);
    let merged = merge_banks(&[a.clone(), b.clone()], model.spec()).unwrap();
    for d in &merged.detectors {
        let Detector::Patchcore(pc) = d else { panic!() };
        assert_eq!(pc.sources().len(), pc.len(), "the merge keeps the rows' sources");
    }
    let mut m = model.try_clone().unwrap();
    m.prepare_for(&merged).unwrap();
    let held = held_out(&m, &merged, 0..6);
    let cal = calibrate(&merged, &held).unwrap();
    assert_eq!(cal.meta.fused_scores.len(), 6);
    assert_eq!(cal.detectors, merged.detectors);
    // Held out against the merged bank, a shard's clip meets the other shard's rows too: it scores no higher than
    // held out within its shard.
    for (k, clip) in held.iter().take(3).enumerate() {
        for (i, h) in clip.iter().take(2).enumerate() {
            assert!(h.score <= a.meta.members[i].normal_scores.scores[k] * 1.0001, "clip {k} member {i}");
        }
    }
    // Deterministic, and the merged bank's pooled calibration is replaced by the measured one.
    assert_eq!(held_out(&m, &merged, 0..6), held);
    assert!(cal.meta.fused_scores.iter().all(|v| v.is_finite()));
    assert_ne!(cal.meta.members[0].score_norm, merged.meta.members[0].score_norm);
    assert_eq!(cal.meta.clips_fitted, 6);
}

#[test]
fn bad_calibration_input_is_refused_in_plain_words() {
    let (model, bank) = fit(0..3);
    let held = held_out(&model, &bank, 0..3);
    let e = calibrate(&bank, &held[..1]).unwrap_err().to_string();
    assert!(e.contains("at least two normal clips"), "{e}");
    let short: Vec<Vec<HeldOut>> = held.iter().map(|h| h[..1].to_vec()).collect();
    let e = calibrate(&bank, &short).unwrap_err().to_string();
    assert!(e.contains("one entry per member"), "{e}");
    let mut nan = held.clone();
    nan[1][0].score = f32::NAN;
    let e = calibrate(&bank, &nan).unwrap_err().to_string();
    assert!(e.contains("not a finite number"), "{e}");
    let zeros: Vec<Vec<HeldOut>> = held.iter().map(|h| vec![HeldOut::default(); h.len()]).collect();
    let e = calibrate(&bank, &zeros).unwrap_err().to_string();
    assert!(e.contains("scored 0"), "{e}");
    // A fitter made for other members.
    let other = FitConfig::with_members(vec![MemberConfig::patchcore(EmbeddingConfig::default())]);
    let mut m1 = Model::embedded_default().unwrap();
    m1.set_embeddings(other.embeddings()).unwrap();
    let f = Fitter::new(&m1, other).unwrap();
    assert!(f.held_out_against(&model, &bank, &mut |_| true).is_err());
    // No clip.
    let f = Fitter::new(&model, FitConfig::for_bank(&bank)).unwrap();
    let e = f.held_out_against(&model, &bank, &mut |_| true).unwrap_err().to_string();
    assert!(e.contains("no normal clip"), "{e}");
}

#[test]
fn excluded_rows_never_win_the_nearest_search() {
    // Two sources on a line: each query's nearest row of the other source, never its own.
    let d = 2;
    let bank: Vec<f32> = (0..10).flat_map(|i| [i as f32, 0.0]).collect();
    let sources: Vec<u64> = (0..10).map(|i| if i % 2 == 0 { 0x100 } else { 0x200 }).collect();
    let pc = PatchCore::from_memory_bank(bank, d, PatchCoreConfig::default()).with_sources(sources).unwrap();
    let q = vec![4.0, 0.1, 5.0, 0.1];
    let nn = pc.nearest_excluding(&q, &[0x100, 0x200], &|a, b| a == b).unwrap();
    assert!(nn.index[0] % 2 == 1, "query of source 0x100 matched row {}", nn.index[0]);
    assert!(nn.index[1].is_multiple_of(2), "query of source 0x200 matched row {}", nn.index[1]);
    assert!((nn.distance[0] - (1.0f32 + 0.01).sqrt()).abs() < 1e-6);
    // Every row excluded: no neighbour.
    let nn = pc.nearest_excluding(&q[..2], &[0x100], &|_, _| true).unwrap();
    assert_eq!((nn.distance[0], nn.index[0]), (f32::INFINITY, u32::MAX));
    let without = pc.without(|s| s == 0x100).unwrap();
    assert_eq!(without.len(), 5);
    assert!(pc.without(|_| true).is_none());
}

/// Clips analysed on their own, passed as bytes ([`AnalysedClip::to_bytes`], as the page's pool of workers passes
/// them) and added to another fitter, give the bank that adding the clips directly gives, byte for byte; damaged
/// bytes are refused in words.
#[test]
fn clips_analysed_elsewhere_and_passed_as_bytes_fit_the_same_bank() {
    use sonomaly::pipeline::AnalysedClip;
    let config = config();
    let mut model = Model::embedded_default().unwrap();
    model.set_embeddings(config.embeddings()).unwrap();
    let mut direct = Fitter::new(&model, config.clone()).unwrap();
    let mut passed = Fitter::new(&model, config).unwrap();
    let mut one = Vec::new();
    for seed in 0..4 {
        let x = hum(3.0, SR, seed);
        direct.add_clip(&model, &x, SR).unwrap();
        let bytes = Fitter::analyse_clip(&model, &x, SR).unwrap().to_bytes().unwrap();
        passed.add_analysed(AnalysedClip::from_bytes(&bytes).unwrap()).unwrap();
        one = bytes;
    }
    let mut a = direct.finish(&model, &mut |_| true).unwrap();
    let mut b = passed.finish(&model, &mut |_| true).unwrap();
    b.meta.created = a.meta.created.clone();
    a.meta.created = b.meta.created.clone();
    assert!(a.to_bytes().unwrap() == b.to_bytes().unwrap(), "the banks differ");

    let refused = |bytes: &[u8]| match AnalysedClip::from_bytes(bytes) {
        Ok(_) => panic!("damaged bytes were taken for a clip"),
        Err(e) => e.to_string(),
    };
    assert!(refused(&one[..one.len() / 2]).contains("not a clip analysed by this version"));
    assert!(refused(b"").contains("not a clip analysed"));
    // A tensor's value made NaN (the last 4 bytes belong to the last window's last patch).
    let mut nan = one.clone();
    let at = nan.len() - 4;
    nan[at..].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(refused(&nan).contains("not finite"), "{}", refused(&nan));
    // A grid's time rows written with a leading zero (not a number) and as 0 (owned patches outside the grid).
    let pat: &[u8] = b"\\\"members\\\":[[";
    let k = one.windows(pat.len()).position(|w| w == pat).expect("a member in the header") + pat.len();
    assert!(one[k].is_ascii_digit() && one[k] != b'0' && one[k + 1].is_ascii_digit());
    let mut wrong = one.clone();
    wrong[k] = b'0';
    assert!(refused(&wrong).contains("malformed header"), "{}", refused(&wrong));
    let mut wrong = one.clone();
    wrong.splice(k..k + 1, *b" ");
    let at = k + 1;
    let end = at + wrong[at..].iter().position(|b| !b.is_ascii_digit()).unwrap();
    wrong.splice(at..end, std::iter::repeat_n(b' ', end - at - 1).chain([b'0']));
    assert!(refused(&wrong).contains("owned patches"), "{}", refused(&wrong));
}

/// A fit whose patches are spilled to a temporary file ([`Fitter::spill_above`]) gives the bank that a fit in
/// memory gives, byte for byte, and so does the held-out scoring against a bank: with the default members (layer
/// weights and the frequency-position weight set by the fit), a clip at 12 kHz (the band limit crops every grid),
/// one member's memory bank capped (the fit reads only its candidates) and the other's not.
#[test]
fn a_fit_spilled_to_a_file_gives_the_bank_of_a_fit_in_memory() {
    use sonomaly::detector::DetectorConfig;
    let mut model = Model::embedded_default().unwrap();
    let mut config = FitConfig::default_for(model.spec()).unwrap();
    assert!(config.members.len() >= 2);
    let DetectorConfig::Patchcore(pc) = &mut config.members[0].detector else { panic!("PatchCore first") };
    pc.max_bank_rows = Some(40);
    model.set_embeddings(config.embeddings()).unwrap();
    let clips: Vec<(Vec<f32>, u32)> = (0..4)
        .map(|seed| if seed == 2 { (hum(3.0, 12_000, seed), 12_000) } else { (hum(3.0, SR, seed), SR) })
        .collect();
    let fitter = |spill: bool| {
        let mut f = Fitter::new(&model, config.clone()).unwrap();
        if spill {
            // Every clip spilled: the first one at once, and each added after it.
            f.spill_above(Some(0)).unwrap();
        }
        for (x, sr) in &clips {
            f.add_clip(&model, x, *sr).unwrap();
        }
        assert_eq!(f.spilled_bytes() > 0, spill);
        f
    };
    let mut a = fitter(false).finish(&model, &mut |_| true).unwrap();
    let mut b = fitter(true).finish(&model, &mut |_| true).unwrap();
    b.meta.created = a.meta.created.clone();
    a.meta.created = b.meta.created.clone();
    assert!(a.meta.members[0].embedding.position_weight > 0.0);
    assert!(a.to_bytes().unwrap() == b.to_bytes().unwrap(), "the spilled fit's bank differs");

    model.prepare_for(&a).unwrap();
    let held = |spill: bool| {
        let mut f = Fitter::new(&model, FitConfig::for_bank(&a)).unwrap();
        f.spill_above(spill.then_some(0)).unwrap();
        for (x, sr) in &clips[1..] {
            f.add_clip(&model, x, *sr).unwrap();
        }
        assert_eq!(f.spilled_bytes() > 0, spill);
        f.held_out_against(&model, &a, &mut |_| true).unwrap()
    };
    assert_eq!(held(false), held(true));
}
