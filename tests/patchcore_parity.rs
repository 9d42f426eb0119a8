//! Parity of PatchCore scoring, the anomaly map and the patch neighbourhood average with an independent
//! numpy / scipy reference (float64).
//!
//! The reference is in `tests/fixtures/patchcore_ref.safetensors`, written by
//! `python3 tests/reference/patchcore_ref.py` (its docstring gives every formula: anomalib's
//! `compute_anomaly_score`, PyTorch's bilinear `align_corners=False`, anomalib's 33-tap Gaussian with reflect border,
//! `AvgPool2d(3, 1, 1)`). The inputs are stored in the fixture. The k-center coreset uses Rust's own RNG for its
//! first centre, so it is checked against a plain farthest-point greedy started from the same first index: one
//! float64 greedy written here, and the numpy greedy table (one row per possible start). The capped coreset
//! (greedy on a seeded random subset) is checked the same way on its subset, and for its guarantees: at most the
//! cap, real patches only, deterministic under a seed, degenerate inputs, and old banks reading unchanged.

use std::collections::HashMap;

use sonomaly::anomaly_map::{gaussian_blur, gaussian_kernel, window_map};
use sonomaly::bank::Bank;
use sonomaly::detector::patchcore::{
    johnson_lindenstrauss_min_dim, k_center_greedy, random_subset, select_coreset, sparse_random_projection,
    CoresetPlan, PatchCore, PatchCoreConfig, DEFAULT_MAX_BANK_ROWS,
};
use sonomaly::detector::DetectorConfig;
use sonomaly::embedding::{neighbourhood_average, resize_bilinear};

/// Largest allowed absolute difference.
const TOL: f32 = 1e-4;

enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

struct Fixture {
    tensors: HashMap<String, (Vec<usize>, Values)>,
}

impl Fixture {
    fn load() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/patchcore_ref.safetensors");
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}; run tests/reference/patchcore_ref.py"));
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("fixture");
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            // Little-endian bytes -> values, by hand.
            let values = match view.dtype() {
                safetensors::Dtype::F32 => Values::F32(
                    view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
                ),
                safetensors::Dtype::I64 => Values::I64(
                    view.data()
                        .chunks_exact(8)
                        .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                        .collect(),
                ),
                other => panic!("{name}: unexpected dtype {other:?}"),
            };
            tensors.insert(name, (view.shape().to_vec(), values));
        }
        Fixture { tensors }
    }

    fn f32(&self, name: &str, shape: &[usize]) -> Vec<f32> {
        let (s, v) = self.tensors.get(name).unwrap_or_else(|| panic!("fixture has no {name}"));
        assert_eq!(s, shape, "{name}");
        match v {
            Values::F32(v) => v.clone(),
            Values::I64(_) => panic!("{name} is not f32"),
        }
    }

    fn i64(&self, name: &str, shape: &[usize]) -> Vec<i64> {
        let (s, v) = self.tensors.get(name).unwrap_or_else(|| panic!("fixture has no {name}"));
        assert_eq!(s, shape, "{name}");
        match v {
            Values::I64(v) => v.clone(),
            Values::F32(_) => panic!("{name} is not i64"),
        }
    }
}

/// Max abs difference, after checking lengths and finiteness; prints it and asserts `<= TOL`.
fn check(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(got.iter().all(|v| v.is_finite()), "{what}: non-finite output");
    let (i, d) = got.iter().zip(want).map(|(a, b)| (a - b).abs()).enumerate().fold((0, 0.0f32), |acc, (i, d)| {
        if d > acc.1 {
            (i, d)
        } else {
            acc
        }
    });
    println!("{what}: max abs diff {d:.3e}");
    assert!(d <= TOL, "{what}: max abs diff {d:e} at {i} (got {}, want {})", got[i], want[i]);
}

const D: usize = 24;
const N_BANK: usize = 200;
const N_QUERIES: usize = 60;

#[test]
fn nearest_distances_and_indices() {
    let fx = Fixture::load();
    let bank = fx.f32("bank", &[N_BANK, D]);
    let queries = fx.f32("queries", &[N_QUERIES, D]);
    let pc = PatchCore::from_memory_bank(bank, D, PatchCoreConfig::default());
    let nn = pc.nearest(&queries).unwrap();
    check("nearest distance", &nn.distance, &fx.f32("nearest/distance", &[N_QUERIES]));
    let want: Vec<u32> = fx.i64("nearest/index", &[N_QUERIES]).iter().map(|&i| i as u32).collect();
    assert_eq!(nn.index, want, "nearest index");
    // Queries 40..45 copy bank rows: exactly zero after the exact recomputation.
    assert!(nn.distance[40..45].iter().all(|&d| d == 0.0), "{:?}", &nn.distance[40..45]);
}

