//! Checkpoints and models: safetensors files whose header carries the run's metadata as
//! JSON under the key `trainer`, written atomically (temp file beside, fsync, rename).

use crate::TrainError;
use safetensors::tensor::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Key of the JSON metadata in the safetensors header.
pub const METADATA_KEY: &str = "trainer";

/// A tensor copied to the CPU, ready to be serialised.
struct HostTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl HostTensor {
    fn new(name: &str, tensor: &Tensor) -> Result<HostTensor, TrainError> {
        let dtype = match tensor.kind() {
            Kind::Float => Dtype::F32,
            Kind::Double => Dtype::F64,
            Kind::Half => Dtype::F16,
            Kind::BFloat16 => Dtype::BF16,
            Kind::Int64 => Dtype::I64,
            Kind::Int => Dtype::I32,
            Kind::Uint8 => Dtype::U8,
            Kind::Bool => Dtype::BOOL,
            other => {
                return Err(TrainError::TensorKind {
                    name: name.into(),
                    kind: format!("{other:?}"),
                })
            }
        };
        let host = tensor.detach().to_device(Device::Cpu).contiguous();
        let numel = host.numel();
        let mut bytes = vec![0u8; numel * host.kind().elt_size_in_bytes()];
        host.f_copy_data_u8(&mut bytes, numel)?;
        let shape = host.size().iter().map(|&d| d as usize).collect();
        Ok(HostTensor {
            dtype,
            shape,
            bytes,
        })
    }
}

impl View for &HostTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes `path` with `tensors` and `metadata` (any serialisable value), atomically.
pub fn save<M: serde::Serialize>(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &M,
) -> Result<(), TrainError> {
    let host: Vec<(String, HostTensor)> = tensors
        .iter()
        .map(|(name, t)| Ok((name.clone(), HostTensor::new(name, t)?)))
        .collect::<Result<_, TrainError>>()?;
    let json = serde_json::to_string(metadata).map_err(|source| TrainError::Metadata {
        path: path.into(),
        source,
    })?;
    let info = HashMap::from([(METADATA_KEY.to_string(), json)]);
    let bytes = safetensors::serialize(host.iter().map(|(n, t)| (n.as_str(), t)), Some(info))
        .map_err(|source| TrainError::Safetensors {
            path: path.into(),
            source,
        })?;
    // Atomic (temp file beside, fsync, rename): a reader never sees half a model.
    csv_export::write_bytes_atomic(path, &bytes).map_err(|e| TrainError::io(path, e))
}

/// Tensors (on the CPU) and the metadata JSON of a file written by `save`.
pub fn load(path: &Path) -> Result<(HashMap<String, Tensor>, serde_json::Value), TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let safetensors = |source| TrainError::Safetensors {
        path: path.into(),
        source,
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(safetensors)?;
    let metadata = match header.metadata().as_ref().and_then(|m| m.get(METADATA_KEY)) {
        Some(json) => serde_json::from_str(json).map_err(|source| TrainError::Metadata {
            path: path.into(),
            source,
        })?,
        None => serde_json::Value::Null,
    };
    let file = SafeTensors::deserialize(&bytes).map_err(safetensors)?;
    let mut tensors = HashMap::new();
    for (name, view) in file.tensors() {
        let kind = match view.dtype() {
            Dtype::F32 => Kind::Float,
            Dtype::F64 => Kind::Double,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::I64 => Kind::Int64,
            Dtype::I32 => Kind::Int,
            Dtype::U8 => Kind::Uint8,
            Dtype::BOOL => Kind::Bool,
            other => {
                return Err(TrainError::TensorDtype {
                    path: path.into(),
                    name,
                    dtype: format!("{other:?}"),
                })
            }
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let tensor = Tensor::f_from_data_size(view.data(), &shape, kind)?;
        tensors.insert(name, tensor);
    }
    Ok((tensors, metadata))
}

/// Copies `tensors` into the VarStore's variables of the same names. Every variable of the
/// store must be present with the same shape; the error names the first that is not.
pub fn copy_into(
    vs: &tch::nn::VarStore,
    tensors: &HashMap<String, Tensor>,
    source: &Path,
) -> Result<(), TrainError> {
    let mut variables = vs.variables();
    let mut names: Vec<&String> = variables.keys().collect();
    names.sort();
    let names: Vec<String> = names.into_iter().cloned().collect();
    for name in names {
        let var = variables.get_mut(&name).expect("name from the same map");
        let saved = tensors
            .get(&name)
            .ok_or_else(|| TrainError::MissingVariable {
                path: source.into(),
                name: name.clone(),
            })?;
        if saved.size() != var.size() {
            return Err(TrainError::VariableShape {
                path: source.into(),
                name,
                saved: saved.size(),
                expected: var.size(),
            });
        }
        tch::no_grad(|| var.f_copy_(saved))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_tensors_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let a = Tensor::from_slice(&[1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0]).view([2, 3]);
        let b = Tensor::from_slice(&[4i64, 5]);
        let meta = serde_json::json!({"arch": "tiny", "epoch": 3});
        save(
            &path,
            &[
                ("w.a".into(), a.shallow_clone()),
                ("w.b".into(), b.shallow_clone()),
            ],
            &meta,
        )
        .unwrap();
        let (tensors, got_meta) = load(&path).unwrap();
        assert_eq!(got_meta, meta);
        assert!(tensors["w.a"].equal(&a));
        assert!(tensors["w.b"].equal(&b));
        // No temp file left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn load_names_the_file_on_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, b"not a safetensors file").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.safetensors"), "{err}");
    }
}
