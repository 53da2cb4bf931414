//! Downstream protocol of the CASS paper: replace the head by a new linear layer, fine-tune
//! every parameter on the labelled fraction, stop early on validation loss (patience 5), keep
//! the best-validation weights. Runs in the one training loop ([`crate::train::run`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::prelude::*;

use crate::augment::{self, AugmentConfig};
use crate::checkpoint::{self, Checkpoint};
use crate::data::{HostBatch, ImageSet, Prefetcher, batch_positions, upload};
use crate::device::{resolve_explained, within_device_limits};
use crate::error::CassError;
use crate::events::{CancelToken, Event, Observer};
use crate::loss::{ClassificationLoss, class_weights};
use crate::metrics;
use crate::models::build::{build_network, load_into};
use crate::models::{Arch, Network, ResNetConfig, VitConfig, init_seeded};
use crate::ssl::Pretrained;
use crate::train::adam::Adam;
use crate::train::run::{self, EpochEnd, Learner, Plan, Progress, StepReport, step_seed};
use crate::weights::{apply_declared_variant, head_names, load_timm, load_timm_vit};

pub use super::finetune_config::{
    EpochRecord, FINETUNE_KIND, FinetuneConfig, FinetuneOutcome, FinetuneState, Init, Labeled,
};

fn mean_loss(
    loss: &ClassificationLoss,
    logits: &[f32],
    targets: &[usize],
    weights: &[f32],
    c: usize,
    device: &Device,
) -> f64 {
    let n = targets.len();
    let l = Tensor::<2>::from_data(burn::tensor::TensorData::new(logits.to_vec(), [n, c]), device);
    let t = Tensor::<1, Int>::from_data(
        burn::tensor::TensorData::new(targets.iter().map(|&v| v as i64).collect::<Vec<_>>(), [n]),
        device,
    );
    let w = Tensor::<1>::from_floats(weights, device);
    loss.forward(l, t, w).into_scalar::<f32>() as f64
}

fn save_finetuned(net: &Network, state: &FinetuneState, dir: &Path) -> Result<(), CassError> {
    let staging = checkpoint::staging_dir(dir)?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "cass-ssl".to_string());
    meta.insert("arch".to_string(), state.config.arch.name().to_string());
    let path = staging.join("model.safetensors");
    match net {
        Network::Cnn(m) => checkpoint::save_weights(m, &path, meta)?,
        Network::Vit(m) => checkpoint::save_weights(m, &path, meta)?,
    }
    checkpoint::write_atomic(
        &staging.join("state.json"),
        &serde_json::to_vec_pretty(state).expect("json"),
    )?;
    checkpoint::publish_dir(&staging, dir)
}

/// One network being fine-tuned inside the training loop: a step is the classification loss
/// on an augmented labelled batch; an epoch's end validates, keeps the best weights and stops
/// early after `patience` epochs without improvement.
struct FinetuneLearner<'a> {
    cfg: &'a FinetuneConfig,
    /// The fine-tuning augmentation, with the pre-trained networks' input preparation.
    augment: AugmentConfig,
    net: Network,
    adam: Adam,
    /// Per-class loss weights, on the host (validation loss) and on the autodiff device.
    weights: Vec<f32>,
    weights_t: Tensor<1>,
    train_set: &'a ImageSet,
    val: &'a Labeled,
    device: Device,
    ad: Device,
    aspect: f64,
    /// The architecture actually trained (from the pre-training checkpoint when there was one).
    cnn: ResNetConfig,
    vit: VitConfig,
    best_dir: PathBuf,
    best: Option<(u64, f64, Network)>,
    history: Vec<EpochRecord>,
    since_best: u64,
}

