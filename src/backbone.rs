//! The backbone: a CNN14-family ONNX network run with tract, returning named feature maps.
//!
//! A backbone is an ONNX file plus a small JSON [`BackboneSpec`] (front-end preset, input name and layout,
//! output layers with their channel counts and strides, analysis window). The model is loaded and optimised
//! once for a fixed input shape (`[1, 1, window_frames, mel_bins]` for layout `nctf`, CNN14's; `[1, 1, mel_bins,
//! window_frames]` for `ncft`, EfficientAT's); [`Backbone::run`] then only executes it. Whatever the layout, it
//! takes a `[frames, mel_bins]` window and returns [`FeatureMap`]s `[C, T_l, F_l]`, so nothing downstream depends
//! on it. Only the outputs the embedding asks for are kept, so tract prunes the blocks that are not needed.

use std::io::Cursor;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

use crate::cnn::Cnn14Plan;
use crate::error::{Error, Result};
use crate::spectrogram::{LogMelConfig, Preset};

/// One output layer of the backbone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSpec {
    /// Tensor name in the ONNX graph, e.g. `conv_block2`.
    pub name: String,
    /// Number of channels `C`.
    pub channels: usize,
    /// Input frames per output row (time downsampling factor).
    pub time_stride: usize,
    /// Input mel bins per output column (frequency downsampling factor).
    pub freq_stride: usize,
}

/// Most frames a backbone input (a spec's window) may have: 4096 frames are 95 s with the aisfx front end and 41 s
/// with PANNs' at 32 kHz, and the first layer's activations already take 100 MB for 64 channels and 96 mel bins.
pub const MAX_WINDOW_FRAMES: usize = 4096;

/// The JSON that travels beside a backbone's ONNX file (`spec.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackboneSpec {
    /// Short name, e.g. `aisfx-cnn14`.
    pub name: String,
    /// One line for people.
    #[serde(default)]
    pub description: String,
    /// Front-end preset the network was trained with.
    pub front_end: Preset,
    /// Name of the ONNX input.
    pub input_name: String,
    /// Input layout: `nctf` (`[batch, 1, frames, mel_bins]`, CNN14's; outputs `[batch, C, T_l, F_l]`) or `ncft`
    /// (`[batch, 1, mel_bins, frames]`, EfficientAT's; outputs `[batch, C, F_l, T_l]`).
    pub layout: String,
    /// Output layers, finest first.
    pub outputs: Vec<OutputSpec>,
    /// Frames per analysis window fed to the network.
    pub window_frames: usize,
    /// Frames between the starts of consecutive windows.
    pub window_hop: usize,
    /// The outputs recommended for patch embeddings (the `environment` fit preset), e.g. `conv_block2`,
    /// `conv_block3`, `conv_block4`; empty: none recommended.
    #[serde(default)]
    pub patch_layers: Vec<String>,
    /// Grid stride for patches made of `patch_layers` (default: the embedding's default).
    #[serde(default)]
    pub patch_grid_stride: Option<usize>,
    /// Grid stride for log-mel patches with this front end (the `machine` fit preset; default: the embedding's
    /// default, 4).
    #[serde(default)]
    pub logmel_grid_stride: Option<usize>,
    /// Licence of the weights.
    #[serde(default)]
    pub licence: String,
    /// Where the weights come from.
    #[serde(default)]
    pub source: String,
}

