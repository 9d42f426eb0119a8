//! The fuzz corpora and reproducers, replayed on stable Rust (CI does not fuzz; `fuzz/` and README.md,
//! "Fuzzing", say how to). Every committed seed of `tests/fixtures/fuzz-seeds/<target>/` and `fuzz/regressions/<target>/` goes
//! through the same function as the fuzz target (`fuzz/targets.rs`) and must come back without a panic.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::Path;

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    v.sort();
    v
}

#[test]
fn every_committed_fuzz_input_is_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut total = 0;
    for (name, run) in targets::TARGETS {
        let corpus = inputs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz-seeds").join(name));
        assert!(!corpus.is_empty(), "tests/fixtures/fuzz-seeds/{name} is empty: run fuzz/make_seeds.sh");
        let regressions = inputs(&root.join("regressions").join(name));
        let start = std::time::Instant::now();
        for p in corpus.iter().chain(&regressions) {
            let data = std::fs::read(p).unwrap();
            let r = std::panic::catch_unwind(|| run(&data));
            assert!(r.is_ok(), "fuzz target {name} panicked on {}", p.display());
        }
        println!(
            "{name}: {} corpus inputs, {} reproducers, {:.2} s",
            corpus.len(),
            regressions.len(),
            start.elapsed().as_secs_f64()
        );
        total += corpus.len() + regressions.len();
    }
    assert!(total > 0);
}

#[test]
fn the_tiny_backbones_load_on_both_runtimes() {
    use sonomaly::backbone::{Backbone, BackboneSpec};
    let spec = BackboneSpec::from_json(targets::TINY_SPEC).unwrap();
    let out = ["conv_block1".to_string()];
    let direct = Backbone::from_bytes(targets::TINY_ONNX, spec.clone(), &out).unwrap();
    assert_eq!(direct.runtime_name(), "cnn14-winograd", "{:?}", direct.tract_reason());
    let tract_onnx = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/tiny/tiny-tract.onnx")).unwrap();
    let tract = Backbone::from_bytes(&tract_onnx, spec, &out).unwrap();
    assert_eq!(tract.runtime_name(), "tract");
}
