//! Time and peak memory of `sonomaly::merge::merge_banks` on synthetic shard banks (BENCH.md section 8).
//!
//!     cargo bench --bench merge -- TEMPLATE.bank
//!
//! TEMPLATE is any bank fitted with the default preset (its members, embeddings and calibration layout are kept);
//! each synthetic shard of `clips` clips gets random memory banks of the rows a fit on that many 10 s clips keeps
//! (about 300 log-mel and 43 network patches per clip kept at ratio 0.1, capped at `max_bank_rows`) and `clips`
//! random held-out scores per member. Each case runs in its own process so that its peak RSS (VmHWM) is its own.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sonomaly::bank::Bank;
use sonomaly::detector::{Detector, DetectorConfig, PatchCore};

/// Memory-bank rows kept per 10 s clip by a default fit, per member (measured on the MIMII fan: 2988 and 434 rows
/// for 10 clips).
const ROWS_PER_CLIP: [usize; 2] = [300, 43];

fn synthetic(template: &Bank, clips: usize, seed: u64) -> Bank {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut meta = template.meta.clone();
    let mut detectors = Vec::new();
    for (i, (m, d)) in meta.members.iter_mut().zip(&template.detectors).enumerate() {
        let DetectorConfig::Patchcore(pc) = &m.detector else { panic!("the template must be a PatchCore bank") };
        let Detector::Patchcore(p) = d else { unreachable!() };
        let cap = pc.max_bank_rows.unwrap_or(usize::MAX);
        let rows = (clips * ROWS_PER_CLIP[i.min(1)]).min(cap);
        // Rows drawn around the template's rows (so the scale of the values is a real one).
        let src = &p.memory_bank;
        let n = src.len() / m.dims;
        let mut bank = Vec::with_capacity(rows * m.dims);
        for _ in 0..rows {
            let r = rng.random_range(0..n);
            bank.extend(src[r * m.dims..(r + 1) * m.dims].iter().map(|v| v + 0.05 * (rng.random::<f32>() - 0.5)));
        }
        detectors.push(Detector::Patchcore(PatchCore::from_memory_bank(bank, m.dims, pc.clone())));
        let base = m.score_norm.loc;
        m.normal_scores.scores = (0..clips).map(|_| base * (0.7 + 0.6 * rng.random::<f32>())).collect();
        let pbase = m.map_norm.loc;
        m.normal_curve_peaks.scores = (0..clips).map(|_| pbase * (0.7 + 0.6 * rng.random::<f32>())).collect();
    }
    meta.clips_fitted = clips;
    meta.seconds_fitted = clips as f64 * 10.0;
    meta.fused_scores = vec![0.0; clips];
    meta.fused_curve_peaks = vec![0.0; clips];
    Bank::new(meta, detectors).expect("synthetic bank")
}

fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let template_path = args.first().expect("usage: cargo bench --bench merge -- TEMPLATE.bank");
    let template = Bank::from_bytes(&std::fs::read(template_path).expect("reading the template")).expect("a bank");
    let model = sonomaly::pipeline::Model::embedded_for(&template.meta.backbone)
        .expect("an embedded model's bank")
        .expect("model");
    if args.get(1).map(String::as_str) == Some("--case") {
        let clips: usize = args[2].parse().unwrap();
        let shards: usize = args[3].parse().unwrap();
        let banks: Vec<Bank> = (0..shards).map(|s| synthetic(&template, clips, s as u64)).collect();
        let before = peak_rss_mb();
        let start = std::time::Instant::now();
        let merged = sonomaly::merge::merge_banks(&banks, model.spec()).expect("merge");
        let secs = start.elapsed().as_secs_f64();
        let shard_mb = banks.iter().map(|b| b.state_floats() * 4).sum::<usize>() as f64 / 1e6;
        println!(
            "{{\"clips_per_shard\": {clips}, \"shards\": {shards}, \"merge_s\": {secs:.3}, \"peak_rss_mb\": {:.1}, \
             \"rss_before_merge_mb\": {before:.1}, \"shard_state_mb\": {shard_mb:.1}, \"memory_bank\": \"{}\"}}",
            peak_rss_mb(),
            merged.info().memory_bank
        );
        return;
    }
    let me = std::env::current_exe().unwrap();
    println!("| clips per shard | shards | clips in all | merge, s | peak RSS, MB | shards' state, MB | merged memory bank |");
    println!("|---|---|---|---|---|---|---|");
    for (clips, shards) in [(1000, 2), (10_000, 2), (10_000, 10)] {
        let o = std::process::Command::new(&me)
            .args([template_path.as_str(), "--case", &clips.to_string(), &shards.to_string()])
            .output()
            .expect("run a case");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
            panic!("case failed: {}", String::from_utf8_lossy(&o.stderr));
        });
        println!(
            "| {clips} | {shards} | {} | {:.2} | {:.0} | {:.1} | {} |",
            clips * shards,
            v["merge_s"].as_f64().unwrap(),
            v["peak_rss_mb"].as_f64().unwrap(),
            v["shard_state_mb"].as_f64().unwrap(),
            v["memory_bank"].as_str().unwrap()
        );
    }
}
