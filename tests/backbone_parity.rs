//! The default backbone run by tract equals onnxruntime on the same ONNX (fixture written by
//! `tests/reference/backbone_ref.py`): a real MIMII log-mel window and a random input of odd length.

use safetensors::SafeTensors;
use sonomaly::backbone::{Backbone, BackboneSpec};
use sonomaly::pipeline::{DEFAULT_ONNX, DEFAULT_SPEC};

fn tensor(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture has {name}"));
    let v = t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    (t.shape().to_vec(), v)
}

fn check(prefix: &str, input: &str, frames: usize) {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/backbone_aisfx.safetensors"))
        .expect("fixture");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut spec = BackboneSpec::from_json(DEFAULT_SPEC).unwrap();
    spec.window_frames = frames;
    spec.window_hop = frames;
    let outputs: Vec<String> = ["conv_block2", "conv_block3", "conv_block4"].map(String::from).to_vec();
    let backbone = Backbone::from_bytes(DEFAULT_ONNX, spec, &outputs).unwrap();
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
        println!("{input} -> {name}: max error {worst:e} (absolute below 1, relative above)");
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
