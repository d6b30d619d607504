//! The model artifact: one safetensors file holding the f32 master weights
//! (`layers.{i}.weight`, `out × in`; `layers.{i}.bias`), for a pruned model the
//! masks (`layers.{i}.mask`, u8 0/1, `out × in`), for a quantized one the int8
//! weights (`layers.{i}.qweight`, i8 `out × in`) with their per-row scale and zero
//! point (`layers.{i}.qscale`, `layers.{i}.qzero`, f32 `out`), and, under the
//! `__metadata__` key `steward`, a JSON document with the schema, the layer shapes,
//! the hidden layers' activations, the output function, the classes and the
//! training report. `activations` came after format version 1 was first written:
//! an artifact without it is ReLU throughout, as every network then was.
//!
//! Saving writes a temporary file in the target directory, fsyncs it, renames it
//! over the target and fsyncs the directory, so a crash leaves either the old file or
//! the new one, never half of one. Loading checks every tensor's presence, dtype and
//! shape against the metadata and names the tensor that does not match.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::network::{Activation, Dense, Network, Output};
use super::quant::{QuantLayer, QuantNetwork};
use super::{Model, ModelMeta, Schema};

/// The metadata format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const META_KEY: &str = "steward";

/// Everything that can be wrong with an artifact file.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: cannot read model file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: cannot write model file: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a readable safetensors file (truncated or corrupt?): {reason}")]
    Corrupt { path: String, reason: String },
    #[error("{path}: metadata: {reason}")]
    Metadata { path: String, reason: String },
    #[error("{path}: tensor `{tensor}`: {reason}")]
    Tensor {
        path: String,
        tensor: String,
        reason: String,
    },
}

/// The JSON document stored in the file's metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    format_version: u32,
    /// `[out, in]` per layer.
    layers: Vec<[usize; 2]>,
    /// One per hidden layer; `None` (absent) is ReLU throughout.
    #[serde(default)]
    activations: Option<Vec<Activation>>,
    output: Output,
    /// Whether `layers.{i}.mask` tensors are present.
    #[serde(default)]
    masked: bool,
    /// Whether the int8 tensors are present.
    #[serde(default)]
    quantized: bool,
    schema: Schema,
    #[serde(flatten)]
    meta: ModelMeta,
}

/// Writes `model` to `path` atomically.
pub fn save(model: &Model, path: &Path) -> Result<(), ArtifactError> {
    let bytes = to_bytes(model).map_err(|reason| ArtifactError::Metadata {
        path: path.display().to_string(),
        reason,
    })?;
    write_atomically(path, &bytes).map_err(|source| ArtifactError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Serialises `model` to the artifact format.
pub fn to_bytes(model: &Model) -> Result<Vec<u8>, String> {
    let layers = model.network.layers();
    let header = Header {
        format_version: FORMAT_VERSION,
        layers: layers.iter().map(|l| [l.outputs(), l.inputs()]).collect(),
        activations: Some(model.network.activations().to_vec()),
        output: model.network.output(),
        masked: model.masks.is_some(),
        quantized: model.quant.is_some(),
        schema: model.schema.clone(),
        meta: model.meta.clone(),
    };
    let json = serde_json::to_string(&header).map_err(|e| e.to_string())?;
    let mut raw: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let shape = l.weight.shape().to_vec();
        let rows = vec![l.outputs()];
        raw.push((
            format!("layers.{i}.weight"),
            Dtype::F32,
            shape.clone(),
            le_bytes(l.weight.iter()),
        ));
        raw.push((
            format!("layers.{i}.bias"),
            Dtype::F32,
            rows.clone(),
            le_bytes(l.bias.iter()),
        ));
        if let Some(mask) = model.masks.as_ref().and_then(|m| m.get(i)) {
            let bytes = mask.iter().map(|m| u8::from(*m != 0.0)).collect();
            raw.push((format!("layers.{i}.mask"), Dtype::U8, shape.clone(), bytes));
        }
        if let Some(q) = model.quant.as_ref().and_then(|q| q.layers().get(i)) {
            let bytes = q
                .unpadded_weight()
                .iter()
                .map(|v| v.to_le_bytes()[0])
                .collect();
            raw.push((
                format!("layers.{i}.qweight"),
                Dtype::I8,
                shape.clone(),
                bytes,
            ));
            raw.push((
                format!("layers.{i}.qscale"),
                Dtype::F32,
                rows.clone(),
                le_bytes(q.scale.iter()),
            ));
            raw.push((
                format!("layers.{i}.qzero"),
                Dtype::F32,
                rows.clone(),
                le_bytes(q.zero.iter()),
            ));
        }
    }
    let mut views = Vec::with_capacity(raw.len());
    for (name, dtype, shape, data) in &raw {
        let view =
            TensorView::new(*dtype, shape.clone(), data).map_err(|e| format!("{name}: {e:?}"))?;
        views.push((name.clone(), view));
    }
    let info = Some(HashMap::from([(META_KEY.to_string(), json)]));
    safetensors::serialize(views, &info).map_err(|e| format!("{e:?}"))
}

fn le_bytes<'a>(values: impl Iterator<Item = &'a f32>) -> Vec<u8> {
    values.flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes `bytes` to a temporary sibling of `path`, fsyncs, renames, fsyncs the dir.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The largest artifact this build reads: far above any model steward trains
/// (a 30-256-256-2 network with its reference sample is well under 10 MiB), and
/// a bound on what a wrong path (a device, a huge file) can make it allocate.
pub const MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// Reads and checks an artifact. Only a regular file of at most
/// [`MAX_ARTIFACT_BYTES`] is read (`/dev/zero` would otherwise be read until
/// memory ran out).
pub fn load(path: &Path) -> Result<Model, ArtifactError> {
    use std::io::Read;
    let name = path.display().to_string();
    let read_err = |source| ArtifactError::Read {
        path: name.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    if meta.len() > MAX_ARTIFACT_BYTES {
        return Err(read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} bytes, more than the {MAX_ARTIFACT_BYTES} a model file may have",
                meta.len()
            ),
        )));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // `take` also bounds a file that grows while it is read.
    file.take(MAX_ARTIFACT_BYTES)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    from_bytes(&name, &bytes)
}

