//! Median forward and backward time of each building block of a ViT layer on the CPU, at the
//! shapes of the `cpu-small` ViT at batch 64 (`[64, 17, 96]`): where a ViT step's time goes.
//!
//! cargo run --example vit_ops
use burn::nn::{LayerNormConfig, LinearConfig};
use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Distribution, activation::gelu};
use std::time::Instant;

/// Times `f` (forward) and the backward of `sum(f())` to `x`; prints the medians of 10 runs.
fn time<F: Fn() -> Tensor<3>>(name: &str, x: &Tensor<3>, f: F) {
    let mut fw = vec![];
    let mut bw = vec![];
    for i in 0..12 {
        let t = Instant::now();
        let y = f();
        let _ = y.clone().sum().into_scalar::<f32>();
        let a = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let g = y.sum().backward();
        let _ = x.grad(&g).unwrap().sum().into_scalar::<f32>();
        let b = t.elapsed().as_secs_f64();
        if i >= 2 {
            fw.push(a);
            bw.push(b);
        }
    }
    fw.sort_by(f64::total_cmp);
    bw.sort_by(f64::total_cmp);
    println!("{name:>12}: fwd {:.5} bwd {:.5}", fw[5], bw[5]);
}

fn main() {
    let d = Device::flex().autodiff();
    let (b, n, dim, h) = (64usize, 17usize, 96usize, 4usize);
    let x = Tensor::<3>::random([b, n, dim], Distribution::Normal(0.0, 1.0), &d).require_grad();
    let ln = LayerNormConfig::new(dim).with_epsilon(1e-6).init(&d);
    let fc1 = LinearConfig::new(dim, 4 * dim).init(&d);
    let qkv = LinearConfig::new(dim, 3 * dim).init(&d);
    time("layernorm", &x, || ln.forward(x.clone()));
    // GELU runs on the MLP's hidden width, 4 x dim.
    let hidden = Tensor::<3>::random([b, n, 4 * dim], Distribution::Normal(0.0, 1.0), &d).require_grad();
    time("burn gelu", &hidden, || gelu(hidden.clone()));
    time("our gelu", &hidden, || cass_core::models::gelu::gelu(hidden.clone()));
    time("linear96x384", &x, || fc1.forward(x.clone()));
    time("linear96x288", &x, || qkv.forward(x.clone()));
    time("attention", &x, || {
        let q = x.clone().reshape([b, n, h, dim / h]).swap_dims(1, 2);
        attention(q.clone(), q.clone(), q, None, None, AttentionModuleOptions::default())
            .swap_dims(1, 2)
            .reshape([b, n, dim])
    });
    time("add", &x, || x.clone() + x.clone());
}
