//! Direct inference of CNN14-family trunks: 3x3 convolutions by Winograd's minimal filtering F(2x2, 3x3) on
//! matrix products, with batch norm folded in and ReLU fused.
//!
//! A CNN14 trunk is a plain chain: (optional per-mel-bin batch norm `bn0`), then blocks of
//! `Conv 3x3 -> BatchNormalization -> Relu` pairs separated by 2x2 max or average pooling. Winograd F(2x2, 3x3)
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016) computes each 2x2 output tile
//! from a 4x4 input tile with 16 multiplications instead of 36, so a 3x3 convolution becomes 16 matrix products
//! `[C_out, C_in] x [C_in, tiles]` (2.25x fewer multiply-adds than direct or im2col convolution), run by
//! `matrixmultiply`'s sgemm (AVX2/AVX-512 FMA kernels natively, simd128 in wasm). Tiles are processed in blocks that
//! stay in cache, spread over threads on native targets. The first convolution (one input channel) is computed
//! directly, which is cheaper there. [`Cnn14Plan::run_batch`] runs several windows through one set of products.
//!
//! [`Cnn14Plan::from_onnx`] reads the ONNX graph and accepts only the chain above (the graphs that
//! `models/convert_aisfx.py` and `models/convert_cnn14.py` write); anything else is refused with the reason, and
//! [`crate::backbone::Backbone`] then runs the model with tract instead. Results agree with tract and onnxruntime to
//! float32 rounding (`tests/backbone_parity.rs`).

use std::collections::HashMap;

use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::f16;

use crate::error::{Error, Result};
use crate::linalg::matmul;

/// One step of the chain.
#[derive(Debug, Clone)]
enum Step {
    /// Per-mel-bin affine map of the input `[1, 1, T, M]`: `x * scale[m] + shift[m]` (PANNs `bn0`).
    MelAffine { scale: Vec<f32>, shift: Vec<f32> },
    /// 3x3 convolution, padding 1, stride 1, with folded batch norm (`bias`) and optional ReLU. `u` holds the
    /// Winograd-transformed kernels `G g G^T`, `[16, c_out, c_in]`, and the (scaled) kernels themselves
    /// `[c_out, c_in, 3, 3]` (used when `c_in == 1`, where a direct convolution is cheaper).
    Conv { c_in: usize, c_out: usize, u: Vec<f32>, kernel: Vec<f32>, bias: Vec<f32>, relu: bool },
    /// 2x2 pooling, stride 2, floor (odd last row / column dropped).
    Pool { max: bool },
}

/// A CNN14 trunk ready to run: steps in order, and after which step each requested output is taken.
#[derive(Debug, Clone)]
pub struct Cnn14Plan {
    steps: Vec<Step>,
    /// `(step index after which the value is the output, output name)`, in the order requested.
    taps: Vec<(usize, String)>,
    mel_bins: usize,
}

/// `batch` images of `[channels, time, freq]` each, one after the other (the chain's working value).
#[derive(Debug, Clone)]
struct Stack {
    batch: usize,
    channels: usize,
    time: usize,
    freq: usize,
    data: Vec<f32>,
}

/// Activations `[C, T, F]`.
#[derive(Debug, Clone)]
pub struct Activation {
    /// Channels.
    pub channels: usize,
    /// Time rows.
    pub time: usize,
    /// Frequency columns.
    pub freq: usize,
    /// `channels * time * freq` values.
    pub data: Vec<f32>,
}