impl BackboneSpec {
    /// Parses and checks a spec.
    ///
    /// # Errors
    /// [`Error::Model`] for malformed JSON, an unsupported layout, no outputs, or a zero or inconsistent window.
    pub fn from_json(json: &str) -> Result<Self> {
        let spec: BackboneSpec =
            serde_json::from_str(json).map_err(|e| Error::model(format!("backbone spec JSON: {e}")))?;
        if spec.layout != LAYOUT_NCTF && spec.layout != LAYOUT_NCFT {
            return Err(Error::model(format!(
                "backbone spec: layout '{}' is not supported (expected '{LAYOUT_NCTF}' = [batch, 1, frames, \
                 mel_bins] or '{LAYOUT_NCFT}' = [batch, 1, mel_bins, frames])",
                spec.layout
            )));
        }
        if spec.outputs.is_empty() {
            return Err(Error::model("backbone spec: no outputs listed"));
        }
        if spec.window_frames == 0 || spec.window_hop == 0 || spec.window_hop > spec.window_frames {
            return Err(Error::model(format!(
                "backbone spec: need 0 < window_hop ({}) <= window_frames ({})",
                spec.window_hop, spec.window_frames
            )));
        }
        if let Some(l) = spec.patch_layers.iter().find(|l| spec.output(l).is_none()) {
            return Err(Error::model(format!("backbone spec: patch layer '{l}' is not one of its outputs")));
        }
        if spec.patch_grid_stride == Some(0) || spec.logmel_grid_stride == Some(0) {
            return Err(Error::model("backbone spec: a grid stride is 0"));
        }
        if spec.window_frames > MAX_WINDOW_FRAMES {
            return Err(Error::model(format!(
                "backbone spec: window_frames {} is more than {MAX_WINDOW_FRAMES}: the network's activations would \
                 not fit in memory; use a window of a few seconds",
                spec.window_frames
            )));
        }
        for o in &spec.outputs {
            if o.channels == 0 || o.time_stride == 0 || o.freq_stride == 0 {
                return Err(Error::model(format!("backbone spec: output '{}' has a zero size", o.name)));
            }
        }
        Ok(spec)
    }

    /// The front end's full configuration.
    pub fn front_end_config(&self) -> LogMelConfig {
        LogMelConfig::preset(self.front_end)
    }

    /// The output with this name.
    pub fn output(&self, name: &str) -> Option<&OutputSpec> {
        self.outputs.iter().find(|o| o.name == name)
    }

    /// Whether the network takes mel bins before frames (layout `ncft`).
    pub fn mel_first(&self) -> bool {
        self.layout == LAYOUT_NCFT
    }
}

/// Layout `[batch, 1, frames, mel_bins]` (CNN14); outputs `[batch, C, T_l, F_l]`.
pub const LAYOUT_NCTF: &str = "nctf";
/// Layout `[batch, 1, mel_bins, frames]` (EfficientAT; the transpose of `nctf`); outputs `[batch, C, F_l, T_l]`.
pub const LAYOUT_NCFT: &str = "ncft";

/// What identifies a backbone in a bank file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackboneIdentity {
    /// Spec name.
    pub name: String,
    /// SHA-256 of the ONNX bytes, lower-case hex.
    pub sha256: String,
    /// All output names the spec lists.
    pub outputs: Vec<String>,
}

/// One feature map `[channels, time, freq]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMap {
    /// Layer name.
    pub name: String,
    /// `C`.
    pub channels: usize,
    /// `T_l` rows.
    pub time: usize,
    /// `F_l` columns.
    pub freq: usize,
    /// `C * T_l * F_l` values.
    pub data: Vec<f32>,
}

/// Which code runs the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runtime {
    /// The direct CNN14 path ([`crate::cnn`], Winograd convolutions) when the graph is a plain CNN14 chain, else
    /// tract.
    #[default]
    Auto,
    /// Always tract.
    Tract,
}

enum Runner {
    Tract(Arc<TypedRunnableModel>),
    Direct(Cnn14Plan),
}

/// A loaded and optimised backbone.
pub struct Backbone {
    spec: BackboneSpec,
    identity: BackboneIdentity,
    mel_bins: usize,
    outputs: Vec<String>,
    runner: Runner,
    tract_reason: Option<String>,
}

impl std::fmt::Debug for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backbone")
            .field("spec", &self.spec.name)
            .field("outputs", &self.outputs)
            .field("runtime", &self.runtime_name())
            .field("tract_reason", &self.tract_reason)
            .finish()
    }
}

/// SHA-256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs tract's ONNX reader, a panic in it turned into an error (found by fuzzing: tract-onnx panics on some
/// damaged tensors). Natively only: the wasm build aborts on a panic, so what can be checked before tract reads a
/// file is checked ([`check_graph`]).
fn tract_guarded<T>(f: impl FnOnce() -> TractResult<T>) -> TractResult<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(TractError::msg("tract's ONNX reader failed on this file: it is damaged, or not a model tract reads"))
    })
}