#[test]
fn clip_score_matches_anomalib() {
    let fx = Fixture::load();
    let bank = fx.f32("bank", &[N_BANK, D]);
    let queries = fx.f32("queries", &[N_QUERIES, D]);
    let want = fx.f32("clip_score", &[2, 3]);
    let mut got = Vec::new();
    for n in [45, 60] {
        for k in [1, 3, 9] {
            let cfg = PatchCoreConfig { num_neighbors: k, ..Default::default() };
            let pc = PatchCore::from_memory_bank(bank.clone(), D, cfg);
            let q = &queries[..n * D];
            let nn = pc.nearest(q).unwrap();
            got.push(pc.clip_score(q, &nn));
        }
    }
    println!("clip scores {got:?}");
    check("clip score", &got, &want);
}

#[test]
fn anomaly_map_matches_bilinear_and_anomalib_blur() {
    let fx = Fixture::load();
    let scores = fx.f32("map/patch_scores", &[6, 8]);
    check("gaussian kernel sigma 4", &gaussian_kernel(4.0), &fx.f32("map/kernel", &[33]));
    check("bilinear 6x8 -> 24x32", &resize_bilinear(&scores, 1, 6, 8, 24, 32), &fx.f32("map/upsampled", &[24, 32]));
    let up = fx.f32("map/upsampled", &[24, 32]);
    check("gaussian blur 24x32", &gaussian_blur(&up, 24, 32, 4.0), &fx.f32("map/blurred", &[24, 32]));
    check("window map 6x8 -> 24x32", &window_map(&scores, 6, 8, 24, 32, 4.0), &fx.f32("map/blurred", &[24, 32]));
    let small = fx.f32("blur/small_input", &[5, 7]);
    check("gaussian blur 5x7 (periodic mirror)", &gaussian_blur(&small, 5, 7, 4.0), &fx.f32("blur/small", &[5, 7]));
}

#[test]
fn resize_bilinear_matches_pytorch_semantics() {
    let fx = Fixture::load();
    let x = fx.f32("resize/input", &[2, 6, 8]);
    check("bilinear 2x6x8 -> 2x17x29", &resize_bilinear(&x, 2, 6, 8, 17, 29), &fx.f32("resize/up_17x29", &[2, 17, 29]));
    check("bilinear 2x6x8 -> 2x4x5", &resize_bilinear(&x, 2, 6, 8, 4, 5), &fx.f32("resize/down_4x5", &[2, 4, 5]));
}

#[test]
fn neighbourhood_average_matches_avgpool() {
    let fx = Fixture::load();
    let x = fx.f32("pool/input", &[3, 5, 7]);
    check("avg pool 3x3 on 3x5x7", &neighbourhood_average(&x, 3, 5, 7, 3), &fx.f32("pool/output", &[3, 5, 7]));
}

/// Plain farthest-point greedy in f64 from `start` (ties to the lowest index).
fn greedy_f64(x: &[f32], dims: usize, start: usize, size: usize) -> Vec<usize> {
    let n = x.len() / dims;
    let row = |i: usize| &x[i * dims..(i + 1) * dims];
    let mut min_d = vec![f64::INFINITY; n];
    let mut chosen = vec![start];
    while chosen.len() < size {
        let c = row(*chosen.last().unwrap());
        for (j, m) in min_d.iter_mut().enumerate() {
            let d: f64 = row(j).iter().zip(c).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum();
            *m = m.min(d);
        }
        let mut best = 0;
        for j in 1..n {
            if min_d[j] > min_d[best] {
                best = j;
            }
        }
        chosen.push(best);
    }
    chosen
}

const KC_N: usize = 300;
const KC_D: usize = 5;
const KC_SIZE: usize = 20;

