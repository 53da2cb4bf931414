//! Where an evaluation-mode ResNet forward pass spends its time on the CPU, by operation kind
//! (convolution, BatchNorm, ReLU, pooling, residual add), for the loaded-model path
//! (`Model.predict`). Flex runs eagerly, so each operation is timed as it returns.
//!
//! cargo run --example forward_profile --features testing -- --model cpu-small --size 32 --batch 64 --reps 20 [--conv batched]
//!
//! Measured on this 2-core VM, quiet (dev profile, 2026-12-06, two runs each): the convolutions
//! are 85 % of `cpu-small`'s batch-64 forward at 32 px (20.7 of 24.3 ms; 9.8-10.5 GFLOP/s) and
//! 75 % of ResNet-18's batch-16 forward at 224 px (0.90 of 1.20 s; 65-74 GFLOP/s); BatchNorm
//! 5-11 %, max pooling 8 %. `--conv batched` (im2col + one matmul) is slower on both (2,064
//! against 2,629-2,782 images/s; 7 against 13-16). So the CPU forward is as fast as burn's Flex
//! convolution.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::relu;
use burn::tensor::module::adaptive_avg_pool2d;
use cass_core::models::conv::conv2d;
use cass_core::models::{BlockKind, ResNetConfig};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size: usize = arg(&args, "--size", "32").parse().unwrap();
    let batch: usize = arg(&args, "--batch", "64").parse().unwrap();
    let reps: usize = arg(&args, "--reps", "20").parse().unwrap();
    let cfg = match arg(&args, "--model", "cpu-small").as_str() {
        "cpu-small" => ResNetConfig::new(BlockKind::Basic, [1, 1, 1, 1]).with_base_width(16),
        "resnet18" => ResNetConfig::resnet18(2),
        other => panic!("unknown model {other}"),
    };
    let device = Device::flex();
    let strategy = match arg(&args, "--conv", "auto").as_str() {
        "batched" => cass_core::models::conv::ConvStrategy::Batched,
        "native" => cass_core::models::conv::ConvStrategy::Native,
        _ => cass_core::models::conv::ConvStrategy::Auto,
    };
    let cfg_for_flops = cfg.clone().with_num_classes(2);
    let net = cfg.with_num_classes(2).init(&device).with_conv(strategy);
    let x = Tensor::<4>::random([batch, 3, size, size], Distribution::Default, &device);
    let times: std::cell::RefCell<BTreeMap<&str, f64>> = Default::default();
    let timed = |name: &'static str, f: &mut dyn FnMut() -> Tensor<4>| -> Tensor<4> {
        let t0 = Instant::now();
        let y = f();
        let _ = y.clone().slice([0..1, 0..1, 0..1, 0..1]).into_data(); // force completion
        *times.borrow_mut().entry(name).or_default() += t0.elapsed().as_secs_f64();
        y
    };
    let mut total = 0.0;
    for rep in 0..reps + 2 {
        if rep == 2 {
            times.borrow_mut().clear();
            total = 0.0;
        }
        let t0 = Instant::now();
        let mut h = timed("conv", &mut || conv2d(&net.conv1, x.clone(), net.conv));
        h = timed("batchnorm", &mut || net.bn1.forward(h.clone()));
        h = timed("relu", &mut || relu(h.clone()));
        h = timed("maxpool", &mut || net.maxpool.forward(h.clone()));
        for b in net
            .layer1
            .iter()
            .chain(&net.layer2)
            .chain(&net.layer3)
            .chain(&net.layer4)
        {
            let short = match &b.downsample {
                Some(d) => {
                    let s = timed("conv", &mut || conv2d(&d.conv, h.clone(), net.conv));
                    timed("batchnorm", &mut || d.bn.forward(s.clone()))
                }
                None => h.clone(),
            };
            let mut y = timed("conv", &mut || conv2d(&b.conv1, h.clone(), net.conv));
            y = timed("batchnorm", &mut || b.bn1.forward(y.clone()));
            y = timed("relu", &mut || relu(y.clone()));
            y = timed("conv", &mut || conv2d(&b.conv2, y.clone(), net.conv));
            y = timed("batchnorm", &mut || b.bn2.forward(y.clone()));
            y = timed("add", &mut || y.clone() + short.clone());
            h = timed("relu", &mut || relu(y.clone()));
        }
        let _ = timed("avgpool", &mut || adaptive_avg_pool2d(h.clone(), [1, 1]));
        total += t0.elapsed().as_secs_f64();
    }
    let per = |s: f64| s / reps as f64 * 1e3;
    println!(
        "forward {:.2} ms per batch of {batch} ({:.0} images/s)",
        per(total),
        batch as f64 * reps as f64 / total
    );
    for (k, v) in times.borrow().iter() {
        println!("  {k:<10} {:>8.2} ms  {:>5.1} %", per(*v), 100.0 * v / total);
    }
    // The network's analytic forward FLOPs (convolutions and the head, which is negligible)
    // over the time spent in convolutions: the rate the convolutions ran at.
    let conv_sec = times.borrow().get("conv").copied().unwrap_or(f64::NAN) / reps as f64;
    let flops = cass_core::flops::resnet_forward(&cfg_for_flops, size) * batch as f64;
    println!("  convolutions at {:.1} GFLOP/s", flops / conv_sec / 1e9);
}