impl Learner for FinetuneLearner<'_> {
    fn loss_name(&self) -> &str {
        "fine-tuning loss"
    }

    fn step(&mut self, batch: &HostBatch, step: u64, total: u64) -> StepReport {
        let cfg = self.cfg;
        let params = self.augment.sample(batch.size, step_seed(cfg.seed, step), self.aspect);
        let x = augment::apply(
            upload(batch, self.train_set, &self.device),
            Some(&params),
            cfg.image_size,
            &self.augment,
        )
        .autodiff();
        let y = Tensor::<1, Int>::from_data(
            burn::tensor::TensorData::new(batch.labels.clone(), [batch.size]),
            &self.ad,
        );
        let loss = cfg.loss.forward(self.net.forward(x), y, self.weights_t.clone());
        let value = loss.clone().into_scalar::<f32>() as f64;
        let lr = cfg.schedule.lr(cfg.lr, step, total);
        if value.is_finite() {
            let grads = loss.backward();
            self.net = self.adam.step(lr, self.net.clone(), &grads);
        }
        StepReport {
            loss: value,
            parts: vec![("classification".into(), value)],
            spread: Default::default(),
            lr,
        }
    }

    fn end_epoch(&mut self, epoch: u64, train_loss: f64, _full: bool, _at: &Progress) -> Result<EpochEnd, CassError> {
        let cfg = self.cfg;
        let (logits, targets) = predict(
            &self.net,
            self.val,
            cfg.image_size,
            cfg.batch_size,
            &self.augment,
            &self.device,
        );
        let val_loss = mean_loss(
            &cfg.loss,
            &logits,
            &targets,
            &self.weights,
            cfg.num_classes,
            &self.device,
        );
        self.history.push(EpochRecord {
            epoch,
            train_loss,
            val_loss,
        });
        let improved = self.best.as_ref().is_none_or(|(_, b, _)| val_loss < *b);
        let mut end = EpochEnd {
            val_loss: Some(val_loss),
            best: improved,
            ..Default::default()
        };
        if improved {
            self.best = Some((epoch, val_loss, self.net.valid()));
            self.since_best = 0;
            let state = FinetuneState {
                version: checkpoint::STATE_VERSION,
                kind: FINETUNE_KIND.into(),
                config: FinetuneConfig {
                    augment: self.augment,
                    ..cfg.clone()
                },
                cnn: self.cnn.clone(),
                vit: self.vit.clone(),
                best_epoch: epoch,
                best_val_loss: val_loss,
                history: self.history.clone(),
            };
            save_finetuned(&self.net, &state, &self.best_dir)?;
            end.saved = Some(self.best_dir.clone());
        } else {
            self.since_best += 1;
            end.stop = self.since_best >= cfg.patience;
        }
        Ok(end)
    }

    fn save(&mut self, _at: &Progress) -> Result<Option<PathBuf>, CassError> {
        Ok(None)
    }
}

/// Class names are kept in `state.json` and answered with every prediction: one per class, short
/// and distinct, or none at all.
fn check_class_names(names: &[String], num_classes: usize) -> Result<(), CassError> {
    const MAX_NAME: usize = 256;
    if names.is_empty() {
        return Ok(());
    }
    if names.len() != num_classes {
        return Err(CassError::config(
            "class_names",
            format!("has {} names for {num_classes} classes", names.len()),
        ));
    }
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() || n.len() > MAX_NAME || n.chars().any(char::is_control) {
            return Err(CassError::config(
                format!("class_names[{i}]"),
                format!("must be 1 to {MAX_NAME} bytes without control characters"),
            ));
        }
        if names[..i].contains(n) {
            return Err(CassError::config(format!("class_names[{i}]"), format!("repeats {n:?}")));
        }
    }
    Ok(())
}