#[test]
fn k_center_greedy_is_farthest_point_from_its_first_index() {
    let fx = Fixture::load();
    let feats = fx.f32("kcenter/features", &[KC_N, KC_D]);
    let table = fx.i64("kcenter/greedy", &[KC_N, KC_SIZE]);
    let reliable = fx.i64("kcenter/reliable", &[KC_N]);
    let mut starts = Vec::new();
    for seed in 0..16u64 {
        let got = k_center_greedy(&feats, KC_D, KC_SIZE, seed);
        assert_eq!(got.len(), KC_SIZE, "seed {seed}");
        let first = got[0];
        starts.push(first);
        assert_eq!(got, greedy_f64(&feats, KC_D, first, KC_SIZE), "seed {seed}: in-test f64 greedy");
        let r = reliable[first] as usize;
        let want: Vec<usize> = table[first * KC_SIZE..first * KC_SIZE + r].iter().map(|&i| i as usize).collect();
        assert_eq!(&got[..r], &want[..], "seed {seed}: numpy greedy from start {first} (first {r} choices)");
    }
    println!("k-center starts for seeds 0..16: {starts:?}");
    // The seed does move the start.
    starts.sort();
    starts.dedup();
    assert!(starts.len() > 1);
}

#[test]
fn fit_with_ratio_one_keeps_every_row_in_order() {
    let fx = Fixture::load();
    let bank = fx.f32("bank", &[N_BANK, D]);
    let pc = PatchCore::fit(&bank, D, PatchCoreConfig { coreset_ratio: 1.0, ..Default::default() }).unwrap();
    assert_eq!(pc.len(), N_BANK);
    assert_eq!(pc.memory_bank, bank);
}

#[test]
fn fit_coreset_is_the_greedy_selection() {
    // dims 5 < the JL dimension, so fit runs k-center on the raw features.
    let fx = Fixture::load();
    let feats = fx.f32("kcenter/features", &[KC_N, KC_D]);
    let table = fx.i64("kcenter/greedy", &[KC_N, KC_SIZE]);
    let reliable = fx.i64("kcenter/reliable", &[KC_N]);
    let cfg = PatchCoreConfig { coreset_ratio: 0.1, seed: 5, ..Default::default() };
    let pc = PatchCore::fit(&feats, KC_D, cfg).unwrap();
    println!("fit(300 rows, ratio 0.1) keeps {} rows", pc.len());
    let sel = k_center_greedy(&feats, KC_D, pc.len(), 5);
    let rows: Vec<f32> = sel.iter().flat_map(|&i| feats[i * KC_D..(i + 1) * KC_D].to_vec()).collect();
    assert_eq!(pc.memory_bank, rows);
    let first = sel[0];
    let r = (reliable[first] as usize).min(sel.len());
    let want: Vec<usize> = table[first * KC_SIZE..first * KC_SIZE + r].iter().map(|&i| i as usize).collect();
    assert_eq!(&sel[..r], &want[..]);
}

#[test]
fn sparse_random_projection_has_li_distribution_and_preserves_distances() {
    let fx = Fixture::load();
    let bank = fx.f32("bank", &[N_BANK, D]);
    let eps = 0.9f32;
    let k = johnson_lindenstrauss_min_dim(N_BANK, eps);
    let p = sparse_random_projection(k, D, 3);
    assert_eq!(p.len(), k * D);
    assert_eq!(p, sparse_random_projection(k, D, 3), "deterministic for a seed");
    assert_ne!(p, sparse_random_projection(k, D, 4), "seed-dependent");
    let density = 1.0 / (D as f64).sqrt();
    let v = ((1.0 / density).sqrt() / (k as f64).sqrt()) as f32;
    assert!(p.iter().all(|&x| x == 0.0 || x == v || x == -v), "entries are 0 or +-{v}");
    // Non-zero count ~ Binomial(k D, density), signs ~ Binomial(nnz, 1/2): within 5 sigma.
    let total = (k * D) as f64;
    let nnz = p.iter().filter(|&&x| x != 0.0).count() as f64;
    let pos = p.iter().filter(|&&x| x > 0.0).count() as f64;
    assert!((nnz - total * density).abs() < 5.0 * (total * density * (1.0 - density)).sqrt(), "nnz {nnz}");
    assert!((pos - nnz / 2.0).abs() < 5.0 * (nnz / 4.0).sqrt(), "positive {pos} of {nnz}");
    // Johnson-Lindenstrauss: squared pairwise distances kept within (1 +- eps).
    let pm = &p;
    let proj: Vec<f64> = bank
        .chunks_exact(D)
        .flat_map(|r| {
            (0..k).map(move |i| r.iter().zip(&pm[i * D..(i + 1) * D]).map(|(a, b)| (*a * *b) as f64).sum::<f64>())
        })
        .collect();
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for a in 0..N_BANK {
        for b in a + 1..N_BANK {
            let d0: f64 = (0..D).map(|j| (bank[a * D + j] as f64 - bank[b * D + j] as f64).powi(2)).sum();
            let d1: f64 = (0..k).map(|j| (proj[a * k + j] - proj[b * k + j]).powi(2)).sum();
            lo = lo.min(d1 / d0);
            hi = hi.max(d1 / d0);
        }
    }
    println!("JL k = {k}: squared-distance ratios in [{lo:.3}, {hi:.3}]");
    assert!(lo > 1.0 - eps as f64 && hi < 1.0 + eps as f64);
}

