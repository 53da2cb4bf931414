//! Times one CASS training step (both forwards, one backward, both Adam updates) or one
//! network's forward pass, on the CPU backend unless `--device` says otherwise. Prints one JSON
//! object. Driven by `bench/run.ts`, which runs the PyTorch reference (`bench/reference.py`) on
//! the same configuration in the same invocation.
//!
//! cargo run --example bench_step -- --model cpu-small --size 32 --batch 16 --steps 20 --warmup 3 --what step
//!
//! `--what` is `step`, `fwd-cnn`, `fwd-vit`, `matmul` (machine peak), `parity` (forward parity
//! against timm fixtures, `--fixture BASE`) or `breakdown` (median time
//! of each phase of a step, run one after the other: augmentation, each forward, loss, backward,
//! each Adam update). `--towers serial|parallel` overrides the engine's default of running the two
//! networks of a step on two threads on the CPU and on one thread on a GPU.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use cass_core::BackendChoice;
use cass_core::device::{Precision, resolve_with};
use cass_core::flops::{resnet_forward, vit_forward};
use cass_core::models::{BlockKind, ResNetConfig, VitConfig};
use cass_core::ssl::cass::{CassTrainer, PretrainConfig};
use cass_core::train::schedule::Schedule;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// The named model pairs of the benchmark (kept in step with `bench/reference.py`).
fn models(name: &str, size: usize, head: usize) -> (ResNetConfig, VitConfig) {
    match name {
        "cpu-small" => (
            ResNetConfig::new(BlockKind::Basic, [1, 1, 1, 1])
                .with_base_width(16)
                .with_num_classes(head),
            VitConfig::new(size, 96, 4, 4).with_patch_size(8).with_num_classes(head),
        ),
        "r18-vitti" => (ResNetConfig::resnet18(head), VitConfig::tiny(size, head)),
        "paper" => (ResNetConfig::resnet50(head), VitConfig::base(size, head)),
        other => panic!("unknown model pair {other}"),
    }
}

/// Peak resident set size of this process, in MiB (Linux `VmHWM`).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Flex executes eagerly, but reading one value makes sure the update has finished.
fn materialize_sync<M: burn::module::Module>(m: &M) {
    let _ = m.num_params();
}

