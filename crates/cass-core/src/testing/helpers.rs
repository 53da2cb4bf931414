//! Helpers shared by the unit tests.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::Gradients;
use burn::tensor::TensorData;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::augment::AugmentConfig;
use crate::models::{BlockKind, ResNetConfig, VitConfig};
use crate::params::ParamNamer;
use crate::ssl::cass::PretrainConfig;
use crate::train::schedule::Schedule;

pub fn device() -> Device {
    Device::flex()
}

pub fn scalar(t: Tensor<1>) -> f32 {
    t.into_scalar::<f32>()
}

/// Deterministic standard-normal-ish tensor.
pub fn rand_tensor<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

pub fn tiny_resnet(head: usize) -> ResNetConfig {
    ResNetConfig::new(BlockKind::Basic, [1, 1, 1, 1])
        .with_base_width(4)
        .with_num_classes(head)
}

pub fn tiny_bottleneck(head: usize) -> ResNetConfig {
    ResNetConfig::new(BlockKind::Bottleneck, [1, 1, 1, 1])
        .with_base_width(4)
        .with_num_classes(head)
}

pub fn tiny_vit(size: usize, head: usize) -> VitConfig {
    VitConfig::new(size, 16, 2, 2).with_patch_size(4).with_num_classes(head)
}

pub fn tiny_pretrain() -> PretrainConfig {
    PretrainConfig {
        cnn: tiny_resnet(16),
        vit: tiny_vit(16, 16),
        image_size: 16,
        run: crate::train::run_config::RunConfig::new(4, 2, 7),
        lr_cnn: 1e-3,
        lr_vit: 1e-3,
        adam: Default::default(),
        schedule: Schedule::paper(),
        augment: AugmentConfig::default(),
        cnn_weights: None,
        vit_weights: None,
        views: 1,
        view_batch_norm: Default::default(),
        collapse_guard: None,
        conv: Default::default(),
        unknown: Default::default(),
    }
}

/// A fine-tuning of the tiny networks that runs in well under a second.
pub fn tiny_finetune(
    arch: crate::models::Arch,
    init: crate::train::finetune::Init,
) -> crate::train::finetune::FinetuneConfig {
    crate::train::finetune::FinetuneConfig {
        arch,
        init,
        cnn: tiny_resnet(16),
        vit: tiny_vit(16, 16),
        num_classes: 2,
        image_size: 16,
        batch_size: 4,
        max_epochs: 3,
        lr: 3e-3,
        adam: Default::default(),
        schedule: Schedule::Constant,
        loss: crate::loss::ClassificationLoss::paper(),
        class_weighting: crate::loss::ClassWeighting::MinMaxCounts,
        patience: 5,
        seed: 77,
        augment: AugmentConfig {
            enabled: false,
            ..Default::default()
        },
        backend: Default::default(),
        conv: Default::default(),
        class_names: Vec::new(),
    }
}

/// `n` synthetic RGB images of `size` x `size` with class-dependent patterns.
pub fn synthetic_images(n: usize, size: usize, seed: u64) -> (Vec<u8>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut bytes = Vec::with_capacity(n * size * size * 3);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i % 2) as i64;
        labels.push(class);
        for y in 0..size {
            for x in 0..size {
                let stripe = if class == 0 { (x / 2) % 2 } else { (y / 2) % 2 };
                let base = if stripe == 0 { 40u8 } else { 210u8 };
                for c in 0..3 {
                    let noise: i16 = rng.random_range(-20..=20);
                    bytes.push((base as i16 + noise + c as i16 * 5).clamp(0, 255) as u8);
                }
            }
        }
    }
    (bytes, labels)
}

/// Every parameter's gradient by timm name, in timm layout (linear weights `[out, in]`).
pub fn grads_by_name<M: Module>(m: &M, grads: &Gradients) -> BTreeMap<String, Vec<f32>> {
    struct G<'a>(ParamNamer, &'a Gradients, BTreeMap<String, Vec<f32>>);
    impl ModuleVisitor for G<'_> {
        fn enter_module(&mut self, n: &str, c: &str) {
            self.0.enter(n, c);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.exit();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = p.val().grad(self.1) {
                let g = if self.0.is_linear_weight() && D == 2 {
                    g.transpose()
                } else {
                    g
                };
                let v = g
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .expect("f32 gradient");
                self.2.insert(self.0.param_name(), v);
            }
        }
    }
    let mut v = G(ParamNamer::default(), grads, BTreeMap::new());
    m.visit(&mut v);
    v.2
}

/// Largest |a - b| relative to the largest |b|.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-12);
    a.iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()))
        / scale
}

/// Largest |got - want| over the largest |want| (at least 1), for tensors of any rank.
pub fn tensor_rel_err<const D: usize>(got: Tensor<D>, want: Tensor<D>) -> f32 {
    let scale = want.clone().abs().max().into_scalar::<f32>().max(1.0);
    (got - want).abs().max().into_scalar::<f32>() / scale
}

/// Largest |a - b|.
pub fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()))
}