/// Parses and checks artifact bytes; `name` is used in messages.
pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Model, ArtifactError> {
    let meta_err = |reason: String| ArtifactError::Metadata {
        path: name.into(),
        reason,
    };
    let (header, tensors) = read_header(name, bytes)?;
    let activations = hidden_activations(&header).map_err(meta_err)?;
    let Layers {
        dense,
        masks,
        quant,
    } = read_layers(name, &tensors, &header)?;
    let per_layer = 2 + usize::from(header.masked) + 3 * usize::from(header.quantized);
    if let Some((tensor, reason)) = undescribed(&tensors, dense.len(), per_layer) {
        return Err(ArtifactError::Tensor {
            path: name.into(),
            tensor,
            reason,
        });
    }
    let network = Network::with_activations(dense, activations.clone(), header.output)
        .map_err(|e| meta_err(e.to_string()))?;
    let quant = if header.quantized {
        Some(QuantNetwork::from_layers(quant, activations, header.output).map_err(meta_err)?)
    } else {
        None
    };
    let model = Model {
        schema: header.schema,
        network,
        meta: header.meta,
        masks: header.masked.then_some(masks),
        quant,
    };
    model.check().map_err(meta_err)?;
    Ok(model)
}

/// The safetensors container and steward's header in its metadata, whose
/// format version this build reads.
fn read_header<'b>(
    name: &str,
    bytes: &'b [u8],
) -> Result<(Header, SafeTensors<'b>), ArtifactError> {
    let corrupt = |reason: String| ArtifactError::Corrupt {
        path: name.into(),
        reason,
    };
    let meta_err = |reason: String| ArtifactError::Metadata {
        path: name.into(),
        reason,
    };
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(format!("{e:?}")))?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| corrupt(format!("{e:?}")))?;
    let json = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .ok_or_else(|| meta_err(format!("no `{META_KEY}` entry: not a steward model")))?;
    let header: Header = serde_json::from_str(json).map_err(|e| meta_err(e.to_string()))?;
    if header.format_version != FORMAT_VERSION {
        return Err(meta_err(format!(
            "format_version {} is not supported (this build reads {FORMAT_VERSION})",
            header.format_version
        )));
    }
    Ok((header, tensors))
}

/// The header's hidden-layer activations (ReLU throughout when it has none), one
/// per layer but the last.
fn hidden_activations(header: &Header) -> Result<Vec<Activation>, String> {
    let hidden = header.layers.len().saturating_sub(1);
    match &header.activations {
        None => Ok(vec![Activation::Relu; hidden]),
        Some(a) if a.len() == hidden => Ok(a.clone()),
        Some(a) => Err(format!(
            "`activations` lists {} entries; {} layers need {hidden} (one per layer but the last)",
            a.len(),
            header.layers.len()
        )),
    }
}

