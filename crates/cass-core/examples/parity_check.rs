//! Compares our forward pass with timm's for a model written by `parity/make_fixtures.py --full`
//! (`<base>.json`, `<base>.safetensors`, `<base>.io.safetensors`). Prints one JSON object with
//! the largest differences relative to the largest reference value.
//!
//! cargo run --example parity_check -- /tmp/dir/resnet50

use std::collections::HashSet;
use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::TensorData;
use cass_core::models::{BlockKind, Network, ResNetConfig, VitConfig};
use cass_core::weights::{load_timm, load_timm_vit, read_tensors};

fn main() {
    let base = PathBuf::from(std::env::args().nth(1).expect("usage: parity_check <base path>"));
    let with = |ext: &str| PathBuf::from(format!("{}{ext}", base.display()));
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(with(".json")).expect("config")).expect("json");
    let u = |k: &str| cfg[k].as_u64().expect(k) as usize;
    let device = Device::flex();
    let none = HashSet::new();
    let net = if cfg["kind"] == "resnet" {
        let block = if cfg["block"] == "Basic" {
            BlockKind::Basic
        } else {
            BlockKind::Bottleneck
        };
        let l: Vec<usize> = cfg["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|v| v.as_u64().expect("n") as usize)
            .collect();
        let c = ResNetConfig::new(block, [l[0], l[1], l[2], l[3]])
            .with_base_width(u("base_width"))
            .with_num_classes(u("num_classes"));
        Network::Cnn(load_timm(c.init(&device), &with(".safetensors"), &none).expect("weights"))
    } else {
        let c = VitConfig::new(u("image_size"), u("embed_dim"), u("depth"), u("num_heads"))
            .with_patch_size(u("patch_size"))
            .with_num_classes(u("num_classes"));
        Network::Vit(load_timm_vit(c.init(&device), &with(".safetensors"), &none).expect("weights"))
    };
    let io = read_tensors(&with(".io.safetensors")).expect("io");
    let x = Tensor::<4>::from_data(
        TensorData::new(io["input"].data.clone(), io["input"].shape.clone()),
        &device,
    );
    let net = net.valid();
    let rel = |ours: Tensor<2>, reference: &[f32]| {
        let ours = ours.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32");
        let scale = reference.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        ours.iter()
            .zip(reference)
            .fold(0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()))
            / scale
    };
    let logits = rel(net.forward(x.clone()), &io["logits"].data);
    let features = rel(net.forward_features(x), &io["features"].data);
    println!(
        "{}",
        serde_json::json!({ "logits_rel_err": logits, "features_rel_err": features, "within_1e-4": logits <= 1e-4 && features <= 1e-4 })
    );
}
