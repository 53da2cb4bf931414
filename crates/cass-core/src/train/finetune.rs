//! Downstream protocol of the CASS paper: replace the head by a new linear layer, fine-tune
//! every parameter on the labelled fraction, stop early on validation loss (patience 5), keep
//! the best-validation weights. Also evaluation and embedding of a trained network.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::augment::{self, AugmentConfig};
use crate::checkpoint;
use crate::data::{ImageSet, Prefetcher, batch_positions};
use crate::device::{BackendChoice, resolve};
use crate::error::CassError;
use crate::events::{CancelToken, Event, Observer};
use crate::loss::{ClassWeighting, ClassificationLoss, class_weights};
use crate::metrics::{self, Metrics};
use crate::models::{Arch, Network, ResNetConfig, VitConfig, init_seeded};
use crate::ssl::cass::{Status, epoch_order, read_state, step_seed, upload};
use crate::train::adam::{Adam, AdamConfig};
use crate::train::schedule::Schedule;

/// Where the fine-tuned network starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Random initialisation (the baseline).
    Random,
    /// The pre-trained weights in a CASS pre-training checkpoint directory.
    Pretrained(PathBuf),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    pub arch: Arch,
    pub init: Init,
    /// Architectures for `Init::Random` (a pre-trained checkpoint brings its own).
    pub cnn: ResNetConfig,
    pub vit: VitConfig,
    pub num_classes: usize,
    pub image_size: usize,
    pub batch_size: usize,
    pub max_epochs: u64,
    pub lr: f64,
    #[serde(default)]
    pub adam: AdamConfig,
    pub schedule: Schedule,
    pub loss: ClassificationLoss,
    pub class_weighting: ClassWeighting,
    /// Epochs without a better validation loss before stopping.
    pub patience: u64,
    pub seed: u64,
    #[serde(default)]
    pub augment: AugmentConfig,
    #[serde(default)]
    pub backend: BackendChoice,
}

/// Labelled samples: `indices[k]` into the image set has class `labels[k]`.
#[derive(Debug, Clone)]
pub struct Labeled {
    pub set: Arc<ImageSet>,
    pub indices: Vec<usize>,
    pub labels: Vec<i64>,
}

impl Labeled {
    fn check(&self, field: &str, num_classes: usize) -> Result<(), CassError> {
        if self.indices.len() != self.labels.len() {
            return Err(CassError::config(
                format!("{field}.labels"),
                format!("has {} entries for {} images", self.labels.len(), self.indices.len()),
            ));
        }
        if self.indices.is_empty() {
            return Err(CassError::config(format!("{field}.indices"), "no images given"));
        }
        self.set.check_indices(&self.indices, &format!("{field}.indices"))?;
        if let Some((k, l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, l)| **l < 0 || **l as usize >= num_classes)
        {
            return Err(CassError::data(
                "unknown-label",
                format!("{field}.labels[{k}] = {l} is not a class in 0..{num_classes}"),
                self.set.source.as_deref(),
            ));
        }
        Ok(())
    }
}

/// One epoch of the fine-tuning history.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EpochRecord {
    pub epoch: u64,
    pub train_loss: f64,
    pub val_loss: f64,
}

/// `state.json` of a fine-tuned checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneState {
    pub kind: String,
    pub config: FinetuneConfig,
    /// The architecture actually trained (from the pre-training checkpoint when there was one).
    pub cnn: ResNetConfig,
    pub vit: VitConfig,
    pub best_epoch: u64,
    pub best_val_loss: f64,
    pub history: Vec<EpochRecord>,
}

pub const FINETUNE_KIND: &str = "cass-finetune";

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FinetuneOutcome {
    pub status: Status,
    pub best_epoch: u64,
    pub best_val_loss: f64,
    pub val_metrics: Metrics,
    pub history: Vec<EpochRecord>,
    pub checkpoint: PathBuf,
}

fn build_network(arch: Arch, cnn: &ResNetConfig, vit: &VitConfig, device: &Device, seed: u64) -> Network {
    init_seeded(device, seed, || match arch {
        Arch::Cnn => Network::Cnn(cnn.init(device)),
        Arch::Vit => Network::Vit(vit.init(device)),
    })
}

fn load_into(net: Network, path: &Path, ignore: &HashSet<String>) -> Result<Network, CassError> {
    Ok(match net {
        Network::Cnn(m) => Network::Cnn(checkpoint::load_weights(m, path, ignore)?),
        Network::Vit(m) => Network::Vit(checkpoint::load_weights(m, path, ignore)?),
    })
}

