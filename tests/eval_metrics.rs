//! Metric functions against scikit-learn on fixed inputs with ties (`tests/reference/metrics_ref.py` writes
//! `tests/fixtures/metrics_ref.json`): ROC-AUC, pAUC with max_fpr = 0.1 (DCASE), F1-max.

use sonomaly::metrics::{bootstrap, f1_max, partial_auc, roc_auc};

#[test]
fn metrics_match_scikit_learn() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/metrics_ref.json"))
        .expect("fixture written by tests/reference/metrics_ref.py");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 9);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let labels: Vec<bool> = c["labels"].as_array().unwrap().iter().map(|x| x.as_bool().unwrap()).collect();
        let scores: Vec<f32> = c["scores"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let auc = roc_auc(&labels, &scores).unwrap();
        let pauc = partial_auc(&labels, &scores, 0.1).unwrap();
        let (f1, _) = f1_max(&labels, &scores).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(auc, c["roc_auc"].as_f64().unwrap()), "{name}: ROC-AUC {auc} vs {}", c["roc_auc"]);
        assert!(close(pauc, c["pauc_0.1"].as_f64().unwrap()), "{name}: pAUC {pauc} vs {}", c["pauc_0.1"]);
        assert!(close(f1, c["f1_max"].as_f64().unwrap()), "{name}: F1-max {f1} vs {}", c["f1_max"]);
    }
}

#[test]
fn bootstrap_interval_brackets_the_value() {
    let labels: Vec<bool> = (0..40).map(|i| i % 3 == 0).collect();
    let scores: Vec<f32> = (0..40).map(|i| ((i * 7) % 11) as f32 + if i % 3 == 0 { 3.0 } else { 0.0 }).collect();
    let w = bootstrap(&labels, &scores, roc_auc, 500, 0.95, 1).unwrap();
    assert!(w.low <= w.value && w.value <= w.high, "{w:?}");
    assert!(w.high - w.low > 0.01);
    let again = bootstrap(&labels, &scores, roc_auc, 500, 0.95, 1).unwrap();
    assert_eq!(w, again, "seeded");
}