/// Refuses a graph (or subgraph) that lists an output no input, initializer or node of it (or of the graphs
/// around it, `outer`) produces (tract's parser indexes its table of names with it and panics), a node with a
/// stride, dilation or kernel size below 1 (tract divides by them), or a damaged tensor ([`check_tensor`]): all
/// found by fuzzing.
fn check_graph(graph: &tract_onnx::pb::GraphProto, outer: &std::collections::HashSet<String>) -> TractResult<()> {
    let mut known = outer.clone();
    known.extend(graph.input.iter().map(|i| i.name.clone()));
    known.extend(graph.initializer.iter().map(|t| t.name.clone()));
    for n in &graph.node {
        known.extend(n.output.iter().cloned());
    }
    if let Some(o) = graph.output.iter().find(|o| !known.contains(&o.name)) {
        return Err(TractError::msg(format!(
            "the ONNX graph lists an output '{}' that none of its nodes produces: the file is damaged",
            o.name
        )));
    }
    for t in &graph.initializer {
        check_tensor(t, &format!("initializer '{}'", t.name))?;
    }
    for n in &graph.node {
        check_window_attributes(n, graph)?;
        for a in &n.attribute {
            for t in a.t.iter().chain(&a.tensors) {
                check_tensor(t, &format!("node '{}' (attribute '{}')", n.name, a.name))?;
            }
            // tract divides by these (found by fuzzing: a stride of 0 in a pooling node).
            if matches!(a.name.as_str(), "strides" | "dilations" | "kernel_shape") && a.ints.iter().any(|&v| v <= 0) {
                return Err(TractError::msg(format!(
                    "the ONNX graph's node '{}' has {} {:?}: each must be at least 1; the file is damaged",
                    n.name, a.name, a.ints
                )));
            }
            for g in a.g.iter().chain(&a.graphs) {
                check_graph(g, &known)?;
            }
        }
    }
    Ok(())
}

/// Refuses a convolution or pooling node whose window attributes disagree on the number of spatial axes:
/// `kernel_shape`, `strides`, `dilations`, `output_padding` and `output_shape` one value per axis, `pads` two, and
/// as many axes as the weight has beyond its first two when the weight is an initializer (tract indexes them by
/// the input's axes and panics, found by fuzzing: a MaxPool with `pads` [0, 0, 0]).
fn check_window_attributes(n: &tract_onnx::pb::NodeProto, graph: &tract_onnx::pb::GraphProto) -> TractResult<()> {
    const PER_AXIS: [(&str, usize); 6] = [
        ("kernel_shape", 1),
        ("strides", 1),
        ("dilations", 1),
        ("output_padding", 1),
        ("output_shape", 1),
        ("pads", 2),
    ];
    if !(n.op_type.contains("Conv") || n.op_type.contains("Pool")) {
        return Ok(());
    }
    let present: Vec<(&str, usize, usize)> = PER_AXIS
        .iter()
        .filter_map(|&(name, per)| n.attribute.iter().find(|a| a.name == name).map(|a| (name, per, a.ints.len())))
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    let weight_axes = match n.op_type.as_str() {
        "Conv" | "ConvTranspose" | "ConvInteger" => n.input.get(1),
        "QLinearConv" => n.input.get(3),
        _ => None,
    }
    .and_then(|w| graph.initializer.iter().find(|t| &t.name == w))
    .map(|t| (t.dims.len().saturating_sub(2), format!("its weight '{}' of dimensions {:?}", t.name, t.dims)));
    let (axes, from) = match (&weight_axes, present.iter().find(|p| p.0 == "kernel_shape")) {
        (Some((k, w)), _) => (*k, w.clone()),
        (None, Some(&(_, _, len))) => (len, format!("its kernel_shape of {len} value(s)")),
        (None, None) => {
            let (name, per, len) = present[0];
            (len / per, format!("its {name} of {len} value(s)"))
        }
    };
    for &(name, per, len) in &present {
        if len != per * axes {
            return Err(TractError::msg(format!(
                "the ONNX graph's node '{}' ({}) has {name} of {len} value(s), but {from} make(s) {axes} spatial \
                 axes, which need {}: the file is damaged",
                n.name,
                n.op_type,
                per * axes
            )));
        }
    }
    Ok(())
}