fn unsupported(what: impl std::fmt::Display) -> Error {
    Error::model(format!("not a plain CNN14 chain: {what}"))
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// True if the node has no `auto_pad` or `auto_pad = NOTSET` (explicit pads).
fn explicit_pads(node: &NodeProto) -> bool {
    attr(node, "auto_pad").is_none_or(|a| a.s.is_empty() || a.s == b"NOTSET")
}

fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn float_values(t: &TensorProto) -> Result<Vec<f32>> {
    match t.data_type {
        1 if !t.raw_data.is_empty() => {
            Ok(t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        }
        1 => Ok(t.float_data.clone()),
        10 if !t.raw_data.is_empty() => {
            Ok(t.raw_data.chunks_exact(2).map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()).collect())
        }
        10 => Ok(t.int32_data.iter().map(|&x| f16::from_bits(x as u16).to_f32()).collect()),
        other => Err(unsupported(format!("initializer '{}' has data type {other}", t.name))),
    }
}

/// Winograd kernel transform `G g G^T` of one 3x3 kernel `g` (row-major), 4x4 row-major.
fn kernel_transform(g: &[f32]) -> [f32; 16] {
    // G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    let gm = |r: [f32; 3]| [r[0], 0.5 * (r[0] + r[1] + r[2]), 0.5 * (r[0] - r[1] + r[2]), r[2]];
    let rows = [gm([g[0], g[1], g[2]]), gm([g[3], g[4], g[5]]), gm([g[6], g[7], g[8]])];
    let mut out = [0.0f32; 16];
    for j in 0..4 {
        let col = gm([rows[0][j], rows[1][j], rows[2][j]]);
        for i in 0..4 {
            out[i * 4 + j] = col[i];
        }
    }
    out
}

impl Cnn14Plan {
    /// Reads `model` and keeps the `outputs` named (tensor names in the graph), for inputs of `mel_bins` mel bins.
    ///
    /// # Errors
    /// [`Error::Model`] naming the first node, attribute or initializer outside the supported chain, or an output
    /// that is not in it.
    pub fn from_onnx(model: &ModelProto, outputs: &[String], mel_bins: usize) -> Result<Self> {
        let graph = model.graph.as_ref().ok_or_else(|| unsupported("no graph"))?;
        if graph.input.iter().filter(|i| !graph.initializer.iter().any(|t| t.name == i.name)).count() != 1 {
            return Err(unsupported("the graph must have exactly one input"));
        }
        let input = graph.input.iter().find(|i| !graph.initializer.iter().any(|t| t.name == i.name)).unwrap();
        // A fixed mel dimension in the graph's input must be the front end's.
        if let Some(tract_onnx::pb::type_proto::Value::TensorType(t)) =
            input.r#type.as_ref().and_then(|t| t.value.as_ref())
        {
            let dims = t.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or_default();
            if let Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(m)) =
                dims.get(3).and_then(|d| d.value.as_ref())
            {
                if *m as usize != mel_bins {
                    return Err(unsupported(format!("the graph's input has {m} mel bins, the front end {mel_bins}")));
                }
            }
        }
        let mut consts: HashMap<String, Vec<f32>> = HashMap::new();
        let mut shapes: HashMap<String, Vec<i64>> = HashMap::new();
        for t in &graph.initializer {
            consts.insert(t.name.clone(), float_values(t)?);
            shapes.insert(t.name.clone(), t.dims.clone());
        }
        // A constant of exactly `len` values (weights stored outside the file, or of the wrong size, are refused).
        let get = |consts: &HashMap<String, Vec<f32>>, name: &str, len: usize| {
            let v = consts.get(name).ok_or_else(|| unsupported(format!("'{name}' is not a constant")))?;
            if v.len() != len {
                return Err(unsupported(format!("'{name}' has {} values, {len} expected", v.len())));
            }
            Ok(v.clone())
        };
        let mut steps: Vec<Step> = Vec::new();
        let mut taps: Vec<(usize, String)> = Vec::new();
        // Name of the tensor the chain currently ends with, and whether it is in [1, 1, T, M] (true) or the
        // transposed [1, M, T, 1] layout between bn0's two Transposes.
        let mut current = input.name.clone();
        let mut transposed = false;
        let mut channels = 1usize;
        // Casts of constants (float16 weights to float32) are constants; the rest of the graph must be a chain.
        let mut nodes: Vec<&NodeProto> = Vec::with_capacity(graph.node.len());
        // Every node's inputs and outputs are indexed below: a node with fewer than its operator has is not a
        // chain this path runs (found by fuzzing: it panicked on a Conv without outputs).
        for n in &graph.node {
            let inputs = match n.op_type.as_str() {
                "BatchNormalization" => 5,
                "Conv" => 2,
                _ => 1,
            };
            if n.output.is_empty() || n.input.len() < inputs {
                return Err(unsupported(format!(
                    "node '{}' ({}) has {} input(s) and {} output(s)",
                    n.name,
                    n.op_type,
                    n.input.len(),
                    n.output.len()
                )));
            }
        }
        for n in &graph.node {
            if n.op_type == "Cast" && consts.contains_key(&n.input[0]) {
                let v = consts[&n.input[0]].clone();
                let s = shapes[&n.input[0]].clone();
                consts.insert(n.output[0].clone(), v);
                shapes.insert(n.output[0].clone(), s);
            } else {
                nodes.push(n);
            }
        }
        let mut i = 0;
        while i < nodes.len() {
            let n = nodes[i];
            let op = n.op_type.as_str();
            if n.input.first() != Some(&current) {
                return Err(unsupported(format!("node '{}' ({op}) does not continue the chain", n.name)));
            }
            match op {
                "Transpose" => {
                    if ints(n, "perm") != Some(vec![0, 3, 2, 1]) || channels != 1 {
                        return Err(unsupported(format!("Transpose '{}' is not bn0's mel-axis transpose", n.name)));
                    }
                    transposed = !transposed;
                }
                "BatchNormalization" if transposed => {
                    let eps = attr(n, "epsilon").map_or(1e-5, |a| a.f);
                    let (g, b, m, v) = (
                        get(&consts, &n.input[1], mel_bins)?,
                        get(&consts, &n.input[2], mel_bins)?,
                        get(&consts, &n.input[3], mel_bins)?,
                        get(&consts, &n.input[4], mel_bins)?,
                    );
                    let scale: Vec<f32> = g.iter().zip(&v).map(|(g, v)| g / (v + eps).sqrt()).collect();
                    let shift = b.iter().zip(&m).zip(&scale).map(|((b, m), s)| b - m * s).collect();
                    steps.push(Step::MelAffine { scale, shift });
                }
                "Conv" => {
                    let w_shape = shapes.get(&n.input[1]).cloned().unwrap_or_default();
                    let ok = ints(n, "kernel_shape").is_none_or(|k| k == [3, 3])
                        && ints(n, "pads").is_some_and(|p| p == [1, 1, 1, 1])
                        && ints(n, "strides").is_none_or(|s| s == [1, 1])
                        && ints(n, "dilations").is_none_or(|d| d == [1, 1])
                        && attr(n, "group").is_none_or(|g| g.i == 1)
                        && explicit_pads(n)
                        && w_shape.len() == 4
                        && w_shape[2] == 3
                        && w_shape[3] == 3
                        && w_shape[1] as usize == channels
                        && !transposed;
                    if !ok {
                        return Err(unsupported(format!(
                            "Conv '{}' is not a 3x3, pad 1, stride 1 convolution",
                            n.name
                        )));
                    }
                    let (c_out, c_in) = (w_shape[0] as usize, w_shape[1] as usize);
                    let w = get(&consts, &n.input[1], c_out * c_in * 9)?;
                    let mut bias = match n.input.get(2) {
                        Some(b) if !b.is_empty() => get(&consts, b, c_out)?,
                        _ => vec![0.0; c_out],
                    };
                    let mut scale = vec![1.0f32; c_out];
                    let mut out_name = n.output[0].clone();
                    let mut relu = false;
                    // Fold a following BatchNormalization, fuse a following Relu.
                    if let Some(bn) =
                        nodes.get(i + 1).filter(|b| b.op_type == "BatchNormalization" && b.input[0] == out_name)
                    {
                        let eps = attr(bn, "epsilon").map_or(1e-5, |a| a.f);
                        let (g, b, m, v) = (
                            get(&consts, &bn.input[1], c_out)?,
                            get(&consts, &bn.input[2], c_out)?,
                            get(&consts, &bn.input[3], c_out)?,
                            get(&consts, &bn.input[4], c_out)?,
                        );
                        for c in 0..c_out {
                            scale[c] = g[c] / (v[c] + eps).sqrt();
                            bias[c] = (bias[c] - m[c]) * scale[c] + b[c];
                        }
                        out_name = bn.output[0].clone();
                        i += 1;
                    }
                    if let Some(r) = nodes.get(i + 1).filter(|r| r.op_type == "Relu" && r.input[0] == out_name) {
                        relu = true;
                        out_name = r.output[0].clone();
                        i += 1;
                    }
                    let kernel: Vec<f32> = w.iter().enumerate().map(|(i, v)| v * scale[i / (9 * c_in)]).collect();
                    let mut u = vec![0.0f32; 16 * c_out * c_in];
                    for o in 0..c_out {
                        for c in 0..c_in {
                            let t = kernel_transform(&kernel[(o * c_in + c) * 9..(o * c_in + c + 1) * 9]);
                            for (xi, v) in t.iter().enumerate() {
                                u[(xi * c_out + o) * c_in + c] = *v;
                            }
                        }
                    }
                    steps.push(Step::Conv { c_in, c_out, u, kernel, bias, relu });
                    channels = c_out;
                    current = out_name;
                    if outputs.contains(&current) {
                        taps.push((steps.len() - 1, current.clone()));
                    }
                    i += 1;
                    if outputs.iter().all(|o| taps.iter().any(|(_, t)| t == o)) {
                        break; // whatever follows (a classifier head, say) is not needed
                    }
                    continue;
                }
                "MaxPool" | "AveragePool" => {
                    let ok = ints(n, "kernel_shape") == Some(vec![2, 2])
                        && ints(n, "strides") == Some(vec![2, 2])
                        && ints(n, "pads").is_none_or(|p| p.iter().all(|&v| v == 0))
                        && attr(n, "ceil_mode").is_none_or(|c| c.i == 0)
                        && ints(n, "dilations").is_none_or(|d| d == [1, 1])
                        && explicit_pads(n)
                        && !transposed;
                    if !ok {
                        return Err(unsupported(format!("{op} '{}' is not a 2x2 stride-2 pooling", n.name)));
                    }
                    steps.push(Step::Pool { max: op == "MaxPool" });
                }
                other => return Err(unsupported(format!("operator {other} ('{}')", n.name))),
            }
            current = n.output[0].clone();
            if outputs.contains(&current) && !transposed {
                taps.push((steps.len() - 1, current.clone()));
            }
            i += 1;
            if outputs.iter().all(|o| taps.iter().any(|(_, t)| t == o)) {
                break; // whatever follows (a classifier head, say) is not needed
            }
        }
        let mut ordered = Vec::with_capacity(outputs.len());
        for name in outputs {
            let tap = taps
                .iter()
                .find(|(_, n)| n == name)
                .ok_or_else(|| unsupported(format!("output '{name}' is not on the chain")))?;
            ordered.push(tap.clone());
        }
        if ordered.iter().any(|(s, _)| matches!(steps.get(*s), Some(Step::MelAffine { .. }))) {
            return Err(unsupported("an output taken right after bn0"));
        }
        let last = ordered.iter().map(|(s, _)| *s).max().unwrap_or(0);
        steps.truncate(last + 1);
        Ok(Cnn14Plan { steps, taps: ordered, mel_bins })
    }

    /// Runs the chain on `logmel` `[frames, mel_bins]` and returns the requested outputs in order, `[C, T_l, F_l]`
    /// each.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if `logmel.len()` is not `frames * mel_bins`.
    pub fn run(&self, logmel: &[f32], frames: usize) -> Result<Vec<Activation>> {
        Ok(self.run_batch(&[logmel], frames)?.pop().expect("one input, one result"))
    }

    /// Runs the chain on several inputs of the same size at once (e.g. the windows of a clip), `[frames, mel_bins]`
    /// each; returns, per input, the requested outputs in order. The same as [`Cnn14Plan::run`] on each input, but
    /// the matrix products span the tiles of all inputs, which keeps them wide in the deep layers.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if an input's length is not `frames * mel_bins`.
    pub fn run_batch(&self, inputs: &[&[f32]], frames: usize) -> Result<Vec<Vec<Activation>>> {
        let mut data = Vec::with_capacity(inputs.len() * frames * self.mel_bins);
        for logmel in inputs {
            if logmel.len() != frames * self.mel_bins {
                return Err(Error::invalid(format!(
                    "CNN input must be {frames} x {} values, got {}",
                    self.mel_bins,
                    logmel.len()
                )));
            }
            data.extend_from_slice(logmel);
        }
        let batch = inputs.len();
        let mut x = Stack { batch, channels: 1, time: frames, freq: self.mel_bins, data };
        let mut out: Vec<Vec<Option<Activation>>> = vec![vec![None; self.taps.len()]; batch];
        for (s, step) in self.steps.iter().enumerate() {
            x = match step {
                Step::MelAffine { scale, shift } => {
                    for row in x.data.chunks_exact_mut(x.freq) {
                        for ((v, a), b) in row.iter_mut().zip(scale).zip(shift) {
                            *v = *v * a + b;
                        }
                    }
                    x
                }
                Step::Conv { c_in: 1, c_out, kernel, bias, relu, .. } => direct_conv1(&x, *c_out, kernel, bias, *relu),
                Step::Conv { c_in, c_out, u, bias, relu, .. } => winograd_conv(&x, *c_in, *c_out, u, bias, *relu),
                Step::Pool { max } => pool2(&x, *max),
            };
            // Outputs are copied per input as soon as they are computed, into the slot of the order requested.
            for (k, (tap, _)) in self.taps.iter().enumerate() {
                if *tap == s {
                    let size = x.channels * x.time * x.freq;
                    for (b, o) in out.iter_mut().enumerate() {
                        o[k] = Some(Activation {
                            channels: x.channels,
                            time: x.time,
                            freq: x.freq,
                            data: x.data[b * size..(b + 1) * size].to_vec(),
                        });
                    }
                }
            }
        }
        Ok(out.into_iter().map(|o| o.into_iter().map(|a| a.expect("every tap is on the chain")).collect()).collect())
    }
}