/// Mean loss and all logits of `data` in evaluation mode.
fn predict(
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
    let device = resolve(cfg.backend)?;
    let ad = device.clone().autodiff();
    let mut augment_cfg = cfg.augment;

    let (cnn_cfg, vit_cfg, mut net) = match &cfg.init {
        Init::Random => {
            let mut vit = cfg.vit.clone();
            vit.image_size = cfg.image_size;
            (
                cfg.cnn.clone(),
                vit.clone(),
                build_network(cfg.arch, &cfg.cnn, &vit, &ad, cfg.seed),
            )
        }
        Init::Pretrained(dir) => {
            let st = read_state(dir)?;
            // The pre-trained networks were trained on inputs prepared this way.
            augment_cfg.mean = st.config.augment.mean;
            augment_cfg.std = st.config.augment.std;
            augment_cfg.channel_order = st.config.augment.channel_order;
            let (c, v) = (st.config.cnn.clone(), st.config.vit.clone());
            if cfg.arch == Arch::Vit && v.image_size != cfg.image_size {
                return Err(CassError::config(
                    "image_size",
                    format!(
                        "is {} but the pre-trained ViT was built for {}",
                        cfg.image_size, v.image_size
                    ),
                ));
            }
            let net = build_network(cfg.arch, &c, &v, &ad, cfg.seed);
            let file = dir.join(format!("{}.safetensors", cfg.arch.name()));
            (c, v, load_into(net, &file, &HashSet::new())?)
        }
    };
    net = init_seeded(&ad, cfg.seed.wrapping_add(2), || {
        net.with_new_head(cfg.num_classes, &ad)
    });
    let mut adam = Adam::new(cfg.adam);
    let weights_t = Tensor::<1>::from_floats(weights.as_slice(), &ad);

    let samples = Arc::new(train.indices.clone());
    let labels = Arc::new(train.labels.clone());
    // Keep a last batch of at least 2 images (BatchNorm); drop a single leftover image.
    let drop_last = samples.len() % cfg.batch_size == 1;
    let batches_per_epoch = batch_positions(samples.len(), cfg.batch_size, drop_last).len() as u64;
    if batches_per_epoch == 0 {
        return Err(CassError::config("train.indices", "needs at least 2 labelled images"));
    }
    let total = cfg.max_epochs * batches_per_epoch;
    let aspect = train.set.width as f64 / train.set.height as f64;
    let best_dir = out_dir.join("best");
    let mut best: Option<(u64, f64, Network)> = None;
    let mut history = Vec::new();
    let mut step = 0u64;
    let mut since_best = 0u64;
    let mut status = Status::Completed;
    let started = Instant::now();
    'epochs: for epoch in 0..cfg.max_epochs {
        let order = epoch_order(samples.len(), cfg.seed, epoch);
        let batches: Vec<Vec<usize>> = batch_positions(order.len(), cfg.batch_size, drop_last)
            .into_iter()
            .map(|b| b.into_iter().map(|p| order[p]).collect())
            .collect();
        let mut epoch_loss = 0.0;
        let mut n_batches = 0;
        let mut prefetch = Prefetcher::spawn(train.set.clone(), samples.clone(), Some(labels.clone()), batches, 2);
        loop {
            let step_started = Instant::now();
            let Some(host) = prefetch.next() else { break };
            if cancel.is_cancelled() {
                status = Status::Cancelled;
                break 'epochs;
            }
            let params = augment_cfg.sample(host.size, step_seed(cfg.seed, step), aspect);
            let x = augment::apply(
                upload(&host, &train.set, &device),
                Some(&params),
                cfg.image_size,
                &augment_cfg,
            )
            .autodiff();
            let y = Tensor::<1, Int>::from_data(burn::tensor::TensorData::new(host.labels.clone(), [host.size]), &ad);
            let loss = cfg.loss.forward(net.forward(x), y, weights_t.clone());
            let value = loss.clone().into_scalar::<f32>() as f64;
            if !value.is_finite() {
                return Err(CassError::at_step(
                    "non-finite-loss",
                    format!("fine-tuning loss became {value}"),
                    step,
                ));
            }
            let grads = loss.backward();
            let lr = cfg.schedule.lr(cfg.lr, step, total);
            net = adam.step(lr, net, &grads);
            step += 1;
            epoch_loss += value;
            n_batches += 1;
            let elapsed = started.elapsed().as_secs_f64();
            observer.event(&Event::Step {
                step,
                total_steps: total,
                epoch,
                loss: value,
                parts: vec![("classification".into(), value)],
                lr,
                images_per_sec: (step as f64 * cfg.batch_size as f64) / elapsed.max(1e-9),
                step_sec: step_started.elapsed().as_secs_f64(),
                eta_sec: elapsed / step as f64 * (total - step) as f64,
            });
        }
        let (logits, targets) = predict(&net, val, cfg.image_size, cfg.batch_size, &augment_cfg, &device);
        let val_loss = mean_loss(&cfg.loss, &logits, &targets, &weights, cfg.num_classes, &device);
        let record = EpochRecord {
            epoch,
            train_loss: epoch_loss / n_batches.max(1) as f64,
            val_loss,
        };
        history.push(record);
        let improved = best.as_ref().is_none_or(|(_, b, _)| val_loss < *b);
        observer.event(&Event::Epoch {
            epoch,
            mean_loss: epoch_loss / n_batches.max(1) as f64,
            val_loss: Some(val_loss),
            best: improved,
        });
        if improved {
            best = Some((epoch, val_loss, net.valid()));
            since_best = 0;
            let state = FinetuneState {
                kind: FINETUNE_KIND.into(),
                config: FinetuneConfig {
                    augment: augment_cfg,
                    ..cfg.clone()
                },
                cnn: cnn_cfg.clone(),
                vit: vit_cfg.clone(),
                best_epoch: epoch,
                best_val_loss: val_loss,
                history: history.clone(),
            };
            save_finetuned(&net, &state, &best_dir)?;
            observer.event(&Event::Checkpoint {
                path: best_dir.display().to_string(),
                step,
            });
        } else {
            since_best += 1;
            if since_best >= cfg.patience {
                break;
            }
        }
    }
    let Some((best_epoch, best_val_loss, best_net)) = best else {
        return Err(CassError::data(
            "cancelled-before-validation",
            "fine-tuning was cancelled before its first validation",
            None,
        ));
    };
    let (logits, targets) = predict(&best_net, val, cfg.image_size, cfg.batch_size, &augment_cfg, &device);
    let val_metrics = metrics::compute(
        &logits,
        &targets,
        cfg.num_classes,
        cfg.loss == ClassificationLoss::CrossEntropy,
    );
    Ok(FinetuneOutcome {
        status,
        best_epoch,
        best_val_loss,
        val_metrics,
        history,
        checkpoint: best_dir,
    })
}