/// What the layer tensors hold: the f32 layers, and the masks and int8 parts
/// when the header says the artifact has them.
struct Layers {
    dense: Vec<Dense>,
    masks: Vec<Array2<f32>>,
    quant: Vec<QuantLayer>,
}

/// Reads every layer the header lists, checking each one's shape against the
/// width that feeds it.
fn read_layers(
    name: &str,
    tensors: &SafeTensors,
    header: &Header,
) -> Result<Layers, ArtifactError> {
    let mut out = Layers {
        dense: Vec::with_capacity(header.layers.len()),
        masks: Vec::new(),
        quant: Vec::new(),
    };
    let mut expected_in = header.schema.width();
    for (i, &[rows, inp]) in header.layers.iter().enumerate() {
        let tensor_err = |tensor: String, reason: String| ArtifactError::Tensor {
            path: name.into(),
            tensor,
            reason,
        };
        if inp != expected_in {
            let what = if i == 0 {
                "the schema encodes"
            } else {
                "the previous layer gives"
            };
            return Err(tensor_err(
                format!("layers.{i}.weight"),
                format!("metadata says {inp} inputs but {what} {expected_in}"),
            ));
        }
        let weight = read_tensor(tensors, &format!("layers.{i}.weight"), &[rows, inp])
            .map_err(|(t, r)| tensor_err(t, r))?;
        let bias = read_tensor(tensors, &format!("layers.{i}.bias"), &[rows])
            .map_err(|(t, r)| tensor_err(t, r))?;
        if header.masked {
            out.masks.push(
                read_mask(tensors, i, [rows, inp], &weight).map_err(|(t, r)| tensor_err(t, r))?,
            );
        }
        if header.quantized {
            out.quant.push(
                read_quant(tensors, i, [rows, inp], &bias).map_err(|(t, r)| tensor_err(t, r))?,
            );
        }
        let weight = Array2::from_shape_vec((rows, inp), weight)
            .map_err(|e| tensor_err(format!("layers.{i}.weight"), e.to_string()))?;
        out.dense.push(Dense {
            weight,
            bias: Array1::from_vec(bias),
        });
        expected_in = rows;
    }
    Ok(out)
}

/// Layer `i`'s pruning mask: 0 or 1 in every element, and 0 only where the
/// weight is 0. Errors are (tensor, reason).
fn read_mask(
    tensors: &SafeTensors,
    i: usize,
    [out, inp]: [usize; 2],
    weight: &[f32],
) -> Result<Array2<f32>, (String, String)> {
    let tname = format!("layers.{i}.mask");
    let bytes = read_raw(tensors, &tname, &[out, inp], Dtype::U8)?;
    if let Some(k) = bytes.iter().position(|b| *b > 1) {
        return Err((tname, format!("element {k} is {}, not 0 or 1", bytes[k])));
    }
    if let Some(k) = bytes
        .iter()
        .zip(weight)
        .position(|(m, w)| *m == 0 && *w != 0.0)
    {
        return Err((
            tname,
            format!("element {k} prunes a weight that is not zero"),
        ));
    }
    let mask = bytes.iter().map(|b| f32::from(*b)).collect();
    Array2::from_shape_vec((out, inp), mask).map_err(|e| (tname, e.to_string()))
}

/// Layer `i`'s int8 form: weights within ±127, a scale and zero point per
/// output. Errors are (tensor, reason).
fn read_quant(
    tensors: &SafeTensors,
    i: usize,
    [out, inp]: [usize; 2],
    bias: &[f32],
) -> Result<QuantLayer, (String, String)> {
    let qname = format!("layers.{i}.qweight");
    let q = read_raw(tensors, &qname, &[out, inp], Dtype::I8)?;
    let q: Vec<i8> = q.iter().map(|b| i8::from_le_bytes([*b])).collect();
    if let Some(k) = q.iter().position(|v| *v == i8::MIN) {
        return Err((qname, format!("element {k} is -128, outside ±127")));
    }
    let scale = read_tensor(tensors, &format!("layers.{i}.qscale"), &[out])?;
    let zero = read_tensor(tensors, &format!("layers.{i}.qzero"), &[out])?;
    QuantLayer::from_parts(inp, out, q, scale, zero, bias.to_vec()).map_err(|r| (qname, r))
}

