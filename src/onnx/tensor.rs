//! Reading ONNX tensors and node attributes into plain Rust values.
//!
//! Numbers are widened to f64 so that folding a scaler or two consecutive
//! affine maps into one layer loses nothing before the final rounding to f32.

use super::proto::{attribute_type, data_type, AttributeProto, NodeProto, TensorProto};

/// A constant tensor: its shape and its values in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dims: Vec<usize>,
    pub data: Vec<f64>,
}

impl Tensor {
    pub fn scalar(v: f64) -> Tensor {
        Tensor {
            dims: Vec::new(),
            data: vec![v],
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// The values as a per-feature vector of `width` entries, if the tensor
    /// broadcasts to `[batch, width]` along the feature axis: one value, `[width]`
    /// or `[1, width]`.
    pub fn per_feature(&self, width: usize) -> Option<Vec<f64>> {
        let leading_ones = self.dims.len() <= 2
            && self.dims.iter().rev().skip(1).all(|&d| d == 1)
            && self.dims.iter().product::<usize>() == self.data.len();
        match self.data.len() {
            1 if leading_ones => Some(vec![self.data[0]; width]),
            n if n == width && leading_ones => Some(self.data.clone()),
            _ => None,
        }
    }
}

/// A constant: numbers, or strings (class labels).
#[derive(Debug, Clone, PartialEq)]
pub enum Constant {
    Numbers(Tensor),
    Strings(Vec<String>),
}

/// Reads `t`; `Err` says why it cannot be (the caller adds where).
pub fn read(t: &TensorProto) -> Result<Constant, String> {
    if !t.external_data.is_empty() || t.data_location == 1 {
        return Err(
            "its data is stored outside the file (external data); save the model with every \
             tensor inside it (onnx.save_model(..., save_as_external_data=False))"
                .into(),
        );
    }
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d} is negative")))
        .collect::<Result<Vec<usize>, String>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("its dimensions overflow")?;
    let data: Vec<f64> = match t.data_type {
        data_type::STRING => {
            return Ok(Constant::Strings(
                t.string_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect(),
            ))
        }
        data_type::FLOAT if !t.raw_data.is_empty() => raw(&t.raw_data, 4, |b| {
            f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        })?,
        data_type::FLOAT => t.float_data.iter().map(|&v| f64::from(v)).collect(),
        data_type::DOUBLE if !t.raw_data.is_empty() => raw(&t.raw_data, 8, |b| {
            f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        })?,
        data_type::DOUBLE => t.double_data.clone(),
        data_type::INT64 if !t.raw_data.is_empty() => raw(&t.raw_data, 8, |b| {
            i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f64
        })?,
        data_type::INT64 => t.int64_data.iter().map(|&v| v as f64).collect(),
        data_type::INT32 if !t.raw_data.is_empty() => raw(&t.raw_data, 4, |b| {
            f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        })?,
        data_type::INT32 => t.int32_data.iter().map(|&v| f64::from(v)).collect(),
        other => {
            return Err(format!(
            "element type {other} is not supported (float, double, int32, int64 and string are)"
        ))
        }
    };
    if data.len() != count {
        return Err(format!(
            "shape {dims:?} needs {count} values but {} are stored",
            data.len()
        ));
    }
    Ok(Constant::Numbers(Tensor { dims, data }))
}

fn raw(bytes: &[u8], size: usize, f: impl Fn(&[u8]) -> f64) -> Result<Vec<f64>, String> {
    if !bytes.len().is_multiple_of(size) {
        return Err(format!(
            "{} bytes of raw data is not a whole number of {size}-byte values",
            bytes.len()
        ));
    }
    Ok(bytes.chunks_exact(size).map(f).collect())
}

/// A node's attribute by name.
pub fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

pub fn int(node: &NodeProto, name: &str, default: i64) -> i64 {
    attribute(node, name).map_or(default, |a| a.i)
}

pub fn float(node: &NodeProto, name: &str, default: f32) -> f32 {
    attribute(node, name).map_or(default, |a| a.f)
}

pub fn string(node: &NodeProto, name: &str) -> Option<String> {
    attribute(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

pub fn floats(node: &NodeProto, name: &str) -> Option<Vec<f64>> {
    attribute(node, name).map(|a| a.floats.iter().map(|&v| f64::from(v)).collect())
}

pub fn ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attribute(node, name).map(|a| a.ints.clone())
}

pub fn strings(node: &NodeProto, name: &str) -> Option<Vec<String>> {
    attribute(node, name).map(|a| {
        a.strings
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    })
}

/// The value of a `Constant` node (`value`, or one of the `value_*` forms).
pub fn constant_node(node: &NodeProto) -> Result<Constant, String> {
    for a in &node.attribute {
        match (a.name.as_str(), a.r#type) {
            ("value", _) => match &a.t {
                Some(t) => return read(t),
                None => return Err("its `value` attribute holds no tensor".into()),
            },
            ("value_float", _) => return Ok(Constant::Numbers(Tensor::scalar(f64::from(a.f)))),
            ("value_int", _) => return Ok(Constant::Numbers(Tensor::scalar(a.i as f64))),
            ("value_floats", _) => {
                return Ok(Constant::Numbers(Tensor {
                    dims: vec![a.floats.len()],
                    data: a.floats.iter().map(|&v| f64::from(v)).collect(),
                }))
            }
            ("value_ints", _) => {
                return Ok(Constant::Numbers(Tensor {
                    dims: vec![a.ints.len()],
                    data: a.ints.iter().map(|&v| v as f64).collect(),
                }))
            }
            ("value_strings", attribute_type::STRINGS) => {
                return Ok(Constant::Strings(
                    a.strings
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect(),
                ))
            }
            _ => {}
        }
    }
    Err("it has no value attribute this importer reads (value, value_float(s), value_int(s), value_strings)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_typed_data_read_alike() {
        let raw = TensorProto {
            dims: vec![2, 2],
            data_type: data_type::FLOAT,
            raw_data: [1.0f32, -2.0, 0.5, 3.25]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            ..Default::default()
        };
        let typed = TensorProto {
            dims: vec![2, 2],
            data_type: data_type::FLOAT,
            float_data: vec![1.0, -2.0, 0.5, 3.25],
            ..Default::default()
        };
        assert_eq!(read(&raw).unwrap(), read(&typed).unwrap());
        let Constant::Numbers(t) = read(&raw).unwrap() else {
            panic!("numbers expected")
        };
        assert_eq!(t.dims, vec![2, 2]);
        assert_eq!(t.data, vec![1.0, -2.0, 0.5, 3.25]);
    }

    #[test]
    fn a_short_tensor_is_refused_with_its_shape() {
        let t = TensorProto {
            dims: vec![3, 2],
            data_type: data_type::FLOAT,
            float_data: vec![1.0; 5],
            ..Default::default()
        };
        assert_eq!(
            read(&t).unwrap_err(),
            "shape [3, 2] needs 6 values but 5 are stored"
        );
    }

    #[test]
    fn per_feature_broadcasts_scalars_and_rows_only() {
        let row = Tensor {
            dims: vec![1, 3],
            data: vec![1.0, 2.0, 3.0],
        };
        assert_eq!(row.per_feature(3), Some(vec![1.0, 2.0, 3.0]));
        assert_eq!(Tensor::scalar(2.0).per_feature(3), Some(vec![2.0; 3]));
        let column = Tensor {
            dims: vec![3, 1],
            data: vec![1.0, 2.0, 3.0],
        };
        assert_eq!(column.per_feature(3), None);
        assert_eq!(row.per_feature(4), None);
    }
}