/// 3x3 convolution (pad 1, stride 1) of a one-channel input, directly: each output row is the sum of the 9
/// shifted input rows times their weights, plus bias, then optional ReLU.
fn direct_conv1(x: &Stack, c_out: usize, kernel: &[f32], bias: &[f32], relu: bool) -> Stack {
    let (h, w) = (x.time, x.freq);
    // Input rows of each image zero-padded by one column on each side, plus a zero row above and below.
    let pw = w + 2;
    let mut padded = vec![0.0f32; x.batch * (h + 2) * pw];
    for (b, img) in padded.chunks_exact_mut((h + 2) * pw).enumerate() {
        for y in 0..h {
            let src = &x.data[(b * h + y) * w..(b * h + y + 1) * w];
            img[(y + 1) * pw + 1..(y + 1) * pw + 1 + w].copy_from_slice(src);
        }
    }
    let mut data = vec![0.0f32; x.batch * c_out * h * w];
    let conv_plane = |i: usize, plane: &mut [f32]| {
        let (b, o) = (i / c_out, i % c_out);
        let padded = &padded[b * (h + 2) * pw..(b + 1) * (h + 2) * pw];
        let k = &kernel[o * 9..(o + 1) * 9];
        for (y, out) in plane.chunks_exact_mut(w).enumerate() {
            out.fill(bias[o]);
            for dy in 0..3 {
                let src = &padded[(y + dy) * pw..(y + dy + 1) * pw];
                for dx in 0..3 {
                    let kv = k[dy * 3 + dx];
                    for (v, s) in out.iter_mut().zip(&src[dx..dx + w]) {
                        *v += kv * s;
                    }
                }
            }
            if relu {
                for v in out.iter_mut() {
                    *v = v.max(0.0);
                }
            }
        }
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        data.par_chunks_mut(h * w).enumerate().for_each(|(o, plane)| conv_plane(o, plane));
    }
    #[cfg(target_arch = "wasm32")]
    {
        data.chunks_mut(h * w).enumerate().for_each(|(o, plane)| conv_plane(o, plane));
    }
    Stack { batch: x.batch, channels: c_out, time: h, freq: w, data }
}

