//! The default backbone equals onnxruntime on the same ONNX (fixture written by `tests/reference/backbone_ref.py`): a
//! real MIMII log-mel window and a random input of odd length, with both runtimes (the direct CNN14 path of
//! `sonomaly::cnn` and tract). The two runtimes also agree with each other on every output and odd shapes.

use safetensors::SafeTensors;
use sonomaly::backbone::{Backbone, BackboneSpec, Runtime};
use sonomaly::cnn::Cnn14Plan;
use sonomaly::pipeline::{AISFX_ONNX as DEFAULT_ONNX, AISFX_SPEC as DEFAULT_SPEC};

fn tensor(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture has {name}"));
    let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    (t.shape().to_vec(), v)
}

fn check(prefix: &str, input: &str, frames: usize) {
    check_runtime(prefix, input, frames, Runtime::Auto, "cnn14-winograd");
    check_runtime(prefix, input, frames, Runtime::Tract, "tract");
}

fn check_runtime(prefix: &str, input: &str, frames: usize, runtime: Runtime, expected: &str) {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/backbone_aisfx.safetensors"))
        .expect("fixture");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut spec = BackboneSpec::from_json(DEFAULT_SPEC).unwrap();
    spec.window_frames = frames;
    spec.window_hop = frames;
    let outputs: Vec<String> = ["conv_block2", "conv_block3", "conv_block4"].map(String::from).to_vec();
    let backbone = Backbone::with_runtime(DEFAULT_ONNX, spec, &outputs, runtime).unwrap();
    assert_eq!(backbone.runtime_name(), expected);
    let (shape, x) = tensor(&st, input);
    assert_eq!(shape, vec![1, 1, frames, 96]);
    let maps = backbone.run(&x).unwrap();
    for (name, map) in outputs.iter().zip(&maps) {
        let (shape, reference) = tensor(&st, &format!("{prefix}{name}"));
        assert_eq!(vec![1, map.channels, map.time, map.freq], shape, "{name} shape");
        let mut worst = 0.0f32;
        for (a, b) in map.data.iter().zip(&reference) {
            let err = (a - b).abs() / b.abs().max(1.0);
            worst = worst.max(err);
        }
        println!("{expected}: {input} -> {name}: max error {worst:e} (absolute below 1, relative above)");
        assert!(worst <= 1e-4, "{name}: {worst}");
    }
}

#[test]
fn tract_equals_onnxruntime_on_a_real_clip() {
    check("", "logmel", 100);
}

#[test]
fn tract_equals_onnxruntime_on_an_odd_random_input() {
    check("random_", "random_logmel", 37);
}

/// Deterministic values in [-2, 2).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

#[test]
fn direct_path_equals_tract_on_every_output_and_odd_shapes() {
    let names: Vec<String> = (1..=4).map(|b| format!("conv_block{b}")).collect();
    // (From 16 frames, the pipeline's minimum: for a 1-row input to a pooling, tract gives 1 row where ONNX says 0.)
    for frames in [16usize, 17, 37, 100, 431] {
        let mut spec = BackboneSpec::from_json(DEFAULT_SPEC).unwrap();
        spec.window_frames = frames;
        spec.window_hop = frames;
        let direct = Backbone::with_runtime(DEFAULT_ONNX, spec.clone(), &names, Runtime::Auto).unwrap();
        let tract = Backbone::with_runtime(DEFAULT_ONNX, spec, &names, Runtime::Tract).unwrap();
        assert_eq!(direct.runtime_name(), "cnn14-winograd");
        let x = noise(frames * 96, frames as u64);
        let (a, b) = (direct.run(&x).unwrap(), tract.run(&x).unwrap());
        for (ma, mb) in a.iter().zip(&b) {
            assert_eq!((ma.channels, ma.time, ma.freq), (mb.channels, mb.time, mb.freq), "{frames}: {}", ma.name);
            // Error relative to the layer's largest value: Winograd and im2col round differently, and this random
            // input (wider than any log-mel) makes large activations.
            let scale = mb.data.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let worst = ma.data.iter().zip(&mb.data).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max) / scale;
            println!("{frames} frames, {}: {worst:e} of the largest value {scale}", ma.name);
            assert!(worst <= 1e-5, "{frames} frames, {}: {worst}", ma.name);
            assert!(ma.data.is_empty() || ma.data.iter().any(|v| *v != 0.0), "{frames} frames, {}: all zero", ma.name);
        }
    }
}

#[test]
fn a_batch_of_windows_equals_the_windows_one_by_one() {
    let names: Vec<String> = ["conv_block2", "conv_block3", "conv_block4"].map(String::from).to_vec();
    let spec = BackboneSpec::from_json(DEFAULT_SPEC).unwrap();
    for runtime in [Runtime::Auto, Runtime::Tract] {
        let backbone = Backbone::with_runtime(DEFAULT_ONNX, spec.clone(), &names, runtime).unwrap();
        let windows: Vec<Vec<f32>> = (0..5).map(|i| noise(100 * 96, 100 + i)).collect();
        let refs: Vec<&[f32]> = windows.iter().map(|w| w.as_slice()).collect();
        let batch = backbone.run_batch(&refs).unwrap();
        assert_eq!(batch.len(), 5);
        for (w, maps) in windows.iter().zip(&batch) {
            assert_eq!(&backbone.run(w).unwrap(), maps, "{}", backbone.runtime_name());
        }
        assert!(backbone.run_batch(&[&windows[0], &[0.0; 7]]).is_err());
        assert!(backbone.run_batch(&[]).unwrap().is_empty());
    }
}