fn backend_name(b: BackendChoice) -> &'static str {
    match b {
        BackendChoice::Cpu => "flex",
        BackendChoice::Cuda => "cuda",
        BackendChoice::Wgpu => "wgpu",
        BackendChoice::Auto => "auto",
    }
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = arg(&args, "--model", "cpu-small");
    let size: usize = arg(&args, "--size", "32").parse().expect("--size");
    let batch: usize = arg(&args, "--batch", "16").parse().expect("--batch");
    let steps: usize = arg(&args, "--steps", "20").parse().expect("--steps");
    let warmup: usize = arg(&args, "--warmup", "3").parse().expect("--warmup");
    let what = arg(&args, "--what", "step");
    // `--views 2`: two augmented views per image (the batch the networks see doubles);
    // `--guard`: cpu-small's collapse guard (variance hinge and covariance penalty) in the loss.
    let views: usize = arg(&args, "--views", "1").parse().expect("--views");
    let guard = args.iter().any(|a| a == "--guard");
    let head: usize = arg(&args, "--head", if model == "cpu-small" { "128" } else { "1000" })
        .parse()
        .expect("--head");
    let backend: BackendChoice =
        serde_json::from_str(&format!("\"{}\"", arg(&args, "--device", "cpu"))).expect("--device");
    // `--precision bf16`: every float tensor in bfloat16 (GPU backends only).
    let precision: Precision =
        serde_json::from_str(&format!("\"{}\"", arg(&args, "--precision", "f32"))).expect("--precision");
    let device = resolve_with(backend, precision).expect("device");

    if what == "parity" {
        // Forward parity against timm on this device: `--fixture BASE` (see `parity_check`).
        let base = std::path::PathBuf::from(arg(&args, "--fixture", ""));
        let (logits, features) = cass_core::testing::parity::parity_errors(&base, &device).expect("parity files");
        println!(
            "{}",
            serde_json::json!({ "what": "parity", "fixture": base, "precision": precision, "logits_rel_err": logits, "features_rel_err": features })
        );
        return;
    }
    if what == "matmul" {
        // Machine peak estimate: a square f32 matmul, best of a few (`--n`, default 1024).
        let n: usize = arg(&args, "--n", "1024").parse().expect("--n");
        let a = Tensor::<2>::random([n, n], Distribution::Default, &device);
        let b = Tensor::<2>::random([n, n], Distribution::Default, &device);
        let mut times = Vec::new();
        for _ in 0..(warmup + steps) {
            let t = Instant::now();
            let c = a.clone().matmul(b.clone());
            let _ = c.sum().into_scalar::<f32>();
            times.push(t.elapsed().as_secs_f64());
        }
        let best = times[warmup..].iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{}",
            serde_json::json!({ "what": "matmul", "n": n, "gflops": 2.0 * (n * n * n) as f64 / best / 1e9 })
        );
        return;
    }

    let (cnn, vit) = models(&model, size, head);
    let cfg = PretrainConfig {
        cnn: cnn.clone(),
        vit: vit.clone(),
        image_size: size,
        run: cass_core::train::run_config::RunConfig {
            backend,
            ..cass_core::train::run_config::RunConfig::new(batch, 1, 0)
        },
        lr_cnn: 1e-3,
        lr_vit: 1e-3,
        adam: Default::default(),
        schedule: Schedule::Constant,
        augment: Default::default(),
        cnn_weights: None,
        vit_weights: None,
        views: 1,
        view_batch_norm: Default::default(),
        collapse_guard: None,
        conv: serde_json::from_str(&format!("\"{}\"", arg(&args, "--conv", "auto")))
            .expect("--conv is auto, native or batched"),
        unknown: Default::default(),
    };
    let cfg = PretrainConfig {
        views,
        collapse_guard: guard.then_some(cass_core::ssl::cass::CollapseGuard {
            weight: 1.0,
            target: 0.5,
            covariance: 1.0,
        }),
        ..cfg
    };
    let mut trainer = CassTrainer::new(&cfg, &device);
    match arg(&args, "--towers", "default").as_str() {
        "default" => {}
        "serial" => trainer.parallel_towers = false,
        "parallel" => trainer.parallel_towers = true,
        other => panic!("--towers is serial or parallel, not {other}"),
    }
    let pixels: Vec<f32> = (0..views * batch * 3 * size * size)
        .map(|i| ((i * 2654435761usize) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let x = Tensor::<4>::from_data(TensorData::new(pixels, [views * batch, 3, size, size]), &device);
    if what == "breakdown" {
        // Where one CASS step's time goes: augmentation of the batch, forward of each network
        // (train mode), the loss, the backward, and each network's Adam update.
        let aug = cass_core::augment::AugmentConfig::default();
        let raw = Tensor::<4>::from_data(
            TensorData::new(vec![0.5f32; batch * 3 * size * size], [batch, 3, size, size]),
            &device,
        );
        let mut parts: Vec<(&str, Vec<f64>)> = [
            "augment",
            "forward_cnn",
            "forward_vit",
            "loss",
            "backward_cnn",
            "backward_vit",
            "adam_cnn",
            "adam_vit",
        ]
        .iter()
        .map(|n| (*n, Vec::new()))
        .collect();
        for i in 0..(warmup + steps) {
            let mut lap = Instant::now();
            let mut mark = |k: usize, parts: &mut Vec<(&str, Vec<f64>)>| {
                if i >= warmup {
                    parts[k].1.push(lap.elapsed().as_secs_f64());
                }
                lap = Instant::now();
            };
            let p = aug.sample(batch, i as u64, 1.0);
            let xa = cass_core::augment::apply(raw.clone(), Some(&p), size, &aug);
            let _ = xa.clone().sum().into_scalar::<f32>();
            mark(0, &mut parts);
            let xd = x.clone().autodiff();
            let r = trainer.cnn.forward(xd.clone());
            let _ = r.clone().sum().into_scalar::<f32>();
            mark(1, &mut parts);
            let t = trainer.vit.forward(xd);
            let _ = t.clone().sum().into_scalar::<f32>();
            mark(2, &mut parts);
            // The loss and its gradient with respect to each output, then each network's own
            // backward seeded with it (the split the engine's parallel step uses).
            let (r_leaf, t_leaf) = (r.clone().detach().require_grad(), t.clone().detach().require_grad());
            let g = cass_core::loss::cass_loss(r_leaf.clone(), t_leaf.clone()).backward();
            let (g_r, g_t) = (r_leaf.grad(&g).unwrap(), t_leaf.grad(&g).unwrap());
            let _ = g_r.clone().sum().into_scalar::<f32>();
            mark(3, &mut parts);
            let grads_cnn = r.mul(g_r.autodiff()).sum().backward();
            mark(4, &mut parts);
            let grads_vit = t.mul(g_t.autodiff()).sum().backward();
            mark(5, &mut parts);
            trainer.cnn = trainer.opt_cnn.step(1e-3, trainer.cnn.clone(), &grads_cnn);
            materialize_sync(&trainer.cnn);
            mark(6, &mut parts);
            trainer.vit = trainer.opt_vit.step(1e-3, trainer.vit.clone(), &grads_vit);
            materialize_sync(&trainer.vit);
            mark(7, &mut parts);
        }
        let medians: serde_json::Map<String, serde_json::Value> = parts
            .into_iter()
            .map(|(n, v)| (n.to_string(), median(v).1.into()))
            .collect();
        let total: f64 = medians.values().filter_map(|v| v.as_f64()).sum();
        println!(
            "{}",
            serde_json::json!({ "what": "breakdown", "model": model, "size": size, "batch": batch, "median_sec": medians, "total_sec": total })
        );
        return;
    }
    let mut times = Vec::with_capacity(steps);
    let (cnn_eval, vit_eval) = (trainer.cnn.valid(), trainer.vit.valid());
    for i in 0..(warmup + steps) {
        let t = Instant::now();
        match what.as_str() {
            "step" => {
                trainer.step(x.clone(), 1e-3, 1e-3);
            }
            "fwd-cnn" => {
                let _ = cnn_eval.forward(x.clone()).sum().into_scalar::<f32>();
            }
            "fwd-vit" => {
                let _ = vit_eval.forward(x.clone()).sum().into_scalar::<f32>();
            }
            other => panic!("unknown --what {other}"),
        }
        // Each step's time on stderr as it happens: a GPU run that autotunes and compiles kernels
        // in its first steps shows where its time went even when it is stopped.
        eprintln!("step {i}: {:.3} s", t.elapsed().as_secs_f64());
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let (min, med, max) = median(times);
    let fwd = match what.as_str() {
        "step" => 3.0 * (resnet_forward(&cnn, size) + vit_forward(&vit)),
        "fwd-cnn" => resnet_forward(&cnn, size),
        _ => vit_forward(&vit),
    } * (views * batch) as f64;
    println!(
        "{}",
        serde_json::json!({
            "impl": format!("cass-ssl (burn {})", backend_name(backend)),
            "towers": if trainer.parallel_towers { "parallel" } else { "serial" },
            "conv": arg(&args, "--conv", "auto"),
            "what": what, "model": model, "size": size, "batch": batch, "steps": steps,
            "views": views, "guard": guard, "precision": precision,
            "sec": { "min": min, "median": med, "max": max },
            "images_per_sec": batch as f64 / med,
            "flops_per_iter": fwd,
            "achieved_gflops": fwd / med / 1e9,
            "peak_rss_mib": peak_rss_mib(),
            "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        })
    );
}