/// Fine-tunes one network on `train`, early-stopping on `val`, and writes the best weights to
/// `out_dir/best`.
pub fn finetune(
    cfg: &FinetuneConfig,
    train: &Labeled,
    val: &Labeled,
    out_dir: &Path,
    observer: &mut dyn Observer,
    cancel: &CancelToken,
) -> Result<FinetuneOutcome, CassError> {
    if cfg.batch_size < 2 {
        return Err(CassError::config(
            "batch_size",
            "must be at least 2 (BatchNorm uses batch statistics)",
        ));
    }
    if cfg.num_classes < 2 {
        return Err(CassError::config("num_classes", "must be at least 2"));
    }
    if cfg.max_epochs == 0 {
        return Err(CassError::config("max_epochs", "must be at least 1"));
    }
    check_class_names(&cfg.class_names, cfg.num_classes)?;
    train.check("train", cfg.num_classes)?;
    val.check("val", cfg.num_classes)?;
    let mut counts = vec![0usize; cfg.num_classes];
    for &l in &train.labels {
        counts[l as usize] += 1;
    }
    let weights = class_weights(&counts, cfg.class_weighting).map_err(|m| {
        CassError::data(
            "empty-class",
            format!("training labels: {m}"),
            train.set.source.as_deref(),
        )
    })?;
    let _lock = checkpoint::OutputLock::acquire(out_dir)?;
    let (device, chosen) = resolve_explained(cfg.backend)?;
    observer.event(&Event::Device {
        backend: chosen.backend.into(),
        reason: chosen.reason,
    });
    let ad = device.clone().autodiff();
    let mut augment_cfg = cfg.augment;

    let (cnn_cfg, vit_cfg, net) = match &cfg.init {
        Init::Random => {
            let mut vit = cfg.vit.clone();
            vit.image_size = cfg.image_size;
            (
                cfg.cnn.clone(),
                vit.clone(),
                build_network(cfg.arch, &cfg.cnn, &vit, &ad, cfg.seed)?,
            )
        }
        Init::Weights(path) => {
            let (mut cnn, mut vit) = (cfg.cnn.clone(), cfg.vit.clone());
            vit.image_size = cfg.image_size;
            if cfg.arch == Arch::Cnn {
                apply_declared_variant(path, &mut cnn, &mut augment_cfg)?;
            }
            let net = build_network(cfg.arch, &cnn, &vit, &ad, cfg.seed)?;
            let net = match net {
                Network::Cnn(m) => Network::Cnn(load_timm(m, path, &head_names("fc"))?),
                Network::Vit(m) => Network::Vit(load_timm_vit(m, path, &head_names("head"))?),
            };
            (cnn, vit, net)
        }
        Init::Pretrained(path) => {
            // The output folder of a pre-training or its checkpoint folder.
            let dir = &Checkpoint::open(path)?.dir;
            let pre = Pretrained::read(dir)?;
            // The pre-trained networks were trained on inputs prepared this way.
            augment_cfg.mean = pre.augment.mean;
            augment_cfg.std = pre.augment.std;
            augment_cfg.channel_order = pre.augment.channel_order;
            let (c, v) = pre.shapes(cfg.arch, dir)?;
            if cfg.arch == Arch::Vit && v.image_size != cfg.image_size {
                return Err(CassError::config(
                    "image_size",
                    format!(
                        "is {} but the pre-trained ViT was built for {}",
                        cfg.image_size, v.image_size
                    ),
                ));
            }
            let net = build_network(cfg.arch, &c, &v, &ad, cfg.seed)?;
            let file = dir.join(format!("{}.safetensors", cfg.arch.name()));
            (c, v, load_into(net, &file, &HashSet::new())?)
        }
    };
    // The network fits (build_network checked it); one batch of its activations must too.
    crate::models::budget::check_network(cfg.arch, &cnn_cfg, &vit_cfg, cfg.image_size, cfg.batch_size)?;
    let net = init_seeded(&ad, cfg.seed.wrapping_add(2), |d| net.with_new_head(cfg.num_classes, d)).with_conv(cfg.conv);
    let weights_t = Tensor::<1>::from_floats(weights.as_slice(), &ad);

    // Keep a last batch of at least 2 images (BatchNorm); drop a single leftover image.
    let plan = Plan {
        set: train.set.clone(),
        samples: Arc::new(train.indices.clone()),
        labels: Some(Arc::new(train.labels.clone())),
        batch_size: cfg.batch_size,
        drop_last: train.indices.len() % cfg.batch_size == 1,
        seed: cfg.seed,
        total_steps: 0,
        checkpoint_every: None,
    };
    let batches_per_epoch = plan.batches_per_epoch();
    if batches_per_epoch == 0 {
        return Err(CassError::config("train.indices", "needs at least 2 labelled images"));
    }
    let plan = Plan {
        total_steps: cfg.max_epochs * batches_per_epoch,
        ..plan
    };
    let mut learner = FinetuneLearner {
        cfg,
        augment: augment_cfg,
        net,
        adam: Adam::new(cfg.adam),
        weights,
        weights_t,
        train_set: &train.set,
        val,
        aspect: train.set.width as f64 / train.set.height as f64,
        device,
        ad,
        cnn: cnn_cfg,
        vit: vit_cfg,
        best_dir: out_dir.join("best"),
        best: None,
        history: Vec::new(),
        since_best: 0,
    };
    let end = within_device_limits(|| run::run(&plan, &mut learner, 0, Vec::new(), observer, cancel))?;
    let Some((best_epoch, best_val_loss, best_net)) = learner.best else {
        return Err(CassError::data(
            "cancelled-before-validation",
            "fine-tuning was cancelled before its first validation",
            None,
        ));
    };
    let (logits, targets) = predict(
        &best_net,
        val,
        cfg.image_size,
        cfg.batch_size,
        &learner.augment,
        &learner.device,
    );
    let val_metrics = metrics::compute(
        &logits,
        &targets,
        cfg.num_classes,
        cfg.loss == ClassificationLoss::CrossEntropy,
    );
    Ok(FinetuneOutcome {
        status: end.status,
        best_epoch,
        best_val_loss,
        val_metrics,
        history: learner.history,
        checkpoint: learner.best_dir,
    })
}

#[cfg(test)]
#[path = "finetune_tests.rs"]
mod tests;

/// All logits of `data` in evaluation mode, and the targets.
pub(crate) fn predict(
    net: &Network,
    data: &Labeled,
    image_size: usize,
    batch_size: usize,
    aug: &AugmentConfig,
    device: &Device,
) -> (Vec<f32>, Vec<usize>) {
    let net = net.valid();
    let samples = Arc::new(data.indices.clone());
    let labels = Arc::new(data.labels.clone());
    let batches = batch_positions(samples.len(), batch_size, false);
    let mut logits = Vec::new();
    let mut targets = Vec::new();
    for host in Prefetcher::spawn(data.set.clone(), samples, Some(labels), batches, 2) {
        let x = augment::apply(upload(&host, &data.set, device), None, image_size, aug);
        let out = net.forward(x);
        logits.extend(
            out.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32 logits"),
        );
        targets.extend(host.labels.iter().map(|&l| l as usize));
    }
    (logits, targets)
}
