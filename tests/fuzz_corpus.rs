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

#[test]
fn damaged_onnx_tensors_and_windows_are_refused_before_tract_reads_them() {
    // Found by fuzzing: tract-onnx reaches `unimplemented!` on a string tensor given as raw bytes; natively that
    // panic is caught, but the wasm build aborts on a panic, so every tensor is checked before tract reads it.
    use prost::Message;
    use sonomaly::backbone::{Backbone, BackboneSpec, Runtime};
    use tract_onnx::pb::{tensor_proto::DataLocation, ModelProto, TensorProto};
    // An edit that damages one initializer of the tiny model.
    type Edit = fn(&mut TensorProto);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let load = |bytes: &[u8]| {
        let spec = BackboneSpec::from_json(targets::TINY_SPEC).unwrap();
        match Backbone::with_runtime(bytes, spec, &["conv_block1".to_string()], Runtime::Tract) {
            Ok(_) => panic!("a damaged model loaded"),
            Err(e) => e.to_string(),
        }
    };
    let m = load(
        &std::fs::read(root.join("fuzz/regressions/onnx/crash-27f12692ac2e8e94d5f4cbd0b5c9de34bce2a3d9")).unwrap(),
    );
    assert!(m.contains("initializer 'conv2.weight.f16' holds strings as raw bytes"), "{m}");
    let good = ModelProto::decode(&std::fs::read(root.join("fuzz/tiny/tiny-tract.onnx")).unwrap()[..]).unwrap();
    let cases: [(&str, Edit); 6] = [
        ("holds 71 bytes of raw data, but its dimensions [2, 2, 3, 3] ask for 72", |t| {
            t.raw_data.pop();
        }),
        ("has a negative dimension (-2)", |t| t.dims[0] = -2),
        ("too large to hold in memory", |t| t.dims = vec![1 << 40, 1 << 40]),
        ("has data type 16 (Bfloat16), which tract does not read", |t| t.data_type = 16),
        ("has data type 999 (unknown)", |t| t.data_type = 999),
        ("keeps its data in an external file", |t| {
            t.raw_data.clear();
            t.data_location = Some(DataLocation::External as i32);
        }),
    ];
    for (want, damage) in cases {
        let mut m = good.clone();
        let graph = m.graph.as_mut().unwrap();
        let w = graph.initializer.iter_mut().find(|t| t.name == "conv2.weight.f16").unwrap();
        damage(w);
        let msg = load(&m.encode_to_vec());
        assert!(msg.contains("conv2.weight.f16") && msg.contains(want), "{want}: {msg}");
        assert!(!msg.contains("tract's ONNX reader failed"), "refused before tract read it: {msg}");
    }
    // A tensor in a node attribute (Constant's value) is checked too.
    let mut m = good.clone();
    let graph = m.graph.as_mut().unwrap();
    let mut t = graph.initializer.iter().find(|t| t.name == "shift").unwrap().clone();
    t.data_type = 8;
    let mut node = tract_onnx::pb::NodeProto { name: "k".into(), op_type: "Constant".into(), ..Default::default() };
    node.output.push("k_out".into());
    node.attribute.push(tract_onnx::pb::AttributeProto { name: "value".into(), t: Some(t), ..Default::default() });
    graph.node.insert(0, node);
    let msg = load(&m.encode_to_vec());
    assert!(msg.contains("node 'k' (attribute 'value') holds strings as raw bytes"), "{msg}");

    // Window attributes that disagree on the number of spatial axes (found by fuzzing: a MaxPool with pads
    // [0, 0, 0] made tract index past their end).
    for (node, attr, ints, want) in [
        ("pool", "pads", vec![0, 0, 0], "has pads of 3 value(s), but its kernel_shape of 2 value(s) make(s) 2"),
        ("conv2", "strides", vec![1], "has strides of 1 value(s), but its kernel_shape of 2 value(s) make(s) 2"),
        ("conv1", "dilations", vec![1, 1, 1], "has dilations of 3 value(s)"),
    ] {
        let mut m = good.clone();
        let n = m.graph.as_mut().unwrap().node.iter_mut().find(|n| n.name == node).unwrap();
        n.attribute.iter_mut().find(|a| a.name == attr).unwrap().ints = ints;
        let msg = load(&m.encode_to_vec());
        assert!(msg.contains(&format!("node '{node}'")) && msg.contains(want), "{want}: {msg}");
    }
    // A window of one axis on a 4-D input (the model's input, [1, 1, frames, mel_bins], through rank-keeping nodes).
    let mut m = good.clone();
    let n = m.graph.as_mut().unwrap().node.iter_mut().find(|n| n.name == "pool").unwrap();
    for a in n.attribute.iter_mut().filter(|a| matches!(a.name.as_str(), "kernel_shape" | "strides")) {
        a.ints = vec![2];
    }
    n.attribute.retain(|a| a.name != "pads");
    let msg = load(&m.encode_to_vec());
    assert!(
        msg.contains("node 'pool' (MaxPool) has a window of 1 spatial axes, but its input 'relu2.out' has 2"),
        "{msg}"
    );
}
