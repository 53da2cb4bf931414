//! Attention rollout (Abnar and Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020):
//! how much each input patch reaches the CLS token through every block, attention and residual
//! path together.
//!
//! Per block, the heads' attention is fused into one `[tokens, tokens]` matrix (mean, max or
//! min over heads); optionally the weakest links are dropped (the `discard_ratio` share of
//! entries with the lowest weights, never the CLS token's attention to itself, the refinement
//! popularised by the vit-explain tool); the residual connection is accounted for as the paper
//! does, `0.5 W + 0.5 I`, and rows are renormalised to sum to 1. The rollout is the product of
//! these matrices from the first block to the last, and the map is the CLS token's row over the
//! patches. Computed on the device: for a ViT-B at 384 px each product is 577 x 577 x 577.

use burn::prelude::*;

/// How the heads' attention matrices become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadFusion {
    Mean,
    Max,
    Min,
}

impl HeadFusion {
    pub fn name(self) -> &'static str {
        match self {
            HeadFusion::Mean => "mean",
            HeadFusion::Max => "max",
            HeadFusion::Min => "min",
        }
    }
}

/// Rollout of `weights` (one `[batch, heads, tokens, tokens]` per block, first block first).
///
/// # Shapes
/// -> `[batch, tokens - 1]`: the CLS row of the rollout over the patch tokens, unscaled.
pub fn rollout(weights: Vec<Tensor<4>>, fusion: HeadFusion, discard_ratio: f64) -> Tensor<2> {
    let [b, _, n, _] = weights[0].dims();
    let device = weights[0].device();
    let eye = Tensor::<2>::eye(n, &device).reshape([1, n, n]).expand([b, n, n]);
    let mut result = eye.clone();
    for w in weights {
        let fused = match fusion {
            HeadFusion::Mean => w.mean_dim(1),
            HeadFusion::Max => w.max_dim(1),
            HeadFusion::Min => w.min_dim(1),
        }
        .reshape([b, n, n]);
        let fused = discard(fused, discard_ratio);
        let a = (fused + eye.clone()).mul_scalar(0.5);
        let a = a.clone() / a.sum_dim(2); // rows sum to 1
        result = a.matmul(result);
    }
    result.narrow(1, 0, 1).narrow(2, 1, n - 1).reshape([b, n - 1])
}

/// Zeroes the `floor(ratio * (n * n - 1))` smallest entries of each `[n, n]` matrix, never the
/// CLS-to-CLS entry: every entry below the k-th smallest of the others (exactly k entries when
/// values are distinct, fewer on ties at the threshold).
fn discard(w: Tensor<3>, ratio: f64) -> Tensor<3> {
    let [b, n, _] = w.dims();
    let k = (ratio * (n * n - 1) as f64).floor() as usize;
    if k == 0 {
        return w;
    }
    let device = w.device();
    // The CLS-to-CLS entry (flat index 0) is kept out of the ranking by making it the largest.
    let mut cls = vec![false; n * n];
    cls[0] = true;
    let cls = Tensor::<1, Bool>::from_data(TensorData::new(cls, [n * n]), &device)
        .reshape([1, n * n])
        .expand([b, n * n]);
    let flat = w.reshape([b, n * n]);
    let ranked = flat.clone().mask_fill(cls.clone(), f32::INFINITY).sort(1);
    let threshold = ranked.narrow(1, k, 1).expand([b, n * n]); // [b, n*n]
    let drop = flat.clone().lower(threshold).bool_and(cls.bool_not());
    flat.mask_fill(drop, 0.0).reshape([b, n, n])
}
