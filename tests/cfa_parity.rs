//! Parity of CFA's descriptor input (CoordConv coordinates), loss, weight gradient and patch scores with an
//! independent numpy reference (float64): `tests/fixtures/cfa_ref.safetensors`, written by
//! `python3 tests/reference/cfa_ref.py` (its docstring gives the formulas, anomalib's `CfaLoss` and
//! `compute_score`). The inputs are stored in the fixture.

use std::collections::HashMap;

use sonomaly::detector::cfa::{augment, loss_and_grad, Cfa, CfaConfig};

struct Fixture(HashMap<String, (Vec<usize>, Vec<f32>)>);

impl Fixture {
    fn load() -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cfa_ref.safetensors");
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}; run tests/reference/cfa_ref.py"));
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("fixture");
        let mut m = HashMap::new();
        for (name, t) in st.tensors() {
            let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            m.insert(name, (t.shape().to_vec(), v));
        }
        Fixture(m)
    }

    fn get(&self, name: &str) -> &[f32] {
        &self.0.get(name).unwrap_or_else(|| panic!("fixture has no '{name}'")).1
    }
}

/// `a` and `b` agree to `rel` of the larger magnitude (at least 1).
fn close(what: &str, a: &[f32], b: &[f32], rel: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let tol = rel * x.abs().max(y.abs()).max(1.0);
        assert!((x - y).abs() <= tol, "{what}[{i}]: rust {x} vs numpy {y}");
    }
}

const DIMS: usize = 4;

fn config(radius: f32, margin: f32) -> CfaConfig {
    CfaConfig { radius, margin, centroids: 10, grid_time: 3, grid_freq: 5, ..CfaConfig::default() }
}

#[test]
fn coordinates_match_addcoords() {
    let f = Fixture::load();
    close("inputs", &augment(f.get("patches"), DIMS, 3, 5), f.get("inputs"), 1e-6);
}

#[test]
fn loss_and_gradient_match_numpy() {
    let f = Fixture::load();
    let x = augment(f.get("patches"), DIMS, 3, 5);
    let params = f.get("params");
    let grads = f.get("grad");
    let per = (DIMS + 3) * DIMS;
    for case in 0..2 {
        let cfg = config(params[2 * case], params[2 * case + 1]);
        let (loss, grad) = loss_and_grad(&x, f.get("weights"), DIMS, f.get("centroids"), &cfg);
        close(&format!("loss {case}"), &[loss as f32], &f.get("loss")[case..case + 1], 1e-4);
        close(&format!("grad {case}"), &grad, &grads[case * per..(case + 1) * per], 1e-4);
    }
}

#[test]
fn scores_match_numpy() {
    let f = Fixture::load();
    let mut state = f.get("weights").to_vec();
    state.extend_from_slice(f.get("centroids"));
    let cfa = Cfa::from_state(state, DIMS, config(1e-5, 0.1)).unwrap();
    close("score", &cfa.score_grid(f.get("patches"), 3, 5).unwrap(), f.get("score"), 1e-5);
}
