//! Where a network looked: class-activation maps for both networks and attention rollout for
//! the ViT, one heat map per image at the input size, in [0, 1].
//!
//! **Gradients with respect to activations on burn.** burn has no forward hooks, and its
//! autodiff records only operations on autodiff tensors. The network is therefore forwarded in
//! two parts: the part before the explained layer runs on plain tensors in evaluation mode (no
//! graph, BatchNorm on its running statistics); its output is turned into an autodiff leaf
//! (`.autodiff().require_grad()`) and the rest of the network, whose weights stay plain and act
//! as constants, runs on it. `backward()` on the explained logits then yields exactly the
//! gradient with respect to that activation (`explain_tests` checks it against a finite
//! difference, and the maps against pytorch-grad-cam). BatchNorm layers after the split keep
//! their running statistics: their parameters are plain, which is what evaluation mode means
//! to them (`models::batch_norm`).
//!
//! The explained layers are those pytorch-grad-cam's documentation uses: the CNN's last stage
//! output (`layer4`; an earlier stage when the last one's grid is too coarse, see
//! [`Method::Cam`]), and the ViT's last block's first LayerNorm (`blocks[-1].norm1`) with the
//! CLS token dropped and the patch tokens laid out on their grid; the ViT's final LayerNorm
//! only sees the CLS token, so gradients there are zero at the patches.

pub mod cam;
pub mod rollout;
#[cfg(test)]
mod tests;

use burn::prelude::*;

pub use cam::CamMethod;
pub use rollout::HeadFusion;

use crate::error::CassError;
use crate::models::{Network, ResNet, Vit};

/// What to compute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// A class-activation map for the explained class (both networks). `stage` (CNN only, 1 to
    /// 4) picks the ResNet stage whose output is explained; `None` takes the deepest stage whose
    /// grid is at least [`MIN_GRID`] cells a side (the last stage at 224 px, 7 x 7; the second
    /// at 32 px, 4 x 4, where the last stage is 1 x 1 and every map would be flat).
    Cam { method: CamMethod, stage: Option<usize> },
    /// Attention rollout (ViT only; needs no class).
    Rollout { fusion: HeadFusion, discard_ratio: f64 },
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Cam { method, .. } => method.name(),
            Method::Rollout { .. } => "attention-rollout",
        }
    }
}

/// Maps for a batch of `n` images.
#[derive(Debug, Clone)]
pub struct Explained {
    /// Side of the input, and of every map in `maps`.
    pub side: usize,
    /// `[n, side, side]`, each map in [0, 1].
    pub maps: Vec<f32>,
    /// `[rows, cols]` of the grid the maps were computed on (the activation's or the patches').
    pub grid: [usize; 2],
    /// `[n, rows, cols]` unscaled: the CAM after its ReLU, or the rollout's CLS row.
    pub raw: Vec<f32>,
    /// Logits `[n, classes]` of the same forward pass (`classes` is 0 for a rollout of a
    /// network explained without its head).
    pub logits: Vec<f32>,
    /// The class each map explains (`None` for a rollout, which explains no class).
    pub targets: Vec<Option<usize>>,
}

/// Maps of `x` (`[n, 3, side, side]`, normalised as the network's input) for `targets` (one per
/// image: a class index, or `None` for the highest logit). `net` must be in evaluation mode on a
/// plain device. A rollout ignores `targets` and, with `with_head` false, never runs the head.
pub fn explain(
    net: &Network,
    x: Tensor<4>,
    method: Method,
    targets: &[Option<usize>],
    with_head: bool,
) -> Result<Explained, CassError> {
    let [n, _, side, _] = x.dims();
    if targets.len() != n {
        return Err(CassError::config(
            "targets",
            format!("one target per image: {} for {n} images", targets.len()),
        ));
    }
    let mut out = match (method, net) {
        (Method::Cam { method, stage }, Network::Cnn(r)) => {
            let stage = match stage {
                Some(s @ 1..=4) => s,
                Some(s) => {
                    return Err(CassError::config(
                        "stage",
                        format!("a ResNet has stages 1 to 4, got {s}"),
                    ));
                }
                None => auto_stage(side),
            };
            cam_cnn(r, x, method, stage, targets)?
        }
        (Method::Cam { stage: Some(_), .. }, Network::Vit(_)) => {
            return Err(CassError::config(
                "stage",
                "stages are the CNN's: a ViT is explained at its last block's patch tokens",
            ));
        }
        (Method::Cam { method, stage: None }, Network::Vit(v)) => cam_vit(v, x, method, targets)?,
        (Method::Rollout { fusion, discard_ratio }, Network::Vit(v)) => {
            if !(0.0..1.0).contains(&discard_ratio) {
                return Err(CassError::config(
                    "discardRatio",
                    format!("must be at least 0 and below 1, got {discard_ratio}"),
                ));
            }
            rollout_vit(v, x, fusion, discard_ratio, with_head)?
        }
        (Method::Rollout { .. }, Network::Cnn(_)) => {
            return Err(CassError::config(
                "method",
                "attention-rollout needs a ViT (it follows attention); for the CNN use gradcam, gradcam++ or layercam",
            ));
        }
    };
    out.side = side;
    let cells = out.grid[0] * out.grid[1];
    out.maps = out
        .raw
        .chunks_exact(cells)
        .flat_map(|m| cam::to_input_size(m, out.grid, side))
        .collect();
    Ok(out)
}

/// The smallest grid side the automatic stage choice accepts.
pub const MIN_GRID: usize = 4;

