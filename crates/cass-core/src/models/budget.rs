//! What a network's config implies in memory, checked before anything is allocated.
//!
//! Each field of a config can be inside its own limit while the whole is not: a ViT 65,536 wide
//! and one block deep has a 12.9-billion-element `qkv` weight, and its allocation failed with an
//! abort (Rust's allocator does not unwind, so no `catch_unwind` saves the host process). Every
//! config that reaches the engine (from the API, or from a checkpoint's `state.json`, which no
//! zod schema saw) is measured here first: the parameter count, the largest single parameter
//! and the largest activation of one batch, in u128 so that no product overflows.

use crate::error::CassError;
use crate::models::{Arch, BlockKind, ResNetConfig, VitConfig};

/// The most parameters a network may have: 1.5 billion (6 GB in f32; four times that while
/// training, with gradients and Adam's two moments). ViT-g/14 has 1.0 billion, ViT-B/16 86
/// million, ResNet-50 26 million.
pub const MAX_PARAMS: u128 = 1_500_000_000;
/// The most elements one tensor (a weight, or an activation of one batch) may hold: 2^30
/// (4 GiB in f32). The paper's pair at 384 px and batch 16 peaks at 64 million (ViT-B's
/// attention scores); a ResNet-50 stem at 1024 px and batch 64 at 1.1 billion, which stays
/// allowed.
pub const MAX_TENSOR_ELEMENTS: u128 = 1 << 30;

/// Parameters, largest parameter and largest activation (elements) of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    pub params: u128,
    pub largest_param: u128,
    pub largest_activation: u128,
}

impl Footprint {
    /// Refuses a footprint over the limits, naming `field` and what to lower.
    pub fn check(&self, field: &str) -> Result<(), CassError> {
        if self.params > MAX_PARAMS {
            return Err(CassError::config(
                field,
                format!(
                    "implies {} parameters, more than the {MAX_PARAMS} allowed: make it narrower or shallower",
                    self.params
                ),
            ));
        }
        if self.largest_param > MAX_TENSOR_ELEMENTS {
            return Err(CassError::config(
                field,
                format!(
                    "implies a weight of {} elements, more than the {MAX_TENSOR_ELEMENTS} one tensor may hold: make it narrower",
                    self.largest_param
                ),
            ));
        }
        if self.largest_activation > MAX_TENSOR_ELEMENTS {
            return Err(CassError::config(
                field,
                format!(
                    "implies an activation of {} elements for one batch, more than the {MAX_TENSOR_ELEMENTS} one tensor may hold: lower the batch size or the image size, or make the network narrower",
                    self.largest_activation
                ),
            ));
        }
        Ok(())
    }
}

fn out(s: u128, stride: u128, k: u128, pad: u128) -> u128 {
    (s + 2 * pad).saturating_sub(k) / stride + 1
}

/// A ResNet on `size`-pixel images, `batch` at a time. Counts im2col's patch matrix too (the
/// batched convolution of the GPU backends builds it: `k * k` times the input).
pub fn resnet(cfg: &ResNetConfig, size: usize, batch: usize) -> Footprint {
    let (w, b, cin0) = (cfg.base_width as u128, batch as u128, cfg.in_channels as u128);
    let exp: u128 = if cfg.block == BlockKind::Basic { 1 } else { 4 };
    let mut s = out(size as u128, 2, 7, 3);
    let mut params = cin0 * w * 49 + 2 * w;
    let mut largest_param = cin0 * w * 49;
    let mut largest_act = (b * w * s * s).max(b * s * s * 49 * cin0);
    s = out(s, 2, 3, 1);
    let mut cin = w;
    for (i, &blocks) in cfg.layers.iter().enumerate() {
        let planes = w << i.min(64);
        let cout = planes * exp;
        for k in 0..blocks as u128 {
            let stride = if i > 0 && k == 0 { 2 } else { 1 };
            let so = out(s, stride, 3, 1);
            let (p, widest) = match cfg.block {
                BlockKind::Basic => (cin * planes * 9 + planes * planes * 9 + 4 * planes, planes * planes * 9),
                BlockKind::Bottleneck => (
                    cin * planes + planes * planes * 9 + planes * cout + 4 * planes + 2 * cout,
                    (planes * planes * 9).max(planes * cout),
                ),
            };
            params += p;
            largest_param = largest_param.max(widest).max(cin * planes * 9);
            if stride != 1 || cin != cout {
                params += cin * cout + 2 * cout;
                largest_param = largest_param.max(cin * cout);
            }
            largest_act = largest_act
                .max(b * cout * so * so)
                .max(b * so * so * 9 * planes.max(cin));
            cin = cout;
            s = so;
        }
    }
    let classes = cfg.num_classes as u128;
    params += cin * classes + classes;
    largest_param = largest_param.max(cin * classes);
    Footprint {
        params,
        largest_param,
        largest_activation: largest_act,
    }
}

