//! Named host tensors and safetensors files: a module's tensors by timm name, strict loading,
//! and the file format.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::TensorData;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::write_atomic;
use crate::error::CassError;
use crate::params::ParamNamer;

/// A named f32 tensor in timm layout, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

pub(crate) fn to_host<const D: usize>(t: Tensor<D>, transpose: bool) -> HostTensor {
    let t = if transpose && D == 2 { t.transpose() } else { t };
    let shape = t.dims().to_vec();
    let data = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor");
    HostTensor { shape, data }
}

/// `[rows, cols]` -> `[cols, rows]` on the host.
fn transpose_2d(t: &HostTensor) -> (Vec<f32>, Vec<usize>) {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let mut out = vec![0f32; t.data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = t.data[r * cols + c];
        }
    }
    (out, vec![cols, rows])
}

/// Every float tensor of a module (parameters and BatchNorm running statistics) by timm name.
/// Works on a validation snapshot, which first folds pending running-statistic updates in.
pub fn module_tensors<M: Module>(module: &M) -> BTreeMap<String, HostTensor> {
    let module = module.valid();
    struct Collect(ParamNamer, BTreeMap<String, HostTensor>);
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.0.enter(name, container_type);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = to_host(param.val().without_autodiff(), self.0.is_linear_weight());
            self.1.insert(self.0.param_name(), t);
        }
    }
    let mut c = Collect(ParamNamer::default(), BTreeMap::new());
    module.visit(&mut c);
    c.1
}

/// Replaces every float tensor of `module` by the tensor of the same timm name. Strict: every
/// module tensor must be present with the same shape, and every file tensor must be used,
/// except names in `ignore` (e.g. a classifier of another width).
pub fn load_module_tensors<M: Module>(
    module: M,
    tensors: &BTreeMap<String, HostTensor>,
    ignore: &HashSet<String>,
    source: &Path,
) -> Result<M, CassError> {
    struct Load<'a> {
        namer: ParamNamer,
        tensors: &'a BTreeMap<String, HostTensor>,
        ignore: &'a HashSet<String>,
        used: HashSet<String>,
        missing: Vec<String>,
        mismatched: Vec<String>,
    }
    impl ModuleMapper for Load<'_> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.namer.enter(name, container_type);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.namer.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let name = self.namer.param_name();
            if self.ignore.contains(&name) {
                return param;
            }
            let Some(host) = self.tensors.get(&name) else {
                self.missing.push(name);
                return param;
            };
            self.used.insert(name.clone());
            let transpose = self.namer.is_linear_weight();
            let (id, current, mapper) = param.consume();
            let mut want = current.dims().to_vec();
            if transpose {
                want.reverse();
            }
            if host.shape != want {
                self.mismatched
                    .push(format!("{name}: file {:?}, model {:?}", host.shape, want));
                return Param::from_mapped_value(id, current, mapper);
            }
            let device = current.device();
            let require_grad = current.is_require_grad();
            // Transpose on the host so the parameter is contiguous like a freshly built one: a
            // strided view would change the matmul summation order and the low bits.
            let (data, shape) = if transpose {
                transpose_2d(host)
            } else {
                (host.data.clone(), host.shape.clone())
            };
            let mut t: Tensor<D> = Tensor::from_data(TensorData::new(data, shape), &device.clone().inner());
            if device.is_autodiff() {
                t = t.autodiff();
            }
            if require_grad {
                t = t.require_grad();
            }
            Param::from_mapped_value(id, t, mapper)
        }
    }
    let mut l = Load {
        namer: ParamNamer::default(),
        tensors,
        ignore,
        used: HashSet::new(),
        missing: Vec::new(),
        mismatched: Vec::new(),
    };
    let module = module.map(&mut l);
    let extra: Vec<&String> = tensors
        .keys()
        .filter(|k| !l.used.contains(*k) && !ignore.contains(*k) && !k.ends_with("num_batches_tracked"))
        .collect();
    if !l.missing.is_empty() || !l.mismatched.is_empty() || !extra.is_empty() {
        let mut msg = format!("weights in {} do not fit the model:", source.display());
        if !l.missing.is_empty() {
            msg += &format!(" missing {:?};", l.missing);
        }
        if !l.mismatched.is_empty() {
            msg += &format!(" wrong shape {:?};", l.mismatched);
        }
        if !extra.is_empty() {
            msg += &format!(" unexpected {extra:?};");
        }
        return Err(CassError::data(
            "bad-weights",
            msg.trim_end_matches(';').to_string(),
            Some(source),
        ));
    }
    Ok(module)
}

