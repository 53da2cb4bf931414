use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::checkpoint::module_tensors;
use crate::data::{ImageSet, upload};
use crate::events::{CancelToken, Event, Silent};
use crate::models::dino_head::DinoHeadConfig;
use crate::ssl::pretrain::run;
use crate::testing::{device, synthetic_images, tiny_finetune, tiny_resnet, tiny_vit};
use crate::train::finetune::{FinetuneConfig, Init, Labeled, finetune};
use crate::train::run::Status;
use crate::train::run_config::RunConfig;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cass-dino-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

fn tiny_dino(arch: Arch) -> DinoConfig {
    DinoConfig {
        arch,
        cnn: tiny_resnet(1),
        vit: tiny_vit(16, 1),
        head: DinoHeadConfig {
            out_dim: 32,
            hidden_dim: 16,
            bottleneck_dim: 8,
        },
        image_size: 16,
        base_lr: 0.05,
        min_lr: 1e-6,
        warmup_epochs: 1,
        adam: Default::default(),
        weight_decay: 0.04,
        weight_decay_end: 0.4,
        momentum_teacher: 0.9,
        teacher_temp: 0.04,
        warmup_teacher_temp: 0.04,
        warmup_teacher_temp_epochs: 0,
        student_temp: 0.1,
        center_momentum: 0.9,
        clip_grad: Some(3.0),
        freeze_last_layer_epochs: 1,
        global_crop_scale: [0.4, 1.0],
        local_crops: 2,
        local_crop_scale: [0.05, 0.4],
        local_crop_size: 8,
        augment: Default::default(),
        conv: Default::default(),
        run: RunConfig {
            collapse_warning_spread: 0.0,
            ..RunConfig::new(4, 2, 3)
        },
        unknown: Default::default(),
    }
}

fn raw_batch(cfg: &DinoConfig) -> Tensor<4> {
    let (bytes, _) = synthetic_images(cfg.run.batch_size, cfg.image_size, 1);
    let set = ImageSet::from_memory(bytes, cfg.run.batch_size, cfg.image_size, cfg.image_size).unwrap();
    let host = crate::data::assemble(&set, &(0..cfg.run.batch_size).collect::<Vec<_>>(), None);
    upload(&host, &set, &device())
}

fn flat<M: Module>(m: &M) -> Vec<f32> {
    module_tensors(m).into_values().flat_map(|t| t.data).collect()
}

#[test]
fn multi_crop_gives_two_global_and_n_local_crops_of_the_specified_sizes() {
    let cfg = tiny_dino(Arch::Cnn);
    let (g, l) = DinoTrainer::crops(&cfg, raw_batch(&cfg), 0);
    assert_eq!(g.dims(), [2 * 4, 3, 16, 16]);
    assert_eq!(l.as_ref().unwrap().dims(), [2 * 4, 3, 8, 8]);
    // The two global crops of an image are drawn independently.
    let first = g.clone().narrow(0, 0, 4);
    let second = g.narrow(0, 4, 4);
    let diff = (first - second).abs().max().into_scalar::<f32>();
    assert!(diff > 1e-3, "the global crops are identical");
    let none = DinoConfig { local_crops: 0, ..cfg };
    assert!(DinoTrainer::crops(&none, raw_batch(&none), 0).1.is_none());
}

#[test]
fn the_teacher_gets_no_gradient_and_moves_only_by_its_ema() {
    for arch in [Arch::Cnn, Arch::Vit] {
        // Momentum 1 all run long: the teacher must stay exactly where it started.
        let cfg = DinoConfig {
            momentum_teacher: 1.0,
            ..tiny_dino(arch)
        };
        let mut t = DinoTrainer::new(&cfg, &device());
        let (teacher0, student0) = (flat(&t.teacher_head), flat(&t.student_head));
        assert_eq!(teacher0, student0, "the teacher starts as the student");
        let at = StepAt {
            step: 0,
            total: 4,
            epoch: 1,
            per_epoch: 2,
        };
        let report = t.train_step(raw_batch(&cfg), at, 1);
        assert!(report.loss.is_finite());
        assert_eq!(flat(&t.teacher_head), teacher0, "{arch:?}: the teacher's head changed");
        assert_ne!(flat(&t.student_head), student0, "{arch:?}: the student did not learn");
        let t_backbone: Vec<f32> = match &t.teacher {
            Network::Cnn(m) => flat(m),
            Network::Vit(m) => flat(m),
        };
        let s_backbone: Vec<f32> = match &t.student {
            Network::Cnn(m) => flat(m),
            Network::Vit(m) => flat(m),
        };
        assert_ne!(t_backbone, s_backbone);
    }
}

