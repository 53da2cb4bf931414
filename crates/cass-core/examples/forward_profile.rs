//! Where an evaluation-mode ResNet forward pass spends its time on the CPU, layer by layer, as
//! the loaded-model path (`Model.predict`) runs it: the stem (its convolution, folded BatchNorm
//! and ReLU in one operation), max pooling, each residual block, global pooling. Flex runs
//! eagerly, so each layer is timed as it returns. `npm run bench` prints it after its table.
//!
//! cargo run --example forward_profile --features testing -- --model cpu-small --size 32 --batch 64 --reps 20 [--conv native]
//!
//! Before the CPU's own convolution (2026-12-06, burn's Flex convolution, BatchNorm and max
//! pooling timed separately): convolutions were 85 % of `cpu-small`'s batch-64 forward and 75 %
//! of ResNet-18's batch-16 forward at 224 px, at 9.8-10.5 and 65-74 GFLOP/s; BatchNorm 5-11 %,
//! max pooling 7-16 %. After (`bench/results/2026-12-06-vm-cpu-cnn-run*.json`, printed after
//! the table): the whole ResNet-18 forward at 224 px ran at 97-182 GFLOP/s over six runs (this
//! VM's swings), `cpu-small`'s at 22-34.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::module::adaptive_avg_pool2d;
use cass_core::models::conv::conv_bn;
use cass_core::models::host_pool::max_pool2d;
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
    // Each layer as the evaluation path runs it: a convolution with its folded BatchNorm (and,
    // at a block's end, the residual and ReLU) is one operation on the CPU.
    let times: std::cell::RefCell<Vec<(String, f64)>> = Default::default();
    let timed = |name: String, f: &mut dyn FnMut() -> Tensor<4>| -> Tensor<4> {
        let t0 = Instant::now();
        let y = f();
        let _ = y.clone().slice([0..1, 0..1, 0..1, 0..1]).into_data(); // force completion
        let mut t = times.borrow_mut();
        match t.iter_mut().find(|(n, _)| *n == name) {
            Some((_, s)) => *s += t0.elapsed().as_secs_f64(),
            None => t.push((name, t0.elapsed().as_secs_f64())),
        }
        y
    };
    let shape = |t: &Tensor<4>| format!("{:?}", t.dims());
    let mut total = 0.0;
    for rep in 0..reps + 2 {
        if rep == 2 {
            times.borrow_mut().clear();
            total = 0.0;
        }
        let t0 = Instant::now();
        let mut h = timed("stem conv 7x7/2 + bn + relu".into(), &mut || {
            conv_bn(&net.conv1, &net.bn1, x.clone(), net.conv, None, true)
        });
        h = timed("maxpool 3x3/2".into(), &mut || max_pool2d(&net.maxpool, h.clone()));
        for (stage, blocks) in [&net.layer1, &net.layer2, &net.layer3, &net.layer4]
            .into_iter()
            .enumerate()
        {
            for (i, b) in blocks.iter().enumerate() {
                let input = shape(&h);
                h = timed(format!("layer{}.{i} block, input {input}", stage + 1), &mut || {
                    b.forward(h.clone(), net.conv)
                });
            }
        }
        let _ = timed("avgpool".into(), &mut || adaptive_avg_pool2d(h.clone(), [1, 1]));
        total += t0.elapsed().as_secs_f64();
    }
    let per = |s: f64| s / reps as f64 * 1e3;
    println!(
        "forward {:.2} ms per batch of {batch} ({:.0} images/s)",
        per(total),
        batch as f64 * reps as f64 / total
    );
    for (k, v) in times.borrow().iter() {
        println!("  {k:<48} {:>8.2} ms  {:>5.1} %", per(*v), 100.0 * v / total);
    }
    let flops = cass_core::flops::resnet_forward(&cfg_for_flops, size) * batch as f64;
    println!("  whole forward at {:.1} GFLOP/s", flops / (total / reps as f64) / 1e9);
}
