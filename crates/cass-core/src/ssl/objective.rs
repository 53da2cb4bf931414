//! The CASS pre-training objective on the two networks' head outputs, with its two extensions
//! for training from random weights (two views, the collapse guard), and the per-epoch check
//! that reports a collapse.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::loss::{cass_loss, covariance_penalty, output_spread, variance_hinge};

/// The collapse guard, for each network's output and each view (averaged over views, summed over
/// the two networks): `weight * variance_hinge(output, target) + covariance *
/// covariance_penalty(output)` (VICReg's variance and covariance terms; `weight` is its `mu`,
/// `target` its `gamma`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CollapseGuard {
    pub weight: f64,
    pub target: f64,
    /// Weight of the covariance penalty; 0 leaves the variance hinge alone.
    #[serde(default)]
    pub covariance: f64,
}

/// The pre-training objective on the two networks' head outputs.
///
/// With one view, `r` and `t` are the outputs for the same batch and the loss is
/// `cass_loss(r, t)`. With two views the batch holds view 1 of every image, then view 2
/// (`[x1; x2]`, so each network runs once, over `2B` images, its BatchNorm statistics taken over
/// both views), and the loss is `0.5 (L(r1, t2) + L(r2, t1))`: each network must agree with the
/// other's output for ANOTHER augmentation of the image, which, from random weights, is what
/// gives the agreement an invariance to learn rather than any shared constant.
/// The guard adds `weight * (H(r) + H(t))`, `H` averaged over views.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective {
    pub views: usize,
    pub guard: Option<CollapseGuard>,
}

/// The objective's total (a tensor carrying the graph) and its named parts as numbers.
pub struct ObjectiveParts {
    pub total: Tensor<1>,
    pub cass: f64,
    pub guard: Option<f64>,
    /// [`output_spread`] of each network over the first view.
    pub cnn_spread: f64,
    pub vit_spread: f64,
}

impl Objective {
    /// # Shapes
    /// `r`, `t`: `[views * batch, dim]` -> total `[1]`
    pub fn forward(&self, r: Tensor<2>, t: Tensor<2>) -> ObjectiveParts {
        let rs = r.chunk(self.views, 0); // views x [batch, dim]
        let ts = t.chunk(self.views, 0);
        let cass = if self.views == 1 {
            cass_loss(rs[0].clone(), ts[0].clone())
        } else {
            (cass_loss(rs[0].clone(), ts[1].clone()) + cass_loss(rs[1].clone(), ts[0].clone())).mul_scalar(0.5)
        };
        let spread = |v: &Tensor<2>| output_spread(v.clone().detach()).into_scalar::<f32>() as f64;
        let (cnn_spread, vit_spread) = (spread(&rs[0]), spread(&ts[0]));
        let cass_value = cass.clone().into_scalar::<f32>() as f64;
        let (total, guard) = match self.guard {
            None => (cass, None),
            Some(g) => {
                let per_view = 1.0 / self.views as f64;
                let hinge = rs
                    .into_iter()
                    .chain(ts)
                    .map(|v| {
                        let hinge = variance_hinge(v.clone(), g.target).mul_scalar(g.weight);
                        if g.covariance > 0.0 {
                            hinge + covariance_penalty(v).mul_scalar(g.covariance)
                        } else {
                            hinge
                        }
                    })
                    .reduce(|a, b| a + b)
                    .expect("at least one view")
                    .mul_scalar(per_view);
                let value = hinge.clone().into_scalar::<f32>() as f64;
                (cass + hinge, Some(value))
            }
        };
        ObjectiveParts {
            total,
            cass: cass_value,
            guard,
            cnn_spread,
            vit_spread,
        }
    }
}

/// The largest output spread of each network over an epoch's steps: if even the largest stays
/// under the threshold, the epoch was collapsed throughout.
#[derive(Debug, Default)]
pub(crate) struct EpochSpread {
    cnn: f64,
    vit: f64,
}

impl EpochSpread {
    pub(crate) fn record(&mut self, out: &StepOutput) {
        self.cnn = self.cnn.max(out.cnn_spread);
        self.vit = self.vit.max(out.vit_spread);
    }

    pub(crate) fn epoch_warning(&self, epoch: u64, threshold: f64) -> Option<String> {
        let low: Vec<String> = [("CNN", self.cnn), ("ViT", self.vit)]
            .into_iter()
            .filter(|&(_, s)| s < threshold)
            .map(|(n, s)| format!("{n} {s:.3}"))
            .collect();
        (!low.is_empty()).then(|| {
            format!(
                "output spread stayed below {threshold} for all of epoch {epoch} (largest: {}): the networks are \
                 collapsing to a constant output, which fine-tuning cannot use. From random weights, set \
                 `views: 2` and `collapseGuard: {{ weight: 1, target: 0.5, covariance: 1 }}` (--views 2 \
                 --collapse-guard 1,0.5,1, the cpu-small preset's), or start from pretrained weights \
                 (--cnn-weights imagenet, --vit-weights hf:...)",
                low.join(", ")
            )
        })
    }
}

/// The loss of one step, its parts and collapse diagnostics ([`crate::loss::output_spread`] of each
/// network's head).
#[derive(Debug, Clone, Copy)]
pub struct StepOutput {
    /// The optimised total: the CASS loss plus the guard, if any.
    pub loss: f64,
    pub cass: f64,
    pub guard: Option<f64>,
    pub cnn_spread: f64,
    pub vit_spread: f64,
}

impl StepOutput {
    pub(crate) fn from_parts(total: f64, p: &ObjectiveParts) -> Self {
        Self {
            loss: total,
            cass: p.cass,
            guard: p.guard,
            cnn_spread: p.cnn_spread,
            vit_spread: p.vit_spread,
        }
    }

    /// Named parts for progress events.
    pub fn parts(&self) -> Vec<(String, f64)> {
        let mut parts = vec![("cass".to_string(), self.cass)];
        if let Some(g) = self.guard {
            parts.push(("guard".into(), g));
        }
        parts.push(("cnn_spread".into(), self.cnn_spread));
        parts.push(("vit_spread".into(), self.vit_spread));
        parts
    }
}