/// A ViT on its own `image_size`, `batch` images at a time.
pub fn vit(cfg: &VitConfig, batch: usize) -> Footprint {
    let d = cfg.embed_dim as u128;
    let p = cfg.patch_size.max(1) as u128;
    let side = cfg.image_size as u128 / p;
    let n = side * side + 1;
    let hidden = (cfg.embed_dim as f64 * cfg.mlp_ratio).max(0.0).min(u64::MAX as f64) as u128;
    let heads = cfg.num_heads as u128;
    let classes = cfg.num_classes as u128;
    let b = batch as u128;
    let per_block = 4 * d + 3 * d * d + 3 * d + d * d + d + 2 * d * hidden + hidden + d;
    let params = cfg.in_channels as u128 * p * p * d
        + d
        + d
        + n * d
        + cfg.depth as u128 * per_block
        + 2 * d
        + d * classes
        + classes;
    Footprint {
        params,
        largest_param: (3 * d * d).max(d * hidden).max(n * d).max(d * classes),
        largest_activation: (b * n * 3 * d).max(b * heads * n * n).max(b * n * hidden),
    }
}

/// The network of `arch` (the other config is ignored), checked; errors name `cnn` or `vit`.
pub fn check_network(
    arch: Arch,
    cnn: &ResNetConfig,
    vit: &VitConfig,
    size: usize,
    batch: usize,
) -> Result<(), CassError> {
    match arch {
        Arch::Cnn => resnet(cnn, size, batch).check("cnn"),
        Arch::Vit => self::vit(vit, batch).check("vit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_counts_match_the_published_networks() {
        // timm: resnet18 11,689,512; resnet50 25,557,032; vit_base_patch16_224 86,567,656.
        assert_eq!(resnet(&ResNetConfig::resnet18(1000), 224, 1).params, 11_689_512);
        assert_eq!(resnet(&ResNetConfig::resnet50(1000), 224, 1).params, 25_557_032);
        assert_eq!(vit(&VitConfig::base(224, 1000), 1).params, 86_567_656);
    }

    #[test]
    fn the_paper_configuration_fits_and_a_65536_wide_vit_does_not() {
        resnet(&ResNetConfig::resnet50(1000), 384, 16).check("cnn").unwrap();
        vit(&VitConfig::base(384, 1000), 16).check("vit").unwrap();
        // The config that aborted the process: every field inside its own limit.
        let wide = VitConfig::new(32, 65536, 1, 1).with_patch_size(8);
        let err = vit(&wide, 16).check("vit").unwrap_err();
        assert!(err.to_string().contains("parameters"), "{err}");
        // A batch whose activations cannot exist, of a network that can.
        let err = vit(&VitConfig::base(4096, 2), 64).check("vit").unwrap_err();
        assert!(err.to_string().contains("activation"), "{err}");
        let err = resnet(&ResNetConfig::resnet50(2), 4096, 4096).check("cnn").unwrap_err();
        assert!(err.to_string().contains("activation"), "{err}");
    }
}
