//! One optimisation step of any [`Method`], in its two parts: the gradients of each micro-batch,
//! summed, then one update. With `accumulate: N` a step's `N * batch_size` images go through the
//! networks `batch_size` at a time, so its activations take the memory of one micro-batch.
//!
//! What accumulation preserves: the loss of a step is the mean of its micro-batches' losses and
//! each is weighted by `1 / N` before its backward pass, so for a loss that is a mean over images
//! (DINO's cross-entropy, CASS's cosine term) and networks without batch statistics (the ViT),
//! `N` micro-batches of `B` give the update of one batch of `N * B` (tested: DINO's ViT, N = 2 at
//! batch 8 against batch 16). What it does not: BatchNorm normalises each micro-batch by its own
//! statistics, and the batch-level terms (the collapse guard's variance hinge and covariance,
//! VICReg's) see `B` images, not `N * B`: an accumulated step is then a different step, closer to
//! the smaller batch's.
//!
//! Multi-GPU would split at the same seam: each device would run [`Method::gradients`] on its
//! share of the step's images, every gradient tensor would be summed across devices (burn's
//! `DistributedContext` started over the devices, then `all_reduce(tensor, ReduceOperation::Sum,
//! devices)` on each) before [`Method::apply`] ran on every device, keeping the replicas equal.

use burn::prelude::*;

use super::{Method, StepAt};
use crate::events::NetworkSpread;
use crate::train::run::StepReport;

/// Runs one step of `method` on `raw` (the step's images) in `parts` micro-batches and returns
/// its report: the loss, parts and spreads averaged over the micro-batches.
pub fn step<M: Method>(method: &mut M, raw: Tensor<4>, at: StepAt, parts: usize) -> StepReport {
    let parts = parts.max(1);
    let weight = 1.0 / parts as f64;
    let mut sum: Option<M::Grads> = None;
    let mut reports = Vec::with_capacity(parts);
    for views in method.views(raw, at, parts) {
        let (grads, report) = method.gradients(views, weight, at);
        sum = Some(match sum {
            None => grads,
            Some(s) => method.add(s, grads),
        });
        reports.push(report);
    }
    method.apply(sum.expect("a step has at least one micro-batch"), at);
    mean_report(reports)
}

/// The seed of view (or crop) `v`'s augmentation at step `step` of a run seeded `seed`: view 0's
/// is the run's own step seed, so a one-view run does not depend on how many views another draws.
pub fn view_seed(seed: u64, v: usize, step: u64) -> u64 {
    crate::train::run::step_seed(seed.wrapping_add((v as u64).wrapping_mul(0x5851_f42d_4c95_7f2d)), step)
}

/// `views` augmentations of every image of `raw`, view 1 of every image, then view 2, ...: each
/// view's augmentation drawn from its own seed ([`view_seed`]).
///
/// # Shapes
/// `raw`: `[images, 3, h, w]` -> `[views * images, 3, size, size]`
pub fn augmented_views(
    aug: &crate::augment::AugmentConfig,
    raw: Tensor<4>,
    views: usize,
    seed: u64,
    step: u64,
    size: usize,
) -> Tensor<4> {
    let batch = raw.dims()[0];
    let aspect = raw.dims()[3] as f64 / raw.dims()[2] as f64;
    let all: Vec<Tensor<4>> = (0..views)
        .map(|v| {
            let params = aug.sample(batch, view_seed(seed, v, step), aspect);
            crate::augment::apply(raw.clone(), Some(&params), size, aug)
        })
        .collect();
    Tensor::cat(all, 0)
}

/// Splits a step's views (`views` blocks of the step's images, each block in image order, as the
/// methods lay them out: view 1 of every image, then view 2) into `parts` micro-batches, each
/// with the same layout over its own `images / parts` images. One part returns `x` untouched.
///
/// # Shapes
/// `x`: `[views * images, 3, h, w]` -> parts x `[views * images / parts, 3, h, w]`
pub fn split_views(x: Tensor<4>, views: usize, parts: usize) -> Vec<Tensor<4>> {
    if parts <= 1 {
        return vec![x];
    }
    let images = x.dims()[0] / views;
    let per = images / parts;
    let blocks = x.chunk(views, 0); // views x [images, ...]
    (0..parts)
        .map(|p| {
            let own: Vec<Tensor<4>> = blocks.iter().map(|b| b.clone().narrow(0, p * per, per)).collect();
            Tensor::cat(own, 0)
        })
        .collect()
}

/// The mean of the micro-batches' reports (one report: itself, unchanged).
fn mean_report(mut reports: Vec<StepReport>) -> StepReport {
    if reports.len() == 1 {
        return reports.pop().expect("one report");
    }
    let n = reports.len() as f64;
    let mean = |f: &dyn Fn(&StepReport) -> f64| reports.iter().map(f).sum::<f64>() / n;
    let mean_opt = |f: &dyn Fn(&StepReport) -> Option<f64>| {
        let v: Option<Vec<f64>> = reports.iter().map(f).collect();
        v.map(|v| v.iter().sum::<f64>() / n)
    };
    let parts = reports[0]
        .parts
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (name.clone(), mean(&|r| r.parts.get(i).map_or(f64::NAN, |p| p.1))))
        .collect();
    StepReport {
        loss: mean(&|r| r.loss),
        parts,
        spread: NetworkSpread {
            cnn: mean_opt(&|r| r.spread.cnn),
            vit: mean_opt(&|r| r.spread.vit),
        },
        lr: reports[0].lr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_each_parts_views_of_the_same_images() {
        let device = Device::flex();
        // 2 views x 4 images, image i of view v holds 10 v + i.
        let values: Vec<f32> = (0..2).flat_map(|v| (0..4).map(move |i| (10 * v + i) as f32)).collect();
        let x = Tensor::<1>::from_floats(values.as_slice(), &device).reshape([8, 1, 1, 1]);
        let parts = split_views(x.clone(), 2, 2);
        let got: Vec<Vec<f32>> = parts
            .into_iter()
            .map(|p| p.into_data().try_into_vec::<f32>().unwrap())
            .collect();
        assert_eq!(got, vec![vec![0.0, 1.0, 10.0, 11.0], vec![2.0, 3.0, 12.0, 13.0]]);
        assert_eq!(split_views(x, 2, 1).len(), 1);
    }

    #[test]
    fn reports_average_over_micro_batches() {
        let r = |loss: f64, cnn: Option<f64>| StepReport {
            loss,
            parts: vec![("a".into(), loss * 2.0)],
            spread: NetworkSpread { cnn, vit: Some(1.0) },
            lr: 0.5,
        };
        let m = mean_report(vec![r(1.0, Some(0.2)), r(3.0, Some(0.4))]);
        assert_eq!(m.loss, 2.0);
        assert_eq!(m.parts, vec![("a".to_string(), 4.0)]);
        assert!((m.spread.cnn.unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(m.spread.vit, Some(1.0));
        assert_eq!(m.lr, 0.5);
        assert_eq!(mean_report(vec![r(1.0, None), r(3.0, Some(1.0))]).spread.cnn, None);
    }
}