/// A tensor the metadata does not describe, when the file holds more (or
/// fewer) than `per_layer` for each of `layers`: (its name, the reason).
fn undescribed(tensors: &SafeTensors, layers: usize, per_layer: usize) -> Option<(String, String)> {
    let expected = per_layer * layers;
    if tensors.len() == expected {
        return None;
    }
    let extra = tensors
        .names()
        .into_iter()
        .find(|n| {
            !n.starts_with("layers.")
                || n.split('.')
                    .nth(1)
                    .and_then(|i| i.parse::<usize>().ok())
                    .is_none_or(|i| i >= layers)
        })
        .cloned()
        .unwrap_or_default();
    Some((
        extra,
        format!(
            "not described by the metadata ({} tensors, {expected} expected)",
            tensors.len()
        ),
    ))
}

fn read_raw<'a>(
    tensors: &'a SafeTensors,
    name: &str,
    shape: &[usize],
    dtype: Dtype,
) -> Result<&'a [u8], (String, String)> {
    let t = tensors
        .tensor(name)
        .map_err(|_| (name.to_string(), "missing".to_string()))?;
    if t.dtype() != dtype {
        return Err((
            name.into(),
            format!("dtype {:?}, expected {dtype:?}", t.dtype()),
        ));
    }
    if t.shape() != shape {
        return Err((
            name.into(),
            format!("shape {:?}, the metadata implies {shape:?}", t.shape()),
        ));
    }
    Ok(t.data())
}