/// Refuses a convolution or pooling node whose window names fewer or more spatial axes than its input has
/// (tract indexes the window by the input's axes and panics). The input's rank is followed from the graph's first
/// input (`input_rank`, as the backbone sets it) and the initializers through nodes that keep it (element-wise
/// operations, normalisation, convolution, pooling); inputs of other ranks, or of ranks not followed, are left to
/// tract.
fn check_window_ranks(graph: &tract_onnx::pb::GraphProto, input_rank: usize) -> TractResult<()> {
    use std::collections::HashMap;
    let mut rank: HashMap<&str, usize> = HashMap::new();
    for t in &graph.initializer {
        rank.insert(&t.name, t.dims.len());
    }
    if let Some(i) = graph.input.iter().find(|i| !rank.contains_key(i.name.as_str())) {
        rank.insert(&i.name, input_rank);
    }
    for n in &graph.node {
        let first = n.input.first().and_then(|i| rank.get(i.as_str()).copied());
        let keeps_rank = matches!(
            n.op_type.as_str(),
            "Conv"
                | "ConvTranspose"
                | "MaxPool"
                | "AveragePool"
                | "LpPool"
                | "GlobalAveragePool"
                | "GlobalMaxPool"
                | "BatchNormalization"
                | "InstanceNormalization"
                | "Relu"
                | "LeakyRelu"
                | "Elu"
                | "Selu"
                | "Sigmoid"
                | "HardSigmoid"
                | "HardSwish"
                | "Tanh"
                | "Clip"
                | "Cast"
                | "Identity"
                | "Dropout"
                | "Sqrt"
                | "Exp"
                | "Log"
                | "Neg"
                | "Abs"
                | "Erf"
                | "Pad"
        );
        let broadcast =
            matches!(n.op_type.as_str(), "Add" | "Sub" | "Mul" | "Div" | "Pow" | "Max" | "Min" | "Sum" | "Mean");
        if let Some(r) = first.filter(|_| n.op_type.contains("Conv") || n.op_type.contains("Pool")) {
            let axes = ["kernel_shape", "strides", "dilations"]
                .iter()
                .find_map(|name| n.attribute.iter().find(|a| a.name == *name).map(|a| a.ints.len()))
                .or_else(|| n.attribute.iter().find(|a| a.name == "pads").map(|a| a.ints.len() / 2));
            if let Some(axes) = axes.filter(|&k| k + 2 != r) {
                return Err(TractError::msg(format!(
                    "the ONNX graph's node '{}' ({}) has a window of {axes} spatial axes, but its input '{}' has {} \
                     (rank {r}): the file is damaged",
                    n.name,
                    n.op_type,
                    n.input[0],
                    r.saturating_sub(2)
                )));
            }
        }
        let out_rank = if keeps_rank {
            first
        } else if broadcast {
            n.input
                .iter()
                .map(|i| rank.get(i.as_str()).copied())
                .collect::<Option<Vec<_>>>()
                .and_then(|v| v.into_iter().max())
        } else {
            None
        };
        for o in &n.output {
            match out_rank {
                Some(r) => rank.insert(o, r),
                None => rank.remove(o.as_str()),
            };
        }
    }
    Ok(())
}

/// Checks an ONNX tensor before tract reads it (`tract-onnx` `tensor.rs`, `load_tensor`): a data type tract knows
/// (ONNX `TensorProto.DataType` 1-13), dimensions of at least 0 whose product (and size in bytes) does not
/// overflow, data held in the file (not external), and raw bytes as many as the dimensions ask for, never for
/// strings (tract reaches `unimplemented!` on raw string data, found by fuzzing; it panics, and the wasm build
/// aborts on a panic). `what` names the tensor in the message.
fn check_tensor(t: &tract_onnx::pb::TensorProto, what: &str) -> TractResult<()> {
    use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
    let damaged = |why: String| TractError::msg(format!("the ONNX {what} {why}: the file is damaged"));
    let dt = DataType::try_from(t.data_type).ok();
    let size = match dt {
        Some(DataType::Bool | DataType::Uint8 | DataType::Int8) => 1,
        Some(DataType::Uint16 | DataType::Int16 | DataType::Float16) => 2,
        Some(DataType::Uint32 | DataType::Int32 | DataType::Float) => 4,
        Some(DataType::Uint64 | DataType::Int64 | DataType::Double) => 8,
        Some(DataType::String) => 0,
        _ => {
            return Err(TractError::msg(format!(
                "the ONNX {what} has data type {} ({}), which tract does not read (it reads booleans, integers, \
                 floats of 16, 32 and 64 bits and strings): the file is damaged, or needs another runtime",
                t.data_type,
                dt.map_or("unknown".to_string(), |d| format!("{d:?}"))
            )))
        }
    };
    if let Some(d) = t.dims.iter().find(|&&d| d < 0) {
        return Err(damaged(format!("has a negative dimension ({d}) in {:?}", t.dims)));
    }
    let count = t
        .dims
        .iter()
        .try_fold(1usize, |n, &d| usize::try_from(d).ok().and_then(|d| n.checked_mul(d)))
        .and_then(|n| n.checked_mul(size.max(1)).map(|_| n))
        .ok_or_else(|| damaged(format!("has dimensions {:?}, too large to hold in memory", t.dims)))?;
    if t.data_location == Some(DataLocation::External as i32) {
        return Err(TractError::msg(format!(
            "the ONNX {what} keeps its data in an external file; sonomaly reads self-contained ONNX files: export \
             the model with its weights inside (onnx.save_model(..., save_as_external_data=False))"
        )));
    }
    if !t.raw_data.is_empty() {
        if size == 0 {
            return Err(damaged("holds strings as raw bytes, which ONNX does not allow".to_string()));
        }
        if t.raw_data.len() != count * size {
            return Err(damaged(format!(
                "holds {} bytes of raw data, but its dimensions {:?} ask for {}",
                t.raw_data.len(),
                t.dims,
                count * size
            )));
        }
    }
    Ok(())
}

