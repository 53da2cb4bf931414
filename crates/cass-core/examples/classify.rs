//! Top-5 ImageNet classes of the images in a dataset cache, with a ResNet-50 weights file that
//! declares its variant, preprocessing and labels (as `cass weights import` writes them). Used
//! by `parity/keras-imagenet-check.ts`.
//!
//! cargo run --example classify -- WEIGHTS.safetensors IMAGES.cassds

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::activation::softmax;
use cass_core::augment::{self, AugmentConfig};
use cass_core::data::upload;
use cass_core::data::{ImageSet, assemble};
use cass_core::models::ResNetConfig;
use cass_core::weights::{apply_declared_variant, load_timm, read_metadata};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (weights, images) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    let device = Device::flex();
    let mut cfg = ResNetConfig::resnet50(1000);
    let mut aug = AugmentConfig {
        enabled: false,
        ..Default::default()
    };
    apply_declared_variant(&weights, &mut cfg, &mut aug).expect("metadata");
    let labels: Vec<String> = read_metadata(&weights)
        .expect("metadata")
        .get("cass.labels")
        .map(|l| serde_json::from_str(l).expect("labels"))
        .unwrap_or_default();
    let net = load_timm(cfg.init(&device), &weights, &HashSet::new())
        .expect("weights")
        .valid();
    let set = Arc::new(ImageSet::open_cache(&images).expect("images"));
    let indices: Vec<usize> = (0..set.len).collect();
    let host = assemble(&set, &indices, None);
    let x = augment::apply(upload(&host, &set, &device), None, 224, &aug);
    let probs = softmax(net.forward(x), 1)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32");
    let out: Vec<serde_json::Value> = indices
        .iter()
        .map(|&i| {
            let row = &probs[i * 1000..(i + 1) * 1000];
            let mut order: Vec<usize> = (0..1000).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let name = set.index.names.get(i).cloned().unwrap_or_default();
            let top: Vec<serde_json::Value> = order[..5]
                .iter()
                .map(|&c| serde_json::json!({ "class": c, "label": labels.get(c), "p": row[c] }))
                .collect();
            serde_json::json!({ "image": name, "top5": top })
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}
