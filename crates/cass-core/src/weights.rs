//! Weights in and out in timm's format: a timm `state_dict` saved as safetensors loads into our
//! models by name (strict), and any of our modules exports back to a file that
//! `timm.create_model(name).load_state_dict(load_file(path))` accepts with `strict=True`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use burn::module::Module;
use safetensors::tensor::{Dtype, TensorView};

use crate::checkpoint::{self, HostTensor, module_tensors, read_safetensors, write_atomic};
use crate::error::CassError;

/// Names of a classifier head, to leave out when loading weights trained for another width.
pub fn head_names(prefix: &str) -> HashSet<String> {
    [format!("{prefix}.weight"), format!("{prefix}.bias")]
        .into_iter()
        .collect()
}

/// Loads a timm safetensors file into `module`: every tensor used, every parameter filled,
/// shapes checked, except the names in `ignore` (e.g. [`head_names`] with `--ignore-head`).
pub fn load_timm<M: Module>(module: M, path: &Path, ignore: &HashSet<String>) -> Result<M, CassError> {
    checkpoint::load_weights(module, path, ignore)
}

/// Writes `module` as a timm state dict: float tensors by timm name, plus the int64
/// `num_batches_tracked` buffer of every BatchNorm (set to `batches_tracked`).
pub fn export_timm<M: Module>(module: &M, path: &Path, batches_tracked: i64) -> Result<(), CassError> {
    let tensors = module_tensors(module);
    let counts: Vec<String> = tensors
        .keys()
        .filter_map(|k| {
            k.strip_suffix(".running_mean")
                .map(|p| format!("{p}.num_batches_tracked"))
        })
        .collect();
    let count_bytes = batches_tracked.to_le_bytes();
    let float_bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                t.shape.clone(),
            )
        })
        .collect();
    let mut views: Vec<(String, TensorView<'_>)> = float_bytes
        .iter()
        .map(|(k, b, s)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("valid view"),
            )
        })
        .collect();
    for name in &counts {
        views.push((
            name.clone(),
            TensorView::new(Dtype::I64, vec![], &count_bytes).expect("valid view"),
        ));
    }
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let bytes = safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| CassError::data("bad-weights", format!("cannot serialise: {e}"), Some(path)))?;
    write_atomic(path, &bytes)
}

/// Reads named float tensors (for comparisons in tests and tools).
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, HostTensor>, CassError> {
    read_safetensors(path)
}

#[cfg(test)]
#[path = "weights_tests.rs"]
mod tests;
