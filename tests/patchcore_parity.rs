//! Parity of PatchCore scoring, the anomaly map and the patch neighbourhood average with an independent
//! numpy / scipy reference (float64).
//!
//! The reference is in `tests/fixtures/patchcore_ref.safetensors`, written by
//! `python3 tests/reference/patchcore_ref.py` (its docstring gives every formula: anomalib's
//! `compute_anomaly_score`, PyTorch's bilinear `align_corners=False`, anomalib's 33-tap Gaussian with reflect border,
//! `AvgPool2d(3, 1, 1)`). The inputs are stored in the fixture. The k-center coreset uses Rust's own RNG for its
//! first centre, so it is checked against a plain farthest-point greedy started from the same first index: one
//! float64 greedy written here, and the numpy greedy table (one row per possible start).

use std::collections::HashMap;

use sonomaly::anomaly_map::{gaussian_blur, gaussian_kernel, window_map};
use sonomaly::detector::patchcore::{
    johnson_lindenstrauss_min_dim, k_center_greedy, sparse_random_projection, PatchCore, PatchCoreConfig,
};
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
