//! Parity with timm: the fixtures `parity/make_fixtures.py` writes (a model description, its
//! weights, an input and timm's outputs) and our forward pass against them. The tests use it, and
//! so do the parity tools in `examples/` (with the `testing` feature), on any device.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use crate::checkpoint::{HostTensor, read_safetensors};
use crate::error::CassError;
use crate::weights::{load_timm, load_timm_vit};

/// The architecture a parity fixture describes (`<case>.json`, written by
/// `parity/make_fixtures.py`), shared by the parity tests and `examples/parity_check.rs`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ParityModel {
    Resnet {
        block: crate::models::BlockKind,
        layers: [usize; 4],
        base_width: usize,
        num_classes: usize,
    },
    Vit {
        image_size: usize,
        patch_size: usize,
        embed_dim: usize,
        depth: usize,
        num_heads: usize,
        num_classes: usize,
    },
}

impl ParityModel {
    pub fn read(path: &Path) -> Result<Self, CassError> {
        let bytes = std::fs::read(path).map_err(|e| CassError::io(path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| CassError::data("bad-fixture", format!("unreadable model description: {e}"), Some(path)))
    }

    /// The ResNet config, if this describes a ResNet.
    pub fn resnet(&self) -> Option<crate::models::ResNetConfig> {
        match *self {
            ParityModel::Resnet {
                block,
                layers,
                base_width,
                num_classes,
            } => Some(
                crate::models::ResNetConfig::new(block, layers)
                    .with_base_width(base_width)
                    .with_num_classes(num_classes),
            ),
            ParityModel::Vit { .. } => None,
        }
    }

    /// The ViT config, if this describes a ViT.
    pub fn vit(&self) -> Option<crate::models::VitConfig> {
        match *self {
            ParityModel::Vit {
                image_size,
                patch_size,
                embed_dim,
                depth,
                num_heads,
                num_classes,
            } => Some(
                crate::models::VitConfig::new(image_size, embed_dim, depth, num_heads)
                    .with_patch_size(patch_size)
                    .with_num_classes(num_classes),
            ),
            ParityModel::Resnet { .. } => None,
        }
    }

    /// That network with timm weights loaded strictly (`pos_embed` resampled if needed).
    pub fn load(&self, weights: &Path, device: &burn::prelude::Device) -> Result<crate::models::Network, CassError> {
        use crate::models::Network;
        let none = HashSet::new();
        Ok(match (self.resnet(), self.vit()) {
            (Some(c), _) => Network::Cnn(load_timm(c.init(device), weights, &none)?),
            (_, Some(c)) => Network::Vit(load_timm_vit(c.init(device), weights, &none)?),
            (None, None) => unreachable!("a parity model is a ResNet or a ViT"),
        })
    }
}

/// Reads named float tensors (for comparisons in tests and tools).
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, HostTensor>, CassError> {
    read_safetensors(path)
}

/// Largest differences between our forward pass and timm's for a parity model written by
/// `parity/make_fixtures.py` (`<base>.json`, `<base>.safetensors`, `<base>.io.safetensors`),
/// relative to the largest reference value: `(logits, features)`.
pub fn parity_errors(base: &Path, device: &burn::prelude::Device) -> Result<(f64, f64), CassError> {
    use burn::prelude::*;
    let with = |ext: &str| std::path::PathBuf::from(format!("{}{ext}", base.display()));
    let net = ParityModel::read(&with(".json"))?
        .load(&with(".safetensors"), device)?
        .valid();
    let io = read_tensors(&with(".io.safetensors"))?;
    let field = |name: &str| {
        io.get(name).ok_or_else(|| {
            CassError::data(
                "bad-weights",
                format!("no `{name}` tensor"),
                Some(&with(".io.safetensors")),
            )
        })
    };
    let input = field("input")?;
    let x = Tensor::<4>::from_data(
        burn::tensor::TensorData::new(input.data.clone(), input.shape.clone()),
        device,
    );
    let rel = |ours: Tensor<2>, reference: &[f32]| {
        let ours = ours.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32");
        let scale = reference.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
        ours.iter()
            .zip(reference)
            .fold(0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()))
            / scale
    };
    let logits = rel(net.forward(x.clone()), &field("logits")?.data);
    let features = rel(net.forward_features(x), &field("features")?.data);
    Ok((logits, features))
}
