//! Compares our forward pass with timm's for a model written by `parity/make_fixtures.py --full`
//! (`<base>.json`, `<base>.safetensors`, `<base>.io.safetensors`). Prints one JSON object with
//! the largest differences relative to the largest reference value.
//!
//! cargo run --example parity_check -- /tmp/dir/resnet50

use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::TensorData;
use cass_core::weights::{ParityModel, read_tensors};

fn main() {
    let base = PathBuf::from(std::env::args().nth(1).expect("usage: parity_check <base path>"));
    let with = |ext: &str| PathBuf::from(format!("{}{ext}", base.display()));
    let device = Device::flex();
    let net = ParityModel::read(&with(".json"))
        .expect("model description")
        .load(&with(".safetensors"), &device)
        .expect("weights");
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