#[test]
fn teacher_and_student_keep_their_own_batchnorm_statistics() {
    // burn's `Clone` shares running statistics: a teacher cloned from the student moved the
    // student's with each of its forward passes (found by `one_dino_step_matches_pytorch`).
    let cfg = tiny_dino(Arch::Cnn);
    let t = DinoTrainer::new(&cfg, &device());
    let stats = |n: &Network| -> Vec<f32> {
        let Network::Cnn(m) = n else { unreachable!() };
        module_tensors(m)
            .into_iter()
            .filter(|(name, _)| name.contains(".running_"))
            .flat_map(|(_, v)| v.data)
            .collect()
    };
    let before = stats(&t.student);
    let (globals, _) = DinoTrainer::crops(&cfg, raw_batch(&cfg), 0);
    t.teacher.forward_features(globals.autodiff());
    assert_eq!(
        stats(&t.student),
        before,
        "the teacher's forward moved the student's statistics"
    );
    let teacher = stats(&t.teacher);
    assert_ne!(teacher, before, "the teacher's own statistics did not move");
    // The EMA blends parameters only (DINO's `parameters()`), never these buffers.
    assert_eq!(stats(&ema(t.teacher.clone(), &t.student, 0.5)), teacher);
}

#[test]
fn ema_blends_parameters_and_keeps_the_teachers_ids() {
    let cfg = tiny_dino(Arch::Cnn);
    let d = device().autodiff();
    let a = crate::models::init_seeded(&d, 1, |d| cfg.head.init(8, d));
    let b = crate::models::init_seeded(&d, 2, |d| cfg.head.init(8, d));
    let (fa, fb) = (flat(&a), flat(&b));
    let mixed = ema(a.clone(), &b, 0.75);
    for ((m, x), y) in flat(&mixed).iter().zip(&fa).zip(&fb) {
        assert!((m - (0.75 * x + 0.25 * y)).abs() < 1e-6);
    }
    assert_eq!(mixed.last_layer.id, a.last_layer.id);
    assert_eq!(flat(&ema(a.clone(), &b, 1.0)), fa);
}

#[test]
fn the_last_layer_is_frozen_in_the_first_epochs_only() {
    let cfg = tiny_dino(Arch::Cnn);
    let mut t = DinoTrainer::new(&cfg, &device());
    let last = |t: &DinoTrainer| {
        t.student_head
            .last_layer
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    };
    let v0 = last(&t);
    assert!(!v0.is_empty());
    let at = |step, epoch| StepAt {
        step,
        total: 4,
        epoch,
        per_epoch: 2,
    };
    t.train_step(raw_batch(&cfg), at(0, 0), 1);
    assert_eq!(last(&t), v0, "epoch 0 must not move the last layer");
    assert_ne!(
        flat(&t.student_head.mlp[0]),
        flat(&DinoTrainer::new(&cfg, &device()).student_head.mlp[0])
    );
    t.train_step(raw_batch(&cfg), at(1, 1), 1);
    assert_ne!(last(&t), v0, "epoch 1 must");
}

#[test]
fn a_run_resumes_bit_for_bit_and_its_teacher_fine_tunes_and_embeds() {
    let cfg = tiny_dino(Arch::Vit);
    let (bytes, labels) = synthetic_images(10, 16, 5);
    let set = Arc::new(ImageSet::from_memory(bytes, 10, 16, 16).unwrap());
    let a = tmp("full");
    let full = run::<DinoTrainer>(&cfg, set.clone(), vec![], &a, false, &mut Silent, &CancelToken::new()).unwrap();
    assert_eq!(full.steps, 4);
    assert!(full.losses.iter().all(|l| l.is_finite()), "{:?}", full.losses);

    let b = tmp("part");
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    let mut obs = move |e: &Event| {
        if let Event::Step { step: 3, .. } = e {
            c2.cancel();
        }
    };
    let part = run::<DinoTrainer>(&cfg, set.clone(), vec![], &b, false, &mut obs, &cancel).unwrap();
    assert_eq!((part.status, part.steps), (Status::Cancelled, 3));
    let rest = run::<DinoTrainer>(&cfg, set.clone(), vec![], &b, true, &mut Silent, &CancelToken::new()).unwrap();
    assert_eq!(rest.losses, full.losses, "resume must continue the same run");

    // The checkpoint is a pre-training checkpoint with one network, which fine-tuning reads.
    let ck = crate::checkpoint::Checkpoint::open(&a).unwrap();
    assert_eq!(ck.method, DINO_KIND);
    assert_eq!(ck.networks.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["vit"]);
    let labeled = Labeled {
        set: set.clone(),
        indices: (0..10).collect(),
        labels,
    };
    let ft = tiny_finetune(Arch::Vit, Init::Pretrained(a.clone()));
    let out = tmp("ft");
    let done = finetune(&ft, &labeled, &labeled, &out, &mut Silent, &CancelToken::new()).unwrap();
    assert_eq!(done.status, Status::Completed);
    let cnn_from_vit_run = FinetuneConfig { arch: Arch::Cnn, ..ft };
    let e = finetune(
        &cnn_from_vit_run,
        &labeled,
        &labeled,
        &tmp("ft-cnn"),
        &mut Silent,
        &CancelToken::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("holds no cnn") && e.contains("vit"), "{e}");
    // Embedding needs no `arch`: the checkpoint has one network.
    let (features, dim) = crate::embed(&a, None, set, vec![0, 1], 2, Default::default()).unwrap();
    assert_eq!((features.len(), dim), (2 * 16, 16));
    for d in [a, b, out] {
        fs::remove_dir_all(d).unwrap();
    }
}