/// A network restored from a checkpoint directory, with what it needs to be fed.
pub struct Restored {
    pub net: Network,
    pub device: Device,
    pub image_size: usize,
    pub augment: AugmentConfig,
    pub num_classes: usize,
    pub softmax_scores: bool,
}

/// Restores a fine-tuned checkpoint (`best/`), or one network of a pre-training checkpoint
/// (then `arch` picks which).
pub fn restore(dir: &Path, arch: Option<Arch>, backend: BackendChoice) -> Result<Restored, CassError> {
    let device = resolve(backend)?;
    let state_path = dir.join("state.json");
    let bytes = fs::read(&state_path).map_err(|e| CassError::io(&state_path, e))?;
    let kind: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| CassError::data("bad-checkpoint", format!("unreadable state: {e}"), Some(&state_path)))?;
    match kind.get("kind").and_then(|k| k.as_str()) {
        Some(FINETUNE_KIND) => {
            let st: FinetuneState = serde_json::from_value(kind)
                .map_err(|e| CassError::data("bad-checkpoint", format!("unreadable state: {e}"), Some(&state_path)))?;
            let mut cnn = st.cnn.clone();
            let mut vit = st.vit.clone();
            cnn.num_classes = st.config.num_classes;
            vit.num_classes = st.config.num_classes;
            let net = build_network(st.config.arch, &cnn, &vit, &device, 0);
            Ok(Restored {
                net: load_into(net, &dir.join("model.safetensors"), &HashSet::new())?,
                device,
                image_size: st.config.image_size,
                augment: st.config.augment,
                num_classes: st.config.num_classes,
                softmax_scores: st.config.loss == ClassificationLoss::CrossEntropy,
            })
        }
        Some(crate::ssl::cass::PRETRAIN_KIND) => {
            let st = read_state(dir)?;
            let arch = arch.ok_or_else(|| {
                CassError::config(
                    "arch",
                    "a pre-training checkpoint holds two networks: say `cnn` or `vit`",
                )
            })?;
            let net = build_network(arch, &st.config.cnn, &st.config.vit, &device, 0);
            Ok(Restored {
                net: load_into(net, &dir.join(format!("{}.safetensors", arch.name())), &HashSet::new())?,
                device,
                image_size: st.config.image_size,
                augment: st.config.augment,
                num_classes: st.config.cnn.num_classes,
                softmax_scores: false,
            })
        }
        other => Err(CassError::data(
            "bad-checkpoint",
            format!("unknown checkpoint kind {other:?}"),
            Some(&state_path),
        )),
    }
}