/// scikit-learn truncates (`.astype(np.int64)`); the Rust function rounds up, so it returns sklearn + 1 for every
/// non-integer bound (all 28 cases here), although its doc names sklearn's function.
#[test]
fn johnson_lindenstrauss_min_dim_matches_sklearn() {
    let fx = Fixture::load();
    let ns = fx.i64("jl/n", &[7]);
    let eps = fx.f32("jl/eps", &[4]);
    let want = fx.i64("jl/min_dim", &[7, 4]);
    let mut bad = Vec::new();
    for (i, &n) in ns.iter().enumerate() {
        for (j, &e) in eps.iter().enumerate() {
            let got = johnson_lindenstrauss_min_dim(n as usize, e);
            if got as i64 != want[i * 4 + j] {
                bad.push(format!("n {n} eps {e}: got {got}, sklearn {}", want[i * 4 + j]));
            }
        }
    }
    assert!(bad.is_empty(), "{} of 28 differ:\n{}", bad.len(), bad.join("\n"));
}

fn capped(cap: usize, seed: u64) -> PatchCoreConfig {
    PatchCoreConfig { max_bank_rows: Some(cap), seed, ..Default::default() }
}

#[test]
fn capped_coreset_is_the_greedy_on_a_random_subset() {
    // 300 rows, ratio 0.1, cap 12: the greedy picks 12 among ceil(12 / 0.1) = 120 random rows.
    let fx = Fixture::load();
    let feats = fx.f32("kcenter/features", &[KC_N, KC_D]);
    for seed in 0..8u64 {
        let plan = capped(12, seed).plan(KC_N);
        assert_eq!(plan, CoresetPlan { size: 12, candidates: 120 });
        let subset = random_subset(KC_N, 120, seed);
        let rows: Vec<f32> = subset.iter().flat_map(|&i| feats[i * KC_D..(i + 1) * KC_D].to_vec()).collect();
        let got = select_coreset(&feats, KC_D, plan, 0.9, seed);
        // Its first index on the subset is the one the exact greedy would draw there, then farthest-point steps.
        let local: Vec<usize> = got.iter().map(|g| subset.binary_search(g).expect("a candidate")).collect();
        assert_eq!(local, greedy_f64(&rows, KC_D, local[0], 12), "seed {seed}: f64 greedy on the subset");
        assert_eq!(local, k_center_greedy(&rows, KC_D, 12, seed), "seed {seed}");
        let pc = PatchCore::fit(&feats, KC_D, capped(12, seed)).unwrap();
        let bank: Vec<f32> = got.iter().flat_map(|&i| feats[i * KC_D..(i + 1) * KC_D].to_vec()).collect();
        assert_eq!(pc.memory_bank, bank, "seed {seed}: fit keeps those rows, in that order");
    }
}

#[test]
fn capped_coreset_is_deterministic_capped_and_made_of_real_patches() {
    // 4000 patches of 40 dims (projected for the greedy: JL(400 candidates) = 147 > 40, so raw) and of 300 dims
    // (projected to 147).
    for dims in [40usize, 300] {
        let n = 4000;
        let x: Vec<f32> =
            (0..n * dims).map(|i| ((i * 7919 % 10007) as f32 / 10007.0 - 0.5) * (1 + i % 3) as f32).collect();
        for cap in [1usize, 7, 40, 399, 400, 1000] {
            let a = PatchCore::fit(&x, dims, capped(cap, 3)).unwrap();
            let b = PatchCore::fit(&x, dims, capped(cap, 3)).unwrap();
            assert_eq!(a, b, "dims {dims} cap {cap}: deterministic under a seed");
            assert_eq!(a.len(), cap.min(400), "dims {dims} cap {cap}: rows");
            for r in a.memory_bank.chunks_exact(dims) {
                assert!(x.chunks_exact(dims).any(|p| p == r), "dims {dims} cap {cap}: a row that is no patch");
            }
            let mut rows: Vec<&[f32]> = a.memory_bank.chunks_exact(dims).collect();
            rows.sort_by(|p, q| p.partial_cmp(q).unwrap());
            rows.dedup();
            assert_eq!(rows.len(), a.len(), "dims {dims} cap {cap}: no row twice");
        }
        let other = PatchCore::fit(&x, dims, capped(40, 4)).unwrap();
        assert_ne!(other, PatchCore::fit(&x, dims, capped(40, 3)).unwrap(), "dims {dims}: the seed matters");
    }
}

