//! Using trained networks: restore one from a checkpoint folder, then evaluate it on labelled
//! data, embed images, or export it in timm's names.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use burn::prelude::*;

use crate::augment::{self, AugmentConfig};
use crate::checkpoint::{Checkpoint, CheckpointKind, read_json};
use crate::data::{ImageSet, Prefetcher, batch_positions, upload};
use crate::device::{BackendChoice, resolve};
use crate::error::CassError;
use crate::loss::ClassificationLoss;
use crate::metrics::{self, Metrics};
use crate::models::build::{build_network, load_into};
use crate::models::{Arch, Network, ResNetConfig, VitConfig};
use crate::ssl::Pretrained;
use crate::train::finetune::{FINETUNE_KIND, FinetuneState, Labeled, predict};

/// A network restored from a checkpoint directory, with what it needs to be fed.
pub struct Restored {
    pub net: Network,
    pub device: Device,
    pub image_size: usize,
    pub augment: AugmentConfig,
    pub num_classes: usize,
    pub softmax_scores: bool,
    /// The network's architecture (the one of `net`'s kind is the one restored).
    pub cnn: ResNetConfig,
    pub vit: VitConfig,
    /// Names of the classes of a fine-tuned classifier, in label order (empty when the training
    /// data had none, and for pre-training checkpoints).
    pub class_names: Vec<String>,
    /// What the folder held (kind, method, step), read once with the rest.
    pub checkpoint: Checkpoint,
}

/// Restores a fine-tuned checkpoint, or one network of a pre-training checkpoint (then `arch`
/// picks which), from any path [`Checkpoint::open`] accepts.
pub fn restore(path: &Path, arch: Option<Arch>, backend: BackendChoice) -> Result<Restored, CassError> {
    let ck = Checkpoint::open(path)?;
    let device = resolve(backend)?;
    let dir = &ck.dir;
    match ck.kind {
        CheckpointKind::Finetune => {
            let state_path = dir.join("state.json");
            let st: FinetuneState = serde_json::from_value(read_json(&state_path)?)
                .map_err(|e| CassError::data("bad-checkpoint", format!("unreadable state: {e}"), Some(&state_path)))?;
            if st.kind != FINETUNE_KIND {
                return Err(CassError::data(
                    "bad-checkpoint",
                    format!("unknown checkpoint kind {:?}", st.kind),
                    Some(&state_path),
                ));
            }
            let mut cnn = st.cnn.clone();
            let mut vit = st.vit.clone();
            cnn.num_classes = st.config.num_classes;
            vit.num_classes = st.config.num_classes;
            let net = build_network(st.config.arch, &cnn, &vit, &device, 0)?.with_conv(st.config.conv);
            Ok(Restored {
                net: load_into(net, &dir.join("model.safetensors"), &HashSet::new())?,
                device,
                image_size: st.config.image_size,
                augment: st.config.augment,
                num_classes: st.config.num_classes,
                softmax_scores: st.config.loss == ClassificationLoss::CrossEntropy,
                class_names: st.config.class_names.clone(),
                cnn,
                vit,
                checkpoint: ck,
            })
        }
        CheckpointKind::Pretrain => {
            let pre = Pretrained::read(dir)?;
            let arch = match (arch, pre.networks().as_slice()) {
                (Some(a), _) => a,
                // A single-backbone checkpoint (DINO) has only one to pick.
                (None, [only]) => *only,
                (None, _) => {
                    return Err(CassError::config(
                        "arch",
                        "a pre-training checkpoint holds two networks: say `cnn` or `vit`",
                    ));
                }
            };
            let (cnn, vit) = pre.shapes(arch, dir)?;
            let net = build_network(arch, &cnn, &vit, &device, 0)?.with_conv(pre.conv);
            let num_classes = match arch {
                Arch::Cnn => cnn.num_classes,
                Arch::Vit => vit.num_classes,
            };
            Ok(Restored {
                net: load_into(net, &dir.join(format!("{}.safetensors", arch.name())), &HashSet::new())?,
                device,
                image_size: pre.image_size,
                augment: pre.augment,
                num_classes,
                softmax_scores: false,
                class_names: Vec::new(),
                cnn,
                vit,
                checkpoint: ck,
            })
        }
    }
}

/// Exports one network of a checkpoint directory (pre-training: `arch` picks it; fine-tuning:
/// its network) as timm-compatible safetensors, `num_batches_tracked` set to the steps trained.
pub fn export(dir: &Path, arch: Option<Arch>, out: &Path) -> Result<(), CassError> {
    let r = restore(dir, arch, BackendChoice::Cpu)?;
    let steps = r.checkpoint.step.unwrap_or(0) as i64;
    match &r.net {
        Network::Cnn(m) => crate::weights::export_timm(m, out, steps),
        Network::Vit(m) => crate::weights::export_timm(m, out, steps),
    }
}

/// Every metric of a fine-tuned checkpoint on labelled data.
pub fn evaluate(dir: &Path, data: &Labeled, batch_size: usize, backend: BackendChoice) -> Result<Metrics, CassError> {
    let r = restore(dir, None, backend)?;
    data.check("data", r.num_classes)?;
    let (logits, targets) = predict(&r.net, data, r.image_size, batch_size.max(1), &r.augment, &r.device);
    Ok(metrics::compute(&logits, &targets, r.num_classes, r.softmax_scores))
}

/// Pooled embeddings (`forward_features`) of `indices`, row-major `[n, dim]`.
pub fn embed(
    dir: &Path,
    arch: Option<Arch>,
    set: Arc<ImageSet>,
    indices: Vec<usize>,
    batch_size: usize,
    backend: BackendChoice,
) -> Result<(Vec<f32>, usize), CassError> {
    let r = restore(dir, arch, backend)?;
    let indices: Vec<usize> = if indices.is_empty() {
        (0..set.len).collect()
    } else {
        indices
    };
    set.check_indices(&indices, "indices")?;
    let device = r.device.clone();
    let net = r.net.valid();
    let batches = batch_positions(indices.len(), batch_size.max(1), false);
    let mut out = Vec::new();
    let mut dim = 0;
    for host in Prefetcher::spawn(set.clone(), Arc::new(indices), None, batches, 2) {
        let x = augment::apply(upload(&host, &set, &device), None, r.image_size, &r.augment);
        let f = net.forward_features(x);
        dim = f.dims()[1];
        out.extend(
            f.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32 features"),
        );
    }
    Ok((out, dim))
}