/// Exports one network of a checkpoint directory (pre-training: `arch` picks it; fine-tuning:
/// its network) as timm-compatible safetensors, `num_batches_tracked` set to the steps trained.
pub fn export(dir: &Path, arch: Option<Arch>, out: &Path) -> Result<(), CassError> {
    let r = restore(dir, arch, BackendChoice::Cpu)?;
    let steps = fs::read(dir.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("step").and_then(|s| s.as_i64()))
        .unwrap_or(0);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Silent;
    use crate::loss::ClassWeighting;
    use crate::testing::{synthetic_images, tiny_pretrain, tiny_resnet, tiny_vit};

    fn cfg(arch: Arch, init: Init) -> FinetuneConfig {
        FinetuneConfig {
            arch,
            init,
            cnn: tiny_resnet(16),
            vit: tiny_vit(16, 16),
            num_classes: 2,
            image_size: 16,
            batch_size: 4,
            max_epochs: 3,
            lr: 3e-3,
            adam: Default::default(),
            schedule: Schedule::Constant,
            loss: ClassificationLoss::paper(),
            class_weighting: ClassWeighting::MinMaxCounts,
            patience: 5,
            seed: 77,
            augment: AugmentConfig {
                enabled: false,
                ..Default::default()
            },
            backend: Default::default(),
        }
    }

    fn data(n: usize) -> (Labeled, Labeled) {
        let (bytes, labels) = synthetic_images(n, 16, 11);
        let set = Arc::new(ImageSet::from_memory(bytes, n, 16, 16).unwrap());
        let half = n / 2;
        (
            Labeled {
                set: set.clone(),
                indices: (0..half).collect(),
                labels: labels[..half].to_vec(),
            },
            Labeled {
                set,
                indices: (half..n).collect(),
                labels: labels[half..].to_vec(),
            },
        )
    }

    #[test]
    fn finetune_from_pretraining_then_evaluate_reproduces_validation_metrics() {
        let root = std::env::temp_dir().join(format!("cass-ft-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (train, val) = data(24);
        let mut pcfg = tiny_pretrain();
        pcfg.epochs = 1;
        crate::ssl::cass::pretrain(
            &pcfg,
            train.set.clone(),
            vec![],
            &root.join("pre"),
            false,
            &mut Silent,
            &CancelToken::new(),
        )
        .unwrap();
        for arch in [Arch::Cnn, Arch::Vit] {
            let c = cfg(arch, Init::Pretrained(root.join("pre/checkpoint")));
            let out = finetune(
                &c,
                &train,
                &val,
                &root.join(arch.name()),
                &mut Silent,
                &CancelToken::new(),
            )
            .unwrap();
            assert!(out.history.len() <= 3 && !out.history.is_empty());
            assert!(out.best_val_loss.is_finite());
            let again = evaluate(&out.checkpoint, &val, 5, BackendChoice::Cpu).unwrap();
            assert_eq!(again, out.val_metrics, "{arch:?}");
            assert_eq!(again.num_samples, 12);
            let (feats, dim) = embed(
                &root.join("pre/checkpoint"),
                Some(arch),
                val.set.clone(),
                vec![0, 1, 2],
                2,
                BackendChoice::Cpu,
            )
            .unwrap();
            assert_eq!(feats.len(), 3 * dim);
        }
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn random_init_learns_a_separable_task() {
        let root = std::env::temp_dir().join(format!("cass-ft-rand-{}", std::process::id()));
        let (train, val) = data(32);
        let mut c = cfg(Arch::Cnn, Init::Random);
        c.max_epochs = 8;
        c.loss = ClassificationLoss::CrossEntropy;
        let out = finetune(&c, &train, &val, &root, &mut Silent, &CancelToken::new()).unwrap();
        assert!(out.val_metrics.accuracy >= 0.75, "{:?}", out.val_metrics);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn bad_labels_and_empty_class_are_domain_errors() {
        let (mut train, val) = data(8);
        let c = cfg(Arch::Cnn, Init::Random);
        let run = |train: &Labeled| {
            finetune(
                &c,
                train,
                &val,
                Path::new("/nonexistent"),
                &mut Silent,
                &CancelToken::new(),
            )
            .unwrap_err()
        };
        train.labels[1] = 5;
        let err = run(&train);
        assert_eq!(err.code(), "unknown-label");
        assert!(err.to_string().contains("train.labels[1]"), "{err}");
        train.labels = vec![0; train.indices.len()];
        let err = run(&train);
        assert_eq!(err.code(), "empty-class");
        assert!(err.to_string().contains("class 1"), "{err}");
    }
}