#[test]
fn capped_coreset_degenerate_inputs() {
    // Fewer patches than the cap: the exact selection, whatever the cap.
    let fx = Fixture::load();
    let feats = fx.f32("kcenter/features", &[KC_N, KC_D]);
    let exact = PatchCore::fit(&feats, KC_D, PatchCoreConfig { max_bank_rows: None, ..Default::default() }).unwrap();
    for cap in [30, 31, 1000, DEFAULT_MAX_BANK_ROWS] {
        let pc = PatchCore::fit(&feats, KC_D, capped(cap, 0)).unwrap();
        assert_eq!(pc.memory_bank, exact.memory_bank, "cap {cap}");
    }
    // One patch.
    let one = PatchCore::fit(&[1.0, 2.0, 3.0], 3, capped(1, 0)).unwrap();
    assert_eq!(one.memory_bank, vec![1.0, 2.0, 3.0]);
    // Zero variance: 5000 copies of one patch keep one row (every other row duplicates it).
    let flat = vec![0.25f32; 5000 * 6];
    for cfg in [capped(100, 0), PatchCoreConfig { max_bank_rows: None, ..Default::default() }] {
        let pc = PatchCore::fit(&flat, 6, cfg).unwrap();
        assert_eq!(pc.memory_bank, vec![0.25f32; 6]);
    }
    // Duplicates: 3 distinct patches, each 2000 times: the cap of 50 keeps the 3 once each.
    let mut dup = Vec::new();
    for i in 0..6000 {
        dup.extend_from_slice(&[(i % 3) as f32, -((i % 3) as f32)]);
    }
    let pc = PatchCore::fit(&dup, 2, capped(50, 1)).unwrap();
    let mut rows: Vec<&[f32]> = pc.memory_bank.chunks_exact(2).collect();
    rows.sort_by(|p, q| p.partial_cmp(q).unwrap());
    assert_eq!(rows, vec![&[0.0f32, -0.0][..], &[1.0, -1.0], &[2.0, -2.0]]);
    // Non-finite input and a cap of 0 are refused in words.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut x = feats.clone();
        x[123] = bad;
        let e = PatchCore::fit(&x, KC_D, capped(10, 0)).unwrap_err().to_string();
        assert!(e.contains("not finite"), "{e}");
    }
    let e = PatchCore::fit(&feats, KC_D, capped(0, 0)).unwrap_err().to_string();
    assert!(e.contains("at least 1 row"), "{e}");
}

#[test]
fn banks_from_before_the_cap_read_and_write_unchanged() {
    // The version 1 demo bank was written before `max_bank_rows` existed: it reads as "no cap", and what it writes (format
    // version 2) reads back with the same detector and members, and then writes back byte for byte.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fan-demo-v1.bank");
    let bytes = std::fs::read(path).unwrap();
    let bank = Bank::from_bytes(&bytes).expect("the demo bank loads");
    let DetectorConfig::Patchcore(cfg) = &bank.meta.members[0].detector else { panic!("the demo bank is PatchCore") };
    assert_eq!(cfg.max_bank_rows, None);
    let v2 = bank.to_bytes().unwrap();
    let again = Bank::from_bytes(&v2).unwrap();
    assert_eq!(again.detectors, bank.detectors);
    assert_eq!(again.meta.members, bank.meta.members);
    assert_eq!(again.to_bytes().unwrap(), v2);
    // A config without the field reads as None; None is not written; a cap is written and read back.
    let old = r#"{"coreset_ratio":0.1,"num_neighbors":9,"seed":0,"projection_eps":0.9}"#;
    let cfg: PatchCoreConfig = serde_json::from_str(old).unwrap();
    assert_eq!(cfg, PatchCoreConfig { max_bank_rows: None, ..Default::default() });
    assert_eq!(serde_json::to_string(&cfg).unwrap(), old);
    let new = serde_json::to_string(&PatchCoreConfig::default()).unwrap();
    assert!(new.contains(&format!(r#""max_bank_rows":{DEFAULT_MAX_BANK_ROWS}"#)), "{new}");
    assert_eq!(serde_json::from_str::<PatchCoreConfig>(&new).unwrap(), PatchCoreConfig::default());
}
