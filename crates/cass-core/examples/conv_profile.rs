//! Where a training step's convolutions spend their time on the CPU, per convolution and per
//! phase: the output, the input gradient, the weight gradient. Each gradient is timed as a
//! forward and backward pass through the autodiff device where only its tensor asks for a
//! gradient, less the forward pass's time. Shapes are those
//! a ResNet's training forward pass gives its convolutions. `npm run bench` prints it after its
//! table.
//!
//! cargo run --release --example conv_profile --features testing -- --model resnet18 --size 96 --batch 16 --reps 5 [--only layer4]

use std::time::Instant;

use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::Distribution;
use cass_core::models::host_conv::host_conv2d;
use cass_core::models::{BlockKind, ResNetConfig};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// One convolution of the network: its name, weight, stride, padding and input shape.
struct Layer {
    name: String,
    weight: Tensor<4>,
    stride: usize,
    pad: usize,
    input: [usize; 4],
}

fn padding(conv: &Conv2d) -> usize {
    match conv.padding {
        burn::nn::PaddingConfig2d::Explicit(p, ..) => p,
        _ => 0,
    }
}

fn out_side(side: usize, k: usize, stride: usize, pad: usize) -> usize {
    (side + 2 * pad - k) / stride + 1
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size: usize = arg(&args, "--size", "32").parse().unwrap();
    let batch: usize = arg(&args, "--batch", "16").parse().unwrap();
    let reps: usize = arg(&args, "--reps", "5").parse().unwrap();
    let only = arg(&args, "--only", "");
    let cfg = match arg(&args, "--model", "cpu-small").as_str() {
        "cpu-small" => ResNetConfig::new(BlockKind::Basic, [1, 1, 1, 1]).with_base_width(16),
        "resnet18" => ResNetConfig::resnet18(2),
        other => panic!("unknown model {other}"),
    };
    let device = Device::flex();
    let net = cfg.with_num_classes(2).init(&device);
    // The convolutions in the order the forward pass meets them, with their input shapes.
    let mut layers = Vec::new();
    let mut add = |name: String, conv: &Conv2d, input: [usize; 4]| -> [usize; 4] {
        let [c_out, _, k, _] = conv.weight.dims();
        let (stride, pad) = (conv.stride[0], padding(conv));
        let out = [
            input[0],
            c_out,
            out_side(input[2], k, stride, pad),
            out_side(input[3], k, stride, pad),
        ];
        layers.push(Layer {
            name,
            weight: conv.weight.val(),
            stride,
            pad,
            input,
        });
        out
    };
    let mut shape = add("stem".into(), &net.conv1, [batch, 3, size, size]);
    shape = [
        shape[0],
        shape[1],
        out_side(shape[2], 3, 2, 1),
        out_side(shape[3], 3, 2, 1),
    ];
    for (stage, blocks) in [&net.layer1, &net.layer2, &net.layer3, &net.layer4]
        .into_iter()
        .enumerate()
    {
        for (i, b) in blocks.iter().enumerate() {
            let input = shape;
            if let Some(d) = &b.downsample {
                add(format!("layer{}.{i}.downsample", stage + 1), &d.conv, input);
            }
            let mid = add(format!("layer{}.{i}.conv1", stage + 1), &b.conv1, input);
            shape = add(format!("layer{}.{i}.conv2", stage + 1), &b.conv2, mid);
        }
    }
    let time = |f: &mut dyn FnMut()| -> f64 {
        f();
        let mut best = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t0 = Instant::now();
            f();
            best.push(t0.elapsed().as_secs_f64());
        }
        best.sort_by(f64::total_cmp);
        best[reps / 2]
    };
    println!(
        "{:<22} {:>18} {:>9} {:>9} {:>9}   (median ms; GFLOP/s of all three)",
        "convolution", "input", "output", "input grad", "weight grad"
    );
    let mut totals = [0.0f64; 3];
    let mut flops = 0.0;
    for l in layers.iter().filter(|l| l.name.contains(&only)) {
        let x = Tensor::<4>::random(l.input, Distribution::Default, &device);
        let (s, p) = (l.stride, l.pad);
        let fwd = time(&mut || {
            let _ = host_conv2d(x.clone(), l.weight.clone(), s, p).into_data();
        });
        let dx = time(&mut || {
            let y = host_conv2d(x.clone().autodiff().require_grad(), l.weight.clone().autodiff(), s, p);
            let _ = y.sum().backward();
        });
        let dw = time(&mut || {
            let y = host_conv2d(x.clone().autodiff(), l.weight.clone().autodiff().require_grad(), s, p);
            let _ = y.sum().backward();
        });
        let (dx, dw) = ((dx - fwd).max(0.0), (dw - fwd).max(0.0));
        let [c_out, c_in, k, _] = l.weight.dims();
        let (ho, wo) = (out_side(l.input[2], k, s, p), out_side(l.input[3], k, s, p));
        let f = 2.0 * (l.input[0] * c_out * ho * wo * c_in * k * k) as f64;
        flops += 3.0 * f;
        let shape = format!("{:?}", l.input);
        println!(
            "{:<22} {:>18} {:>9.2} {:>9.2} {:>9.2}   {:.0}",
            l.name,
            shape,
            fwd * 1e3,
            dx * 1e3,
            dw * 1e3,
            3.0 * f / (fwd + dx + dw) / 1e9
        );
        for (t, v) in totals.iter_mut().zip([fwd, dx, dw]) {
            *t += v;
        }
    }
    let all: f64 = totals.iter().sum();
    println!(
        "{:<22} {:>18} {:>9.2} {:>9.2} {:>9.2}   {:.0}",
        "all",
        "",
        totals[0] * 1e3,
        totals[1] * 1e3,
        totals[2] * 1e3,
        flops / all / 1e9
    );
}