fn read_tensor(
    tensors: &SafeTensors,
    name: &str,
    shape: &[usize],
) -> Result<Vec<f32>, (String, String)> {
    let values: Vec<f32> = read_raw(tensors, name, shape, Dtype::F32)?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err((name.into(), format!("element {i} is not finite")));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::tiny_model;

    #[test]
    fn compressed_round_trip_is_identical() {
        let mut m = tiny_model();
        let t = crate::model::prune::thresholds(&m.network, 0.5, true);
        m.masks = Some(crate::model::prune::prune_magnitude(&mut m.network, &t));
        m.quant = Some(QuantNetwork::quantize(&m.network));
        let bytes = to_bytes(&m).unwrap();
        let back = from_bytes("m", &bytes).unwrap();
        assert_eq!(back.network, m.network);
        assert_eq!(back.masks, m.masks);
        assert_eq!(back.quant, m.quant);
        assert_eq!(to_bytes(&back).unwrap(), bytes);
    }

    /// A tiny model whose hidden layer is `activation`.
    fn with_hidden(activation: Activation) -> Model {
        let mut m = tiny_model();
        m.network = Network::with_activations(
            m.network.layers().to_vec(),
            vec![activation],
            m.network.output(),
        )
        .unwrap();
        m
    }

    #[test]
    fn activations_round_trip_in_both_forms() {
        for activation in [
            Activation::Tanh,
            Activation::LeakyRelu { alpha: 0.01 },
            Activation::Sigmoid,
        ] {
            let mut m = with_hidden(activation);
            m.quant = Some(QuantNetwork::quantize(&m.network));
            let bytes = to_bytes(&m).unwrap();
            let back = from_bytes("m", &bytes).unwrap();
            assert_eq!(back.network, m.network);
            assert_eq!(back.network.activations(), &[activation]);
            assert_eq!(back.quant, m.quant);
            let quant = back.quant.as_ref().unwrap();
            assert_eq!(quant.activations(), &[activation]);
            assert_eq!(quant.dequantized().unwrap().activations(), &[activation]);
            assert_eq!(to_bytes(&back).unwrap(), bytes);
        }
    }

    /// The header with `edit` applied to its JSON (same tensors).
    fn edit_header(bytes: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
        let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
        let mut info = meta.metadata().clone().unwrap();
        let mut header: serde_json::Value = serde_json::from_str(&info[META_KEY]).unwrap();
        edit(&mut header);
        info.insert(META_KEY.to_string(), header.to_string());
        let tensors = SafeTensors::deserialize(bytes).unwrap();
        let views: Vec<(String, TensorView)> = tensors.tensors();
        safetensors::serialize(views, &Some(info)).unwrap()
    }

    /// Artifacts written before activations were recorded have no
    /// `activations` entry: they load as ReLU throughout.
    #[test]
    fn an_artifact_without_activations_is_relu() {
        let mut m = with_hidden(Activation::Tanh);
        m.quant = Some(QuantNetwork::quantize(&m.network));
        let bytes = edit_header(&to_bytes(&m).unwrap(), |h| {
            h.as_object_mut().unwrap().remove("activations");
        });
        let back = from_bytes("m", &bytes).unwrap();
        assert_eq!(back.network.activations(), &[Activation::Relu]);
        assert_eq!(
            back.quant.unwrap().activations(),
            &[Activation::Relu],
            "the int8 form too"
        );
    }

    #[test]
    fn wrong_activations_are_refused_naming_the_counts() {
        let bytes = to_bytes(&with_hidden(Activation::Tanh)).unwrap();
        let cases: [(serde_json::Value, &str); 3] = [
            (
                serde_json::json!([{"kind": "tanh"}, {"kind": "relu"}]),
                "m: metadata: `activations` lists 2 entries; 2 layers need 1 (one per layer but the last)",
            ),
            (
                serde_json::json!([{"kind": "leaky_relu", "alpha": 0.0}]),
                "m: metadata: hidden layer 0: leaky ReLU alpha 0 must be finite and above 0 (a ReLU is `relu`)",
            ),
            (
                serde_json::json!([{"kind": "swish"}]),
                "m: metadata: unknown variant `swish`",
            ),
        ];
        for (activations, want) in cases {
            let bad = edit_header(&bytes, |h| h["activations"] = activations.clone());
            let err = from_bytes("m", &bad).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err} (wanted {want})");
        }
    }

    /// The artifact's tensors with one replaced (same metadata).
    fn replace(bytes: &[u8], name: &str, dtype: Dtype, shape: Vec<usize>, data: &[u8]) -> Vec<u8> {
        let tensors = SafeTensors::deserialize(bytes).unwrap();
        let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
        let owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
            .tensors()
            .into_iter()
            .map(|(n, t)| {
                if n == name {
                    (n, dtype, shape.clone(), data.to_vec())
                } else {
                    (n, t.dtype(), t.shape().to_vec(), t.data().to_vec())
                }
            })
            .collect();
        let views: Vec<(String, TensorView)> = owned
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, meta.metadata()).unwrap()
    }

    #[test]
    fn int8_tensors_that_do_not_match_the_f32_shapes_are_rejected() {
        let mut m = tiny_model();
        m.quant = Some(QuantNetwork::quantize(&m.network));
        let good = to_bytes(&m).unwrap();
        let (o, i) = m.network.layers()[0].weight.dim();
        let bad = replace(
            &good,
            "layers.0.qweight",
            Dtype::I8,
            vec![o, i + 1],
            &vec![0u8; o * (i + 1)],
        );
        let err = from_bytes("m", &bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "m: tensor `layers.0.qweight`: shape [{o}, {}], the metadata implies [{o}, {i}]",
                i + 1
            )
        );
        let bad = replace(&good, "layers.1.qscale", Dtype::I8, vec![1], &[1]);
        let err = from_bytes("m", &bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "m: tensor `layers.1.qscale`: dtype I8, expected F32"
        );
    }

    #[test]
    fn a_mask_that_prunes_a_live_weight_is_rejected() {
        let mut m = tiny_model();
        m.masks = Some(
            m.network
                .layers()
                .iter()
                .map(|l| l.weight.mapv(|_| 1.0))
                .collect(),
        );
        let good = to_bytes(&m).unwrap();
        let (o, i) = m.network.layers()[1].weight.dim();
        let mut mask = vec![1u8; o * i];
        mask[0] = 0;
        let bad = replace(&good, "layers.1.mask", Dtype::U8, vec![o, i], &mask);
        let err = from_bytes("m", &bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "m: tensor `layers.1.mask`: element 0 prunes a weight that is not zero"
        );
    }

    #[test]
    fn round_trip_is_identical() {
        let m = tiny_model();
        let bytes = to_bytes(&m).unwrap();
        let back = from_bytes("m", &bytes).unwrap();
        assert_eq!(back.network, m.network);
        assert_eq!(back.schema, m.schema);
        assert_eq!(to_bytes(&back).unwrap(), bytes);
    }

    /// Encodings that pass the types but make every answer NaN, and names given
    /// twice, are refused at load with the feature or class named.
    #[test]
    fn an_encoding_the_network_cannot_use_is_rejected() {
        use crate::model::schema::FeatureKind;
        let numeric = |mean: f64, std: f64| {
            let mut m = tiny_model();
            m.schema.features[0].kind = FeatureKind::Numeric { mean, std };
            m
        };
        let cases: Vec<(Model, &str)> = vec![
            (numeric(2.0, 0.0), "feature `x`: standard deviation 0e0"),
            (
                numeric(2.0, 1e-300),
                "feature `x`: standard deviation 1e-300",
            ),
            (numeric(2.0, -1.0), "feature `x`: standard deviation -1e0"),
            (numeric(1e308, 1.0), "feature `x`: mean 1e308"),
            (
                {
                    let mut m = tiny_model();
                    m.schema.features[1].name = "x".into();
                    m
                },
                "feature `x`: named twice",
            ),
            (
                {
                    let mut m = tiny_model();
                    m.meta.classes = vec!["y".into(), "y".into()];
                    m
                },
                "class `y` is listed twice",
            ),
            (
                {
                    let mut m = tiny_model();
                    if let FeatureKind::Categorical { categories, .. } =
                        &mut m.schema.features[1].kind
                    {
                        categories[1] = categories[0].clone();
                    }
                    m
                },
                "feature `c`: category `a` is listed twice",
            ),
        ];
        for (model, want) in cases {
            let bytes = to_bytes(&model).unwrap();
            let err = from_bytes("m.safetensors", &bytes).unwrap_err().to_string();
            assert!(
                err.starts_with("m.safetensors: metadata: ") && err.contains(want),
                "{err} (wanted {want})"
            );
        }
        assert!(from_bytes("m", &to_bytes(&numeric(2.0, 1e-30)).unwrap()).is_ok());
    }

    #[test]
    fn a_device_or_a_directory_is_refused_without_reading_it() {
        for path in ["/dev/zero", "/tmp"] {
            let err = load(Path::new(path)).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("{path}: cannot read model file: not a regular file")
            );
        }
    }

    #[test]
    fn truncated_file_is_rejected() {
        let bytes = to_bytes(&tiny_model()).unwrap();
        let err = from_bytes("m.safetensors", &bytes[..bytes.len() - 3]).unwrap_err();
        assert!(matches!(err, ArtifactError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("m.safetensors: not a readable safetensors file"),
            "{err}"
        );
    }

    #[test]
    fn shape_mismatch_names_the_tensor() {
        let mut m = tiny_model();
        // Replace the first layer by one with an extra output: metadata and tensors
        // then disagree with the second layer's inputs.
        let l = &m.network.layers()[0];
        let wide = Dense {
            weight: Array2::zeros((l.outputs() + 1, l.inputs())),
            bias: Array1::zeros(l.outputs() + 1),
        };
        let second = m.network.layers()[1].clone();
        let bytes = {
            let good = to_bytes(&m).unwrap();
            let tensors = SafeTensors::deserialize(&good).unwrap();
            let (_, meta) = SafeTensors::read_metadata(&good).unwrap();
            let wide_w = le_bytes(wide.weight.iter());
            let wide_b = le_bytes(wide.bias.iter());
            let second_w = le_bytes(second.weight.iter());
            let second_b = le_bytes(second.bias.iter());
            let views = vec![
                (
                    "layers.0.weight".to_string(),
                    TensorView::new(Dtype::F32, wide.weight.shape().to_vec(), &wide_w).unwrap(),
                ),
                (
                    "layers.0.bias".to_string(),
                    TensorView::new(Dtype::F32, vec![wide.bias.len()], &wide_b).unwrap(),
                ),
                (
                    "layers.1.weight".to_string(),
                    TensorView::new(Dtype::F32, second.weight.shape().to_vec(), &second_w).unwrap(),
                ),
                (
                    "layers.1.bias".to_string(),
                    TensorView::new(Dtype::F32, vec![second.bias.len()], &second_b).unwrap(),
                ),
            ];
            assert_eq!(tensors.len(), 4);
            safetensors::serialize(views, meta.metadata()).unwrap()
        };
        let err = from_bytes("m", &bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "m: tensor `layers.0.weight`: shape [{}, {}], the metadata implies [{}, {}]",
                l.outputs() + 1,
                l.inputs(),
                l.outputs(),
                l.inputs()
            )
        );
        m.meta.classes.clear();
    }

    #[test]
    fn save_is_atomic_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        save(&tiny_model(), &path).unwrap();
        save(&tiny_model(), &path).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("m.safetensors")]);
        assert!(load(&path).is_ok());
    }
}