/// Serialises named host tensors as safetensors bytes (f32), plus int64 scalars (BatchNorm's
/// `num_batches_tracked`), with string metadata.
pub fn safetensors_bytes(
    tensors: &BTreeMap<String, HostTensor>,
    int_scalars: &[(String, i64)],
    metadata: Option<HashMap<String, String>>,
) -> Vec<u8> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>, Dtype)> = tensors
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                t.shape.clone(),
                Dtype::F32,
            )
        })
        .chain(
            int_scalars
                .iter()
                .map(|(k, v)| (k.clone(), v.to_le_bytes().to_vec(), vec![], Dtype::I64)),
        )
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(k, b, s, d)| (k.clone(), TensorView::new(*d, s.clone(), b).expect("valid view")))
        .collect();
    canonical(safetensors::tensor::serialize(views, metadata).expect("safetensors serialisation"))
}

/// The same safetensors bytes with the header's keys sorted. The crate writes `__metadata__`
/// from a `HashMap`, in an order that differs between runs, so identical runs wrote files with
/// different hashes. Same keys and values in another order serialise to the same length, so the
/// data offsets and the padding stay as they are.
fn canonical(bytes: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header = &bytes[8..8 + n];
    let Ok(serde_json::Value::Object(top)) = serde_json::from_slice::<serde_json::Value>(header) else {
        return bytes;
    };
    let sorted: BTreeMap<String, serde_json::Value> = top
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::Object(m) if k == "__metadata__" => {
                let m: BTreeMap<String, serde_json::Value> = m.into_iter().collect();
                (k, serde_json::to_value(m).expect("json"))
            }
            v => (k, v),
        })
        .collect();
    let mut text = serde_json::to_vec(&sorted).expect("json");
    if text.len() > n {
        return bytes; // not expected: keep the crate's bytes rather than break the offsets
    }
    text.resize(n, b' '); // the crate pads the header with spaces to its alignment
    let mut out = bytes;
    out[8..8 + n].copy_from_slice(&text);
    out
}

/// Reads every f32 (or f64/f16-free) tensor of a safetensors file by name.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>, CassError> {
    let bytes = super::read_bounded(path, super::MAX_WEIGHTS_BYTES, "a weights file")?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| CassError::data("bad-weights", format!("not a safetensors file: {e}"), Some(path)))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect(),
            // Integer buffers (BatchNorm's num_batches_tracked) carry no weights we use.
            Dtype::I64 | Dtype::I32 => continue,
            other => {
                return Err(CassError::data(
                    "bad-weights",
                    format!("tensor {name} has dtype {other:?}; only F32/F64 are supported"),
                    Some(path),
                ));
            }
        };
        out.insert(
            name,
            HostTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

/// Saves a module's weights as timm-named safetensors, atomically.
pub fn save_weights<M: Module>(module: &M, path: &Path, metadata: HashMap<String, String>) -> Result<(), CassError> {
    write_atomic(path, &safetensors_bytes(&module_tensors(module), &[], Some(metadata)))
}

/// Loads timm-named safetensors into a module (strict, see [`load_module_tensors`]).
pub fn load_weights<M: Module>(module: M, path: &Path, ignore: &HashSet<String>) -> Result<M, CassError> {
    let tensors = read_safetensors(path)?;
    load_module_tensors(module, &tensors, ignore, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_tensors_and_metadata_always_give_the_same_bytes() {
        let tensors: BTreeMap<String, HostTensor> = ["b.weight", "a.bias", "c.running_mean"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.to_string(),
                    HostTensor {
                        shape: vec![2, i + 1],
                        data: (0..2 * (i + 1)).map(|v| v as f32).collect(),
                    },
                )
            })
            .collect();
        let meta = || -> HashMap<String, String> {
            ["format", "step", "arch", "config", "seed"]
                .iter()
                .map(|k| (k.to_string(), format!("value of {k}")))
                .collect()
        };
        let first = safetensors_bytes(&tensors, &[("n".into(), 3)], Some(meta()));
        // Each HashMap has its own random order: many maps, one file.
        for _ in 0..32 {
            assert_eq!(safetensors_bytes(&tensors, &[("n".into(), 3)], Some(meta())), first);
        }
        let st = SafeTensors::deserialize(&first).unwrap();
        assert_eq!(st.tensor("b.weight").unwrap().shape(), &[2, 1]);
        let (_, header) = SafeTensors::read_metadata(&first).unwrap();
        assert_eq!(
            header.metadata().as_ref().unwrap().get("step").unwrap(),
            "value of step"
        );
    }
}