/// 2x2 max or average pooling, stride 2, floor; planes spread over threads natively.
fn pool2(x: &Stack, max: bool) -> Stack {
    let (t, f) = (x.time / 2, x.freq / 2);
    let mut data = vec![0.0f32; x.batch * x.channels * t * f];
    let pool_plane = |c: usize, out: &mut [f32]| {
        let plane = &x.data[c * x.time * x.freq..(c + 1) * x.time * x.freq];
        for (i, row) in out.chunks_exact_mut(f.max(1)).enumerate().take(t) {
            let (r0, r1) = (&plane[2 * i * x.freq..], &plane[(2 * i + 1) * x.freq..]);
            for (j, v) in row.iter_mut().enumerate() {
                let (a, b, c2, d) = (r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]);
                *v = if max { a.max(b).max(c2.max(d)) } else { (a + b + c2 + d) * 0.25 };
            }
        }
    };
    if t * f > 0 {
        #[cfg(not(target_arch = "wasm32"))]
        {
            use rayon::prelude::*;
            data.par_chunks_mut(t * f).enumerate().for_each(|(c, out)| pool_plane(c, out));
        }
        #[cfg(target_arch = "wasm32")]
        {
            data.chunks_mut(t * f).enumerate().for_each(|(c, out)| pool_plane(c, out));
        }
    }
    Stack { batch: x.batch, channels: x.channels, time: t, freq: f, data }
}