impl Backbone {
    /// Loads `onnx` (the model's bytes) with its `spec`, keeping only the `outputs` named (a subset of the spec's
    /// outputs, in the order given), and optimises it for input `[1, 1, spec.window_frames, n_mels]`.
    ///
    /// # Errors
    /// [`Error::Model`] if the ONNX cannot be parsed or optimised, if an output is not in the spec or the graph,
    /// or if the graph's outputs do not have the shapes the spec announces.
    pub fn from_bytes(onnx: &[u8], spec: BackboneSpec, outputs: &[String]) -> Result<Self> {
        Self::with_runtime(onnx, spec, outputs, Runtime::Auto)
    }

    /// [`Backbone::from_bytes`] with the choice of [`Runtime`]. With [`Runtime::Auto`], a graph that is a plain
    /// CNN14 chain (as the converters in `models/` write) in layout `nctf` runs on [`crate::cnn`]; any other graph
    /// (and any `ncft` graph) runs on tract, and [`Backbone::tract_reason`] says why.
    ///
    /// # Errors
    /// As [`Backbone::from_bytes`].
    pub fn with_runtime(onnx: &[u8], spec: BackboneSpec, outputs: &[String], runtime: Runtime) -> Result<Self> {
        if onnx.is_empty() {
            return Err(Error::model("the ONNX file is empty"));
        }
        if outputs.is_empty() {
            return Err(Error::model("no backbone output requested"));
        }
        for name in outputs {
            if spec.output(name).is_none() {
                return Err(Error::model(format!(
                    "output '{name}' is not in the backbone spec (it lists: {})",
                    spec.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let mel_bins = spec.front_end_config().n_mels;
        let identity = BackboneIdentity {
            name: spec.name.clone(),
            sha256: sha256_hex(onnx),
            outputs: spec.outputs.iter().map(|o| o.name.clone()).collect(),
        };
        let shape = if spec.mel_first() {
            [1usize, 1, mel_bins, spec.window_frames]
        } else {
            [1, 1, spec.window_frames, mel_bins]
        };
        let direct = match runtime {
            Runtime::Auto if spec.mel_first() => Err(format!(
                "layout '{LAYOUT_NCFT}' ([1, 1, mel_bins, frames]): the direct CNN14 path reads '{LAYOUT_NCTF}' \
                 graphs of 3x3 Conv, BatchNormalization, Relu and 2x2 pooling only"
            )),
            Runtime::Auto => tract_guarded(|| tract_onnx::onnx().proto_model_for_read(&mut Cursor::new(onnx)))
                .map_err(|e| format!("the ONNX file could not be read: {e}"))
                .and_then(|proto| Cnn14Plan::from_onnx(&proto, outputs, mel_bins).map_err(|e| e.to_string())),
            Runtime::Tract => Err("tract was asked for".to_string()),
        };
        let (runner, tract_reason) = match direct {
            Ok(plan) => (Runner::Direct(plan), None),
            Err(reason) => (
                Runner::Tract(
                    tract_guarded(|| Self::tract_plan(onnx, outputs, shape))
                        .map_err(|e| Error::model(format!("loading the ONNX backbone '{}': {e:#}", spec.name)))?,
                ),
                Some(reason),
            ),
        };
        let backbone = Backbone { spec, identity, mel_bins, outputs: outputs.to_vec(), runner, tract_reason };
        // One run on zeros checks the output shapes against the spec before anyone relies on them.
        backbone.run(&vec![0.0; backbone.spec.window_frames * mel_bins])?;
        Ok(backbone)
    }

    /// Like [`Backbone::from_bytes`], but optimised for an input of `frames` frames instead of the spec's window:
    /// `[1, 1, frames, mel_bins]` (`[1, 1, mel_bins, frames]` for `ncft`), e.g. a whole 10 s clip in one run. The
    /// pipeline always runs the spec's window; this is for comparing the network's speed with other runtimes on the
    /// same input (`benches/`).
    ///
    /// # Errors
    /// As [`Backbone::from_bytes`], and [`Error::InvalidInput`] for `frames == 0`.
    pub fn with_frames(
        onnx: &[u8],
        mut spec: BackboneSpec,
        outputs: &[String],
        frames: usize,
        runtime: Runtime,
    ) -> Result<Self> {
        if frames == 0 || frames > MAX_WINDOW_FRAMES {
            return Err(Error::invalid(format!(
                "a backbone input needs at least one frame and at most {MAX_WINDOW_FRAMES}, got {frames}"
            )));
        }
        spec.window_frames = frames;
        spec.window_hop = frames;
        Self::with_runtime(onnx, spec, outputs, runtime)
    }

    fn tract_plan(onnx: &[u8], outputs: &[String], shape: [usize; 4]) -> TractResult<Arc<TypedRunnableModel>> {
        let onnx_fw = tract_onnx::onnx();
        let proto = onnx_fw.proto_model_for_read(&mut Cursor::new(onnx))?;
        let graph = proto.graph.as_ref().ok_or_else(|| TractError::msg("the ONNX file holds no graph"))?;
        check_graph(graph, &std::collections::HashSet::new())?;
        check_window_ranks(graph, shape.len())?;
        let mut model = onnx_fw.model_for_proto_model(&proto)?;
        let outlets = outputs
            .iter()
            .map(|n| {
                model
                    .find_outlet_label(n)
                    .ok_or_else(|| TractError::msg(format!("the ONNX graph has no tensor named '{n}'")))
            })
            .collect::<TractResult<Vec<_>>>()?;
        model.select_output_outlets(&outlets)?;
        let model = model.with_input_fact(0, f32::fact(shape).into())?;
        model.into_optimized()?.into_runnable()
    }

    /// `"cnn14-winograd"` for the direct path ([`crate::cnn`]), `"tract"` otherwise.
    pub fn runtime_name(&self) -> &'static str {
        match self.runner {
            Runner::Direct(_) => "cnn14-winograd",
            Runner::Tract(_) => "tract",
        }
    }

    /// Why the network runs on tract rather than the direct CNN14 path (e.g. the graph has an operator outside the
    /// chain), or `None` when it runs on the direct path.
    pub fn tract_reason(&self) -> Option<&str> {
        self.tract_reason.as_deref()
    }

    /// The spec this backbone was loaded with.
    pub fn spec(&self) -> &BackboneSpec {
        &self.spec
    }

    /// Name, SHA-256 and outputs.
    pub fn identity(&self) -> &BackboneIdentity {
        &self.identity
    }

    /// The outputs kept, in order.
    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    /// Runs several windows, `[window_frames, mel_bins]` each; returns their feature maps in order. The direct CNN14
    /// path computes them together (wider matrix products); tract runs them one by one. Same results as
    /// [`Backbone::run`] on each.
    ///
    /// # Errors
    /// As [`Backbone::run`].
    pub fn run_batch(&self, windows: &[&[f32]]) -> Result<Vec<Vec<FeatureMap>>> {
        match &self.runner {
            Runner::Direct(plan) => {
                let frames = self.spec.window_frames;
                for w in windows {
                    self.check_window(w)?;
                }
                plan.run_batch(windows, frames)?
                    .into_iter()
                    .map(|acts| {
                        self.to_maps(acts.into_iter().map(|a| (vec![1, a.channels, a.time, a.freq], a.data)).collect())
                    })
                    .collect()
            }
            Runner::Tract(_) => windows.iter().map(|w| self.run(w)).collect(),
        }
    }

    fn check_window(&self, logmel: &[f32]) -> Result<()> {
        let frames = self.spec.window_frames;
        if logmel.len() != frames * self.mel_bins {
            return Err(Error::invalid(format!(
                "backbone window must be {frames} frames x {} mel bins = {} values, got {}",
                self.mel_bins,
                frames * self.mel_bins,
                logmel.len()
            )));
        }
        Ok(())
    }

    /// Runs one window: `logmel` is `[window_frames, mel_bins]` row-major (whatever the layout: an `ncft` network
    /// gets its transpose); returns one [`FeatureMap`] per kept output, `[C, T_l, F_l]` each.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if `logmel` has the wrong length; [`Error::Model`] if tract fails or an output's
    /// shape disagrees with the spec.
    pub fn run(&self, logmel: &[f32]) -> Result<Vec<FeatureMap>> {
        let frames = self.spec.window_frames;
        self.check_window(logmel)?;
        let result: Vec<(Vec<usize>, Vec<f32>)> = match &self.runner {
            Runner::Direct(plan) => {
                plan.run(logmel, frames)?.into_iter().map(|a| (vec![1, a.channels, a.time, a.freq], a.data)).collect()
            }
            Runner::Tract(plan) => {
                let input = if self.spec.mel_first() {
                    let m = self.mel_bins;
                    let mut t = vec![0.0f32; logmel.len()];
                    for (f, row) in logmel.chunks_exact(m).enumerate() {
                        for (b, &v) in row.iter().enumerate() {
                            t[b * frames + f] = v;
                        }
                    }
                    Tensor::from_shape(&[1, 1, m, frames], &t)
                } else {
                    Tensor::from_shape(&[1, 1, frames, self.mel_bins], logmel)
                }
                .map_err(|e| Error::model(format!("backbone input: {e}")))?;
                let run = || plan.run(tvec!(input.into()));
                // Natively, tract's matrix products use rayon's pool (the current one: all cores by default).
                #[cfg(not(target_arch = "wasm32"))]
                let result = tract_linalg::multithread::multithread_tract_scope(
                    tract_linalg::multithread::Executor::RayonGlobal,
                    run,
                );
                #[cfg(target_arch = "wasm32")]
                let result = run();
                let result = result.map_err(|e| Error::model(format!("running the backbone: {e:#}")))?;
                let mut out = Vec::with_capacity(result.len());
                for (name, value) in self.outputs.iter().zip(result.iter()) {
                    let data: Vec<f32> = value
                        .to_plain_array_view::<f32>()
                        .map_err(|e| Error::model(format!("backbone output '{name}' is not f32: {e}")))?
                        .iter()
                        .copied()
                        .collect();
                    out.push((value.shape().to_vec(), data));
                }
                out
            }
        };
        self.to_maps(result)
    }

    /// Names the raw outputs `(shape, data)`, checks their shapes against the spec and, for layout `ncft`, turns
    /// each `[1, C, F_l, T_l]` into `[C, T_l, F_l]`.
    fn to_maps(&self, result: Vec<(Vec<usize>, Vec<f32>)>) -> Result<Vec<FeatureMap>> {
        let mut maps = Vec::with_capacity(result.len());
        let mel_first = self.spec.mel_first();
        for (name, (shape, data)) in self.outputs.iter().zip(result) {
            let spec = self.spec.output(name).expect("checked at load");
            if shape.len() != 4 || shape[0] != 1 || shape[1] != spec.channels {
                return Err(Error::model(format!(
                    "backbone output '{name}' has shape {shape:?}, the spec announces [1, {}, {}]",
                    spec.channels,
                    if mel_first { "F, T" } else { "T, F" }
                )));
            }
            let channels = shape[1];
            if mel_first {
                let (freq, time) = (shape[2], shape[3]);
                let mut out = vec![0.0f32; data.len()];
                let plane = (freq * time).max(1);
                for (src, dst) in data.chunks_exact(plane).zip(out.chunks_exact_mut(plane)) {
                    for (f, row) in src.chunks_exact(time).enumerate() {
                        for (t, &v) in row.iter().enumerate() {
                            dst[t * freq + f] = v;
                        }
                    }
                }
                maps.push(FeatureMap { name: name.clone(), channels, time, freq, data: out });
            } else {
                maps.push(FeatureMap { name: name.clone(), channels, time: shape[2], freq: shape[3], data });
            }
        }
        Ok(maps)
    }
}