#[test]
fn outputs_come_in_the_order_asked_and_zero_frames_are_refused() {
    let spec = BackboneSpec::from_json(DEFAULT_SPEC).unwrap();
    let forward: Vec<String> = ["conv_block2", "conv_block4"].map(String::from).to_vec();
    let backward: Vec<String> = ["conv_block4", "conv_block2"].map(String::from).to_vec();
    let x = noise(100 * 96, 9);
    let f = Backbone::from_bytes(DEFAULT_ONNX, spec.clone(), &forward).unwrap().run(&x).unwrap();
    let b = Backbone::from_bytes(DEFAULT_ONNX, spec.clone(), &backward).unwrap().run(&x).unwrap();
    assert_eq!((b[0].name.as_str(), b[1].name.as_str()), ("conv_block4", "conv_block2"));
    assert_eq!((&f[0], &f[1]), (&b[1], &b[0]));
    let err = Backbone::with_frames(DEFAULT_ONNX, spec, &forward, 0, Runtime::Auto).unwrap_err().to_string();
    assert!(err.contains("at least one frame"), "{err}");
}

#[test]
fn graphs_outside_the_cnn14_chain_go_to_tract() {
    use tract_onnx::prelude::Framework;
    let proto = tract_onnx::onnx().proto_model_for_read(&mut std::io::Cursor::new(DEFAULT_ONNX)).unwrap();
    let outputs = vec!["conv_block2".to_string()];
    assert!(Cnn14Plan::from_onnx(&proto, &outputs, 96).is_ok());
    let err = Cnn14Plan::from_onnx(&proto, &outputs, 64).unwrap_err().to_string();
    assert!(err.contains("not a plain CNN14 chain"), "{err}");
    assert!(Cnn14Plan::from_onnx(&proto, &["no_such_tensor".to_string()], 96).is_err());
    let mut changed = proto.clone();
    let graph = changed.graph.as_mut().unwrap();
    let relu = graph.node.iter_mut().find(|n| n.op_type == "Relu").unwrap();
    relu.op_type = "Sigmoid".into();
    let err = Cnn14Plan::from_onnx(&changed, &outputs, 96).unwrap_err().to_string();
    assert!(err.contains("Sigmoid"), "{err}");
    // The same graph through Backbone: runs on tract and says why.
    let mut bytes = Vec::new();
    prost::Message::encode(&changed, &mut bytes).unwrap();
    let spec = BackboneSpec::from_json(DEFAULT_SPEC).unwrap();
    let b = Backbone::from_bytes(&bytes, spec, &outputs).unwrap();
    assert_eq!(b.runtime_name(), "tract");
    assert!(b.tract_reason().unwrap().contains("Sigmoid"), "{:?}", b.tract_reason());
    // Outputs before an unsupported tail are still taken on the direct path.
    let mut tail = proto.clone();
    let graph = tail.graph.as_mut().unwrap();
    let last = graph.node.iter_mut().rev().find(|n| n.op_type == "Relu").unwrap();
    last.op_type = "Sigmoid".into();
    assert!(Cnn14Plan::from_onnx(&tail, &outputs, 96).is_ok());
    // A pooling with auto_pad and a short weight tensor are refused.
    let mut changed = proto.clone();
    let graph = changed.graph.as_mut().unwrap();
    let pool = graph.node.iter_mut().find(|n| n.op_type == "MaxPool").unwrap();
    pool.attribute.push(tract_onnx::pb::AttributeProto {
        name: "auto_pad".into(),
        s: b"SAME_UPPER".to_vec(),
        ..Default::default()
    });
    assert!(Cnn14Plan::from_onnx(&changed, &outputs, 96).is_err());
    let mut changed = proto.clone();
    let graph = changed.graph.as_mut().unwrap();
    let w = graph.initializer.iter_mut().find(|t| t.name.starts_with("conv_block1.conv2.weight")).unwrap();
    w.raw_data.truncate(w.raw_data.len() / 2);
    let err = Cnn14Plan::from_onnx(&changed, &outputs, 96).unwrap_err().to_string();
    assert!(err.contains("expected"), "{err}");
    let mut changed = proto.clone();
    let graph = changed.graph.as_mut().unwrap();
    let conv = graph.node.iter_mut().find(|n| n.op_type == "Conv").unwrap();
    conv.attribute.iter_mut().find(|a| a.name == "strides").unwrap().ints = vec![2, 2];
    assert!(Cnn14Plan::from_onnx(&changed, &outputs, 96).is_err());
}

#[test]
fn bad_models_and_inputs_are_refused() {
    let spec = BackboneSpec::from_json(DEFAULT_SPEC).unwrap();
    let out = vec!["conv_block2".to_string()];
    assert!(Backbone::from_bytes(&[], spec.clone(), &out).is_err());
    assert!(Backbone::from_bytes(b"not an onnx file at all", spec.clone(), &out).is_err());
    assert!(Backbone::from_bytes(DEFAULT_ONNX, spec.clone(), &["conv_block9".to_string()]).is_err());
    let b = Backbone::from_bytes(DEFAULT_ONNX, spec, &out).unwrap();
    assert!(b.run(&[0.0; 10]).is_err());
    assert!(BackboneSpec::from_json("{").is_err());
    assert!(BackboneSpec::from_json(&DEFAULT_SPEC.replace("\"nctf\"", "\"nhwc\"")).is_err());
}