thread_local! {
    /// Per-thread buffers of [`winograd_conv`]: transformed input, products, output rows. They keep their largest
    /// size (a few MB per thread for a whole 10 s clip, under 2 MB for the pipeline's windows) for the next run.
    static SCRATCH: std::cell::RefCell<[Vec<f32>; 3]> = const { std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// The first `n` values of `buf`, grown (never shrunk) as needed.
fn scratch(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    &mut buf[..n]
}

/// Tiles transformed together in the inner loops (one or two SIMD registers wide).
const LANES: usize = 16;

/// Threads the tile blocks are spread over: rayon's current pool natively, one in wasm.
fn threads() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    return rayon::current_num_threads();
    #[cfg(target_arch = "wasm32")]
    return 1;
}

/// Tiles per block: the transformed input `[16, c_in, block]` and products `[16, c_out, block]` stay near 2 MB, and
/// each matrix product is wide enough that packing the kernels costs little next to it.
fn block_tiles(c_in: usize, c_out: usize) -> usize {
    (131072 / c_in.max(c_out)).clamp(16, 512)
}

/// 3x3 convolution (pad 1, stride 1) + bias + optional ReLU by Winograd F(2x2, 3x3).
///
/// Tiles are numbered image by image and row by row (`t = (b * th + ty) * tw + tx`, `tw = ceil(F / 2)`) and
/// processed in blocks; in a block the transforms run along runs of tiles of one tile row, on even/odd column
/// planes, so that every inner loop reads and writes contiguous memory and vectorises.
fn winograd_conv(x: &Stack, c_in: usize, c_out: usize, u: &[f32], bias: &[f32], relu: bool) -> Stack {
    let (h, w) = (x.time, x.freq);
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    let tiles = x.batch * th * tw;
    let block = block_tiles(c_in, c_out).min(tiles.div_ceil(threads())).max(1);
    let mut data = vec![0.0f32; x.batch * c_out * h * w];
    let blocks = tiles.div_ceil(block);
    let run_block = |bi: usize, out: &mut OutWriter| {
        SCRATCH.with_borrow_mut(|[v, m, y]| {
            let t0 = bi * block;
            let nt = (tiles - t0).min(block);
            // Runs of consecutive tiles within one tile row: (image, tile row, first tx, count, offset in the block).
            let mut runs = Vec::new();
            let mut t = t0;
            while t < t0 + nt {
                let (row, tx) = (t / tw, t % tw);
                let len = (tw - tx).min(t0 + nt - t);
                runs.push((row / th, row % th, tx, len, t - t0));
                t += len;
            }
            // Every element of v, m and y is written before it is read, so the reused buffers need no clearing.
            let v = scratch(v, 16 * c_in * nt);
            // Input rows of one run, split into even and odd columns of the zero-padded row (padded column j is input
            // column j - 1): even[r][k] = padded[2k], odd[r][k] = padded[2k + 1].
            let half = tw + 1;
            let mut even = vec![0.0f32; 4 * half];
            let mut odd = vec![0.0f32; 4 * half];
            for c in 0..c_in {
                for &(b, ty, tx0, len, off) in &runs {
                    let plane = &x.data[(b * c_in + c) * h * w..(b * c_in + c + 1) * h * w];
                    for r in 0..4 {
                        let (e, o) = (&mut even[r * half..(r + 1) * half], &mut odd[r * half..(r + 1) * half]);
                        e.fill(0.0);
                        o.fill(0.0);
                        let y = 2 * ty + r;
                        if y == 0 || y > h {
                            continue;
                        }
                        let src = &plane[(y - 1) * w..y * w];
                        // padded[j] = src[j - 1]: odd padded columns are even source columns and vice versa.
                        for (k, val) in src.iter().enumerate() {
                            let j = k + 1;
                            if j % 2 == 0 {
                                e[j / 2] = *val;
                            } else {
                                o[j / 2] = *val;
                            }
                        }
                    }
                    // V = B^T d B, B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], LANES tiles at a
                    // time on fixed-size arrays (vectorised).
                    let mut k0 = 0;
                    while k0 < len {
                        let n = LANES.min(len - k0);
                        let mut d = [[[0.0f32; LANES]; 4]; 4];
                        for (r, dr) in d.iter_mut().enumerate() {
                            for (q, drq) in dr.iter_mut().enumerate() {
                                let base = if q % 2 == 0 { &even } else { &odd };
                                let start = r * half + tx0 + q / 2 + k0;
                                drq[..n].copy_from_slice(&base[start..start + n]);
                            }
                        }
                        let mut e = [[[0.0f32; LANES]; 4]; 4];
                        for q in 0..4 {
                            for l in 0..LANES {
                                e[0][q][l] = d[0][q][l] - d[2][q][l];
                                e[1][q][l] = d[1][q][l] + d[2][q][l];
                                e[2][q][l] = d[2][q][l] - d[1][q][l];
                                e[3][q][l] = d[1][q][l] - d[3][q][l];
                            }
                        }
                        let mut f = [[0.0f32; LANES]; 16];
                        for r in 0..4 {
                            for l in 0..LANES {
                                f[r * 4][l] = e[r][0][l] - e[r][2][l];
                                f[r * 4 + 1][l] = e[r][1][l] + e[r][2][l];
                                f[r * 4 + 2][l] = e[r][2][l] - e[r][1][l];
                                f[r * 4 + 3][l] = e[r][1][l] - e[r][3][l];
                            }
                        }
                        for (xi, fx) in f.iter().enumerate() {
                            let start = (xi * c_in + c) * nt + off + k0;
                            v[start..start + n].copy_from_slice(&fx[..n]);
                        }
                        k0 += n;
                    }
                }
            }
            // 16 products M[xi] = U[xi] V[xi]: [c_out, c_in] x [c_in, nt].
            let m = scratch(m, 16 * c_out * nt);
            for xi in 0..16 {
                matmul(
                    c_out,
                    c_in,
                    nt,
                    &u[xi * c_out * c_in..(xi + 1) * c_out * c_in],
                    &v[xi * c_in * nt..(xi + 1) * c_in * nt],
                    false,
                    &mut m[xi * c_out * nt..(xi + 1) * c_out * nt],
                );
            }
            // Y = A^T M A, A^T = [[1, 1, 1, 0], [0, 1, -1, -1]], then bias and ReLU; y[r][q] is output row 2 ty + r,
            // column 2 tx + q.
            let y = scratch(y, 4 * nt);
            for (o, &b) in bias[..c_out].iter().enumerate() {
                let mut k0 = 0;
                while k0 < nt {
                    let n = LANES.min(nt - k0);
                    let mut g = [[0.0f32; LANES]; 16];
                    for (xi, gx) in g.iter_mut().enumerate() {
                        let start = (xi * c_out + o) * nt + k0;
                        gx[..n].copy_from_slice(&m[start..start + n]);
                    }
                    let mut s0 = [[0.0f32; LANES]; 4];
                    let mut s1 = [[0.0f32; LANES]; 4];
                    for q in 0..4 {
                        for l in 0..LANES {
                            s0[q][l] = g[q][l] + g[4 + q][l] + g[8 + q][l];
                            s1[q][l] = g[4 + q][l] - g[8 + q][l] - g[12 + q][l];
                        }
                    }
                    let mut vals = [[0.0f32; LANES]; 4];
                    for l in 0..LANES {
                        vals[0][l] = s0[0][l] + s0[1][l] + s0[2][l] + b;
                        vals[1][l] = s0[1][l] - s0[2][l] - s0[3][l] + b;
                        vals[2][l] = s1[0][l] + s1[1][l] + s1[2][l] + b;
                        vals[3][l] = s1[1][l] - s1[2][l] - s1[3][l] + b;
                    }
                    if relu {
                        for row in &mut vals {
                            for val in row.iter_mut() {
                                *val = val.max(0.0);
                            }
                        }
                    }
                    for (p, row) in vals.iter().enumerate() {
                        y[p * nt + k0..p * nt + k0 + n].copy_from_slice(&row[..n]);
                    }
                    k0 += n;
                }
                for &(b, ty, tx0, len, off) in &runs {
                    for r in 0..2 {
                        let row = 2 * ty + r;
                        if row >= h {
                            continue;
                        }
                        let base = ((b * c_out + o) * h + row) * w;
                        for k in 0..len {
                            let col = 2 * (tx0 + k);
                            out.write(base + col, y[(2 * r) * nt + off + k]);
                            if col + 1 < w {
                                out.write(base + col + 1, y[(2 * r + 1) * nt + off + k]);
                            }
                        }
                    }
                }
            }
        })
    };
    let writer = OutWriter(data.as_mut_ptr(), data.len());
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        (0..blocks).into_par_iter().for_each(|bi| run_block(bi, &mut writer.clone()));
    }
    #[cfg(target_arch = "wasm32")]
    {
        (0..blocks).for_each(|bi| run_block(bi, &mut writer.clone()));
    }
    Stack { batch: x.batch, channels: c_out, time: h, freq: w, data }
}

/// Writes output values of disjoint tiles from several threads.
#[derive(Clone, Copy)]
struct OutWriter(*mut f32, usize);

// SAFETY: every block writes only the output positions of its own tiles, so no two threads write one element, and
// the buffer outlives the parallel loop that uses the writer.
unsafe impl Send for OutWriter {}
unsafe impl Sync for OutWriter {}

impl OutWriter {
    fn write(&mut self, i: usize, v: f32) {
        assert!(i < self.1, "output index {i} out of {}", self.1);
        // SAFETY: `i` is in bounds (checked above); see the Send/Sync note.
        unsafe { *self.0.add(i) = v }
    }
}
