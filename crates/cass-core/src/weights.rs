//! Weights in and out in timm's format: a timm `state_dict` saved as safetensors loads into our
//! models by name (strict), and any of our modules exports back to a file that
//! `timm.create_model(name).load_state_dict(load_file(path))` accepts with `strict=True`.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use burn::module::Module;

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

/// Loads timm ViT weights, resampling `pos_embed` when the file was trained at another image
/// size (bicubic with antialiasing, as timm's `resample_abs_pos_embed`; one prefix token).
pub fn load_timm_vit(
    vit: crate::models::Vit,
    path: &Path,
    ignore: &HashSet<String>,
) -> Result<crate::models::Vit, CassError> {
    let mut tensors = read_safetensors(path)?;
    let want = vit.pos_embed.dims(); // [1, tokens, dim]
    if let Some(pe) = tensors.get_mut("pos_embed")
        && pe.shape.len() == 3
        && pe.shape[1] != want[1]
        && pe.shape[2] == want[2]
    {
        let grid = |tokens: usize| {
            let g = ((tokens - 1) as f64).sqrt().round() as usize;
            (g * g == tokens - 1).then_some(g)
        };
        let (Some(from), Some(to)) = (grid(pe.shape[1]), grid(want[1])) else {
            return Err(CassError::data(
                "bad-weights",
                format!(
                    "pos_embed with {} tokens cannot be resampled to {} (not a square grid plus a class token)",
                    pe.shape[1], want[1]
                ),
                Some(path),
            ));
        };
        *pe = resample_pos_embed(pe, from, to);
    }
    checkpoint::load_module_tensors(vit, &tensors, ignore, path)
}

/// The cubic convolution kernel with `a = -0.5`, as PIL and PyTorch's antialiased bicubic use.
fn cubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// Resampling weights of one axis (`in_size` -> `out_size`), PIL-style with antialiasing:
/// for each output index, the first input index and the normalised weights.
fn axis_weights(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let support_scale = scale.max(1.0);
    let support = 2.0 * support_scale;
    (0..out_size)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(in_size);
            let mut w: Vec<f64> = (lo..hi)
                .map(|j| cubic((j as f64 - center + 0.5) / support_scale))
                .collect();
            let sum: f64 = w.iter().sum();
            if sum != 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            (lo, w)
        })
        .collect()
}

/// Resamples a `[1, 1 + g*g, dim]` position embedding to `[1, 1 + n*n, dim]`, keeping the class
/// token's entry.
pub fn resample_pos_embed(pe: &HostTensor, from: usize, to: usize) -> HostTensor {
    let dim = pe.shape[2];
    let src = &pe.data[dim..]; // [from, from, dim], row-major
    let wx = axis_weights(from, to);
    // Width first, then height (separable).
    let mut tmp = vec![0f64; from * to * dim];
    for y in 0..from {
        for (x, (lo, w)) in wx.iter().enumerate() {
            for (k, wk) in w.iter().enumerate() {
                let s = &src[(y * from + lo + k) * dim..(y * from + lo + k + 1) * dim];
                let t = &mut tmp[(y * to + x) * dim..(y * to + x + 1) * dim];
                t.iter_mut().zip(s).for_each(|(a, b)| *a += wk * *b as f64);
            }
        }
    }
    let mut out = pe.data[..dim].to_vec();
    out.resize(dim * (1 + to * to), 0.0);
    for (y, (lo, w)) in wx.iter().enumerate() {
        for x in 0..to {
            let mut acc = vec![0f64; dim];
            for (k, wk) in w.iter().enumerate() {
                let t = &tmp[((lo + k) * to + x) * dim..((lo + k) * to + x + 1) * dim];
                acc.iter_mut().zip(t).for_each(|(a, b)| *a += wk * b);
            }
            out[dim * (1 + y * to + x)..dim * (2 + y * to + x)]
                .iter_mut()
                .zip(acc)
                .for_each(|(o, a)| *o = a as f32);
        }
    }
    HostTensor {
        shape: vec![1, 1 + to * to, dim],
        data: out,
    }
}

/// The string metadata of a safetensors file (empty when it has none).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>, CassError> {
    let bytes = checkpoint::read_bounded(path, checkpoint::MAX_WEIGHTS_BYTES, "a weights file")?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| CassError::data("bad-weights", format!("not a safetensors file: {e}"), Some(path)))?;
    Ok(header.metadata().clone().unwrap_or_default())
}

/// What a weights file says about itself: a ResNet variant and an input preprocessing, as
/// written by `cass weights import` for the Keras ResNet-50 (`cass.resnet_variant`,
/// `cass.preprocess`). Applies them to `cnn` and `augment`; returns whether anything changed.
pub fn apply_declared_variant(
    path: &Path,
    cnn: &mut crate::models::ResNetConfig,
    augment: &mut crate::augment::AugmentConfig,
) -> Result<bool, CassError> {
    #[derive(serde::Deserialize)]
    struct Variant {
        stride_in_1x1: bool,
        bn_eps: f64,
    }
    #[derive(serde::Deserialize)]
    struct Preprocess {
        channel_order: crate::augment::ChannelOrder,
        mean: [f32; 3],
        std: [f32; 3],
    }
    let meta = read_metadata(path)?;
    let bad = |k: &str, e: serde_json::Error| CassError::data("bad-weights", format!("metadata {k}: {e}"), Some(path));
    let mut changed = false;
    if let Some(v) = meta.get("cass.resnet_variant") {
        let v: Variant = serde_json::from_str(v).map_err(|e| bad("cass.resnet_variant", e))?;
        cnn.stride_in_1x1 = v.stride_in_1x1;
        cnn.bn_eps = v.bn_eps;
        changed = true;
    }
    if let Some(p) = meta.get("cass.preprocess") {
        let p: Preprocess = serde_json::from_str(p).map_err(|e| bad("cass.preprocess", e))?;
        augment.channel_order = p.channel_order;
        augment.mean = p.mean;
        augment.std = p.std;
        changed = true;
    }
    Ok(changed)
}

/// Writes `module` as a timm state dict: float tensors by timm name, plus the int64
/// `num_batches_tracked` buffer of every BatchNorm (set to `batches_tracked`).
pub fn export_timm<M: Module>(module: &M, path: &Path, batches_tracked: i64) -> Result<(), CassError> {
    let tensors = module_tensors(module);
    let counts: Vec<(String, i64)> = tensors
        .keys()
        .filter_map(|k| {
            k.strip_suffix(".running_mean")
                .map(|p| (format!("{p}.num_batches_tracked"), batches_tracked))
        })
        .collect();
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let bytes = checkpoint::safetensors_bytes(&tensors, &counts, Some(meta));
    write_atomic(path, &bytes)
}

#[cfg(test)]
#[path = "weights_tests.rs"]
mod tests;