/// Every gradient in `grads` of `module`'s parameters, flattened in visiting order.
fn flat_grads<M: Module>(module: &M, grads: &burn::optim::GradientsParams) -> Vec<f32> {
    struct Gather<'a>(&'a burn::optim::GradientsParams, Vec<f32>);
    impl burn::module::ModuleVisitor for Gather<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if let Some(g) = self.0.get::<D>(param.id) {
                self.1
                    .extend(g.into_data().convert::<f32>().try_into_vec::<f32>().unwrap());
            }
        }
    }
    let mut v = Gather(grads, Vec::new());
    module.visit(&mut v);
    v.1
}

/// The largest difference between `a` and `b`, relative to the largest magnitude in `a` (at
/// least 1): float32 sums in another order differ in their last bits, about 1e-7 of the values.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max) / scale
}

#[test]
fn two_micro_batches_of_8_give_a_vit_the_gradients_and_update_of_one_batch_of_16() {
    let base = DinoConfig {
        warmup_epochs: 0,
        ..tiny_dino(Arch::Vit)
    };
    let full = DinoConfig {
        run: RunConfig {
            batch_size: 16,
            ..base.run
        },
        ..base.clone()
    };
    let split = DinoConfig {
        run: RunConfig {
            batch_size: 8,
            accumulate: 2,
            ..base.run
        },
        ..base
    };
    let raw = raw_batch(&full); // the step's 16 images
    let at = StepAt {
        step: 0,
        total: 4,
        epoch: 1,
        per_epoch: 2,
    };
    let (mut a, mut b) = (DinoTrainer::new(&full, &device()), DinoTrainer::new(&split, &device()));
    let start = flat(&a.student_head);

    // Part one: one batch of 16 against the sum of two micro-batches of 8, each weighted 1/2.
    let (ga, _) = a.gradients(a.views(raw.clone(), at, 1).pop().unwrap(), 1.0, at);
    let mut parts = b.views(raw.clone(), at, 2);
    assert_eq!(parts.len(), 2);
    let (g1, _) = b.gradients(parts.remove(0), 0.5, at);
    let (g2, _) = b.gradients(parts.remove(0), 0.5, at);
    let gb = b.add(g1, g2);
    for (name, x, y) in [
        (
            "head",
            flat_grads(&a.student_head, &ga.head),
            flat_grads(&b.student_head, &gb.head),
        ),
        (
            "backbone",
            flat_grads(&a.student, &ga.backbone),
            flat_grads(&b.student, &gb.backbone),
        ),
    ] {
        assert!(!x.is_empty() && x.iter().any(|v| v.abs() > 1e-4), "{name}: no gradient");
        let d = max_diff(&x, &y);
        let largest = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            d < 1e-6,
            "{name}: gradients differ by {d} (relative; largest gradient {largest})"
        );
        // Measured (`cargo test -p cass-core --lib two_micro_batches -- --nocapture`): head,
        // largest gradient 35.2, difference 1.1e-7 of it (3.8e-6 absolute); backbone 5.6e-9.
        eprintln!("{name}: largest gradient {largest}, relative difference {d}");
    }

    // The whole step, as the training loop runs it: the same loss and the same weights after.
    let (mut a, mut b) = (DinoTrainer::new(&full, &device()), DinoTrainer::new(&split, &device()));
    let (ra, rb) = (a.train_step(raw.clone(), at, 1), b.train_step(raw, at, 2));
    assert!((ra.loss - rb.loss).abs() < 1e-6, "losses {} and {}", ra.loss, rb.loss);
    assert_ne!(flat(&a.student_head), start, "the step changed nothing");
    for (name, x, y) in [
        ("student head", flat(&a.student_head), flat(&b.student_head)),
        ("teacher head", flat(&a.teacher_head), flat(&b.teacher_head)),
        (
            "centre",
            a.loss.center.clone().into_data().try_into_vec::<f32>().unwrap(),
            b.loss.center.clone().into_data().try_into_vec::<f32>().unwrap(),
        ),
    ] {
        let d = max_diff(&x, &y);
        assert!(d < 1e-6, "{name}: differs by {d} after the step");
    }
}