/// The deepest ResNet stage whose output grid is at least [`MIN_GRID`] a side for `side`-pixel
/// inputs (stage `s` downsamples by `2^(s + 1)`), else the first.
pub fn auto_stage(side: usize) -> usize {
    (1..=4)
        .rev()
        .find(|s| side.div_ceil(1 << (s + 1)) >= MIN_GRID)
        .unwrap_or(1)
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 values")
}

/// The class each image's map explains: the given one, else the highest logit.
fn pick(logits: &[f32], classes: usize, targets: &[Option<usize>]) -> Result<Vec<usize>, CassError> {
    targets
        .iter()
        .enumerate()
        .map(|(i, t)| match *t {
            Some(c) if c < classes => Ok(c),
            Some(c) => Err(CassError::config(
                format!("target[{i}]"),
                format!("class {c} does not exist: the classifier has {classes} classes"),
            )),
            None => {
                let row = &logits[i * classes..(i + 1) * classes];
                Ok((0..classes).fold(0, |best, c| if row[c] > row[best] { c } else { best }))
            }
        })
        .collect()
}

/// The logits from an activation leaf, and the gradient of the explained logits (their sum over
/// the batch: each image's logit depends on its own activation only) with respect to it.
fn logits_and_grad<const D: usize>(
    leaf: Tensor<D>,
    head: impl FnOnce(Tensor<D>) -> Tensor<2>,
    targets: &[Option<usize>],
) -> Result<(Vec<f32>, Vec<usize>, Tensor<D>), CassError> {
    let leaf = leaf.autodiff().require_grad();
    let logits = head(leaf.clone());
    let [n, classes] = logits.dims();
    let values = host(logits.clone().without_autodiff());
    let picked = pick(&values, classes, targets)?;
    let mut onehot = vec![0f32; n * classes];
    for (i, &c) in picked.iter().enumerate() {
        onehot[i * classes + c] = 1.0;
    }
    let onehot = Tensor::<2>::from_data(TensorData::new(onehot, [n, classes]), &logits.device());
    let grads = (logits * onehot).sum().backward();
    let grad = leaf
        .grad(&grads)
        .expect("the explained logits depend on the activation");
    Ok((values, picked, grad))
}

fn cam_cnn(
    r: &ResNet,
    x: Tensor<4>,
    m: CamMethod,
    stage: usize,
    targets: &[Option<usize>],
) -> Result<Explained, CassError> {
    let act = r.forward_to_stage(x, stage); // [n, c, h, w]
    let [n, c, h, w] = act.dims();
    let (logits, picked, grad) = logits_and_grad(act.clone(), |a| r.forward_from_stage(a, stage), targets)?;
    let (act, grad) = (host(act), host(grad));
    let raw = cam::cams(m, &act, &grad, n, c);
    Ok(Explained {
        side: 0,
        maps: vec![],
        grid: [h, w],
        raw,
        logits,
        targets: picked.into_iter().map(Some).collect(),
    })
}

/// The patch grid of a ViT input of `side` pixels.
fn patch_grid(v: &Vit, side: usize) -> [usize; 2] {
    let [_, _, p, _] = v.patch_embed.proj.weight.dims();
    [side / p, side / p]
}

fn cam_vit(v: &Vit, x: Tensor<4>, m: CamMethod, targets: &[Option<usize>]) -> Result<Explained, CassError> {
    let grid = patch_grid(v, x.dims()[2]);
    let (last, before) = v
        .blocks
        .split_last()
        .ok_or_else(|| CassError::config("vit.depth", "a ViT without blocks has nothing to explain"))?;
    let mut t = v.embed_tokens(x);
    for block in before {
        t = block.forward(t);
    }
    let normed = last.norm1.forward(t.clone()); // [n, tokens, d]: the explained activation
    let [n, tokens, d] = normed.dims();
    let (logits, picked, grad) = logits_and_grad(
        normed.clone(),
        |a| v.head.forward(v.pool(last.forward_from_norm1(t.autodiff(), a))),
        targets,
    )?;
    // The CLS token dropped, the patches as channels x positions.
    let patches = |t: Tensor<3>| host(t.narrow(1, 1, tokens - 1).swap_dims(1, 2)); // [n, d, patches]
    let (act, grad) = (patches(normed), patches(grad));
    let raw = cam::cams(m, &act, &grad, n, d);
    Ok(Explained {
        side: 0,
        maps: vec![],
        grid,
        raw,
        logits,
        targets: picked.into_iter().map(Some).collect(),
    })
}

fn rollout_vit(
    v: &Vit,
    x: Tensor<4>,
    fusion: HeadFusion,
    discard_ratio: f64,
    with_head: bool,
) -> Result<Explained, CassError> {
    if v.blocks.is_empty() {
        return Err(CassError::config(
            "vit.depth",
            "a ViT without blocks has no attention to roll out",
        ));
    }
    let [n, _, side, _] = x.dims();
    let grid = patch_grid(v, side);
    let mut t = v.embed_tokens(x);
    let mut weights = Vec::with_capacity(v.blocks.len());
    for block in &v.blocks {
        let normed = block.norm1.forward(t.clone());
        weights.push(block.attn.weights(normed.clone()));
        t = block.forward_from_norm1(t, normed);
    }
    let raw = host(rollout::rollout(weights, fusion, discard_ratio));
    let logits = if with_head {
        host(v.head.forward(v.pool(t)))
    } else {
        vec![]
    };
    Ok(Explained {
        side,
        maps: vec![],
        grid,
        raw,
        logits,
        targets: vec![None; n],
    })
}
