//! Analytic FLOP counts (a multiply-add is 2 FLOPs) of the networks' forward passes, for model
//! FLOPs utilisation. A training step is counted as 3x the forward (forward + backward for
//! activations and weights), the usual convention.

use crate::models::{BlockKind, ResNetConfig, VitConfig};

fn conv(cin: usize, cout: usize, k: usize, out_hw: usize) -> f64 {
    2.0 * (cin * cout * k * k * out_hw * out_hw) as f64
}

/// Forward FLOPs of a ResNet on `size x size` images (convolutions and the head).
pub fn resnet_forward(cfg: &ResNetConfig, size: usize) -> f64 {
    let out = |s: usize, stride: usize, k: usize, pad: usize| (s + 2 * pad - k) / stride + 1;
    let mut s = out(size, 2, 7, 3);
    let mut f = conv(cfg.in_channels, cfg.base_width, 7, s);
    s = out(s, 2, 3, 1);
    let exp = if cfg.block == BlockKind::Basic { 1 } else { 4 };
    let mut cin = cfg.base_width;
    for (i, &blocks) in cfg.layers.iter().enumerate() {
        let planes = cfg.base_width << i;
        for b in 0..blocks {
            let stride = if i > 0 && b == 0 { 2 } else { 1 };
            let so = out(s, stride, 3, 1);
            let cout = planes * exp;
            f += match cfg.block {
                BlockKind::Basic => conv(cin, planes, 3, so) + conv(planes, planes, 3, so),
                BlockKind::Bottleneck => {
                    let s1 = if cfg.stride_in_1x1 { so } else { s };
                    conv(cin, planes, 1, s1) + conv(planes, planes, 3, so) + conv(planes, cout, 1, so)
                }
            };
            if stride != 1 || cin != cout {
                f += conv(cin, cout, 1, so);
            }
            cin = cout;
            s = so;
        }
    }
    f + 2.0 * (cin * cfg.num_classes) as f64
}

/// Forward FLOPs of a ViT (patch embedding, attention and MLP matmuls, head).
pub fn vit_forward(cfg: &VitConfig) -> f64 {
    let n = (cfg.num_patches() + 1) as f64;
    let d = cfg.embed_dim as f64;
    let hidden = (cfg.embed_dim as f64 * cfg.mlp_ratio).floor();
    let patch = 2.0 * cfg.num_patches() as f64 * (cfg.in_channels * cfg.patch_size * cfg.patch_size) as f64 * d;
    let per_block = 2.0 * n * d * 3.0 * d // qkv
        + 2.0 * 2.0 * n * n * d // q k^T and attn v
        + 2.0 * n * d * d // proj
        + 2.0 * 2.0 * n * d * hidden; // fc1, fc2
    patch + cfg.depth as f64 * per_block + 2.0 * d * cfg.num_classes as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resnet50_and_vit_b16_match_published_counts() {
        // torchvision / timm report 4.09 GMACs for ResNet-50 and 17.56 GMACs for ViT-B/16 at 224.
        let r = resnet_forward(&ResNetConfig::resnet50(1000), 224) / 2e9;
        assert!((r - 4.09).abs() < 0.05, "ResNet-50 {r} GMACs");
        let v = vit_forward(&VitConfig::base(224, 1000)) / 2e9;
        assert!((v - 17.56).abs() < 0.1, "ViT-B/16 {v} GMACs");
        let r18 = resnet_forward(&ResNetConfig::resnet18(1000), 224) / 2e9;
        assert!((r18 - 1.82).abs() < 0.03, "ResNet-18 {r18} GMACs");
    }
}
