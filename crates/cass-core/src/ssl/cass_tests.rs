use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;

use super::*;
use crate::checkpoint::{load_module_tensors, module_tensors};
use crate::data::upload;
use crate::events::{Event, Silent};
use crate::loss::{cass_loss, covariance_penalty, variance_hinge};
use crate::testing::{device, grads_by_name, rand_tensor, scalar, synthetic_images, tiny_pretrain};
use crate::train::run_config::RunConfig;

pub(super) fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cass-test-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

pub(super) fn fixed_batch(cfg: &PretrainConfig, d: &Device) -> Tensor<4> {
    let (bytes, _) = synthetic_images(cfg.run.batch_size, cfg.image_size, 3);
    let set = ImageSet::from_memory(bytes, cfg.run.batch_size, cfg.image_size, cfg.image_size).unwrap();
    let host = crate::data::assemble(&set, &(0..cfg.run.batch_size).collect::<Vec<_>>(), None);
    crate::augment::apply(upload(&host, &set, d), None, cfg.image_size, &cfg.augment)
}

#[test]
fn loss_falls_on_a_fixed_batch() {
    let d = device();
    let cfg = tiny_pretrain();
    let mut t = CassTrainer::new(&cfg, &d);
    let x = fixed_batch(&cfg, &d);
    let losses: Vec<f64> = (0..12).map(|_| t.step(x.clone(), 1e-3, 1e-3).loss).collect();
    assert!(losses.iter().all(|l| l.is_finite() && (0.0..=4.0).contains(l)));
    assert!(losses[11] < 0.7 * losses[0], "loss did not fall: {losses:?}");
}

#[test]
fn parallel_towers_step_exactly_like_one_backward() {
    let guard = Some(CollapseGuard {
        weight: 1.0,
        target: 0.5,
        covariance: 0.0,
    });
    for (views, collapse_guard) in [(1, None), (2, guard)] {
        parallel_towers_case(PretrainConfig {
            views,
            collapse_guard,
            ..tiny_pretrain()
        });
    }
}

fn parallel_towers_case(cfg: PretrainConfig) {
    let d = device();
    let mut serial = CassTrainer::new(&cfg, &d);
    let mut parallel = CassTrainer::new(&cfg, &d);
    serial.parallel_towers = false;
    parallel.parallel_towers = true;
    let x = fixed_batch(&cfg, &d).repeat_dim(0, cfg.views);
    for step in 0..3 {
        let (a, b) = (serial.step(x.clone(), 1e-3, 2e-3), parallel.step(x.clone(), 1e-3, 2e-3));
        assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "loss of step {step}");
        assert_eq!(
            a.cnn_spread.to_bits(),
            b.cnn_spread.to_bits(),
            "cnn spread of step {step}"
        );
        assert_eq!(
            a.vit_spread.to_bits(),
            b.vit_spread.to_bits(),
            "vit spread of step {step}"
        );
    }
    // Weights and BatchNorm running statistics (which only the calling thread updates).
    for (net, a, b) in [
        ("cnn", module_tensors(&serial.cnn), module_tensors(&parallel.cnn)),
        ("vit", module_tensors(&serial.vit), module_tensors(&parallel.vit)),
    ] {
        assert!(a.keys().any(|k| k.ends_with("running_var")) || net == "vit");
        for (k, v) in &a {
            assert_eq!(Some(v), b.get(k), "{net} tensor {k} differs after 3 steps");
        }
    }
    assert_eq!(serial.opt_vit.step, parallel.opt_vit.step);
}

#[test]
fn gradients_match_finite_differences() {
    let d = device();
    let mut cfg = tiny_pretrain();
    cfg.run.batch_size = 3;
    let t = CassTrainer::new(&cfg, &d);
    let x = fixed_batch(&cfg, &d);
    let loss_of = |cnn: &ResNet, vit: &Vit| -> f64 {
        cass_loss(cnn.forward(x.clone().autodiff()), vit.forward(x.clone().autodiff())).into_scalar::<f32>() as f64
    };
    let loss = cass_loss(t.cnn.forward(x.clone().autodiff()), t.vit.forward(x.clone().autodiff()));
    let grads = loss.backward();
    let g_cnn = grads_by_name(&t.cnn, &grads);
    let g_vit = grads_by_name(&t.vit, &grads);
    let none = HashSet::new();
    // Central differences in f32 with BatchNorm in batch mode: h = 1e-3 balances truncation
    // against rounding error (measured: agreement to about 3 % on these entries).
    let h = 1e-3f32;
    let mut checked = 0;
    for (name, pick) in [
        ("fc.weight", 5usize),
        ("conv1.weight", 11),
        ("layer2.0.conv2.weight", 0),
        ("layer2.0.bn1.weight", 0),
    ] {
        let base = module_tensors(&t.cnn);
        let analytic = g_cnn[name][pick] as f64;
        let mut plus = base.clone();
        plus.get_mut(name).unwrap().data[pick] += h;
        let mut minus = base.clone();
        minus.get_mut(name).unwrap().data[pick] -= h;
        let lp = loss_of(
            &load_module_tensors(t.cnn.clone(), &plus, &none, Path::new("plus")).unwrap(),
            &t.vit,
        );
        let lm = loss_of(
            &load_module_tensors(t.cnn.clone(), &minus, &none, Path::new("minus")).unwrap(),
            &t.vit,
        );
        let numeric = (lp - lm) / (2.0 * h as f64);
        assert!(
            (numeric - analytic).abs() <= 5e-3 + 0.05 * analytic.abs(),
            "{name}[{pick}]: numeric {numeric} vs analytic {analytic}"
        );
        checked += 1;
    }
    for (name, pick) in [
        ("head.weight", 3usize),
        ("blocks.0.attn.qkv.weight", 20),
        ("pos_embed", 7),
    ] {
        let base = module_tensors(&t.vit);
        let analytic = g_vit[name][pick] as f64;
        let mut plus = base.clone();
        plus.get_mut(name).unwrap().data[pick] += h;
        let mut minus = base.clone();
        minus.get_mut(name).unwrap().data[pick] -= h;
        let lp = loss_of(
            &t.cnn,
            &load_module_tensors(t.vit.clone(), &plus, &none, Path::new("plus")).unwrap(),
        );
        let lm = loss_of(
            &t.cnn,
            &load_module_tensors(t.vit.clone(), &minus, &none, Path::new("minus")).unwrap(),
        );
        let numeric = (lp - lm) / (2.0 * h as f64);
        assert!(
            (numeric - analytic).abs() <= 5e-3 + 0.05 * analytic.abs(),
            "{name}[{pick}]: numeric {numeric} vs analytic {analytic}"
        );
        checked += 1;
    }
    assert_eq!(checked, 7);
}

#[test]
fn too_few_images_and_bad_vit_size_name_the_field() {
    let mut cfg = tiny_pretrain();
    let (bytes, _) = synthetic_images(3, 16, 1);
    let set = Arc::new(ImageSet::from_memory(bytes, 3, 16, 16).unwrap());
    let err = pretrain(
        &cfg,
        set.clone(),
        vec![],
        &tmp("few"),
        false,
        &mut Silent,
        &CancelToken::new(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, CassError::Config { field, .. } if field == "batch_size"),
        "{err}"
    );
    cfg.vit.image_size = 32;
    let err = pretrain(&cfg, set, vec![], &tmp("vit"), false, &mut Silent, &CancelToken::new()).unwrap_err();
    assert!(
        matches!(&err, CassError::Config { field, .. } if field == "vit.image_size"),
        "{err}"
    );
}

#[test]
fn two_view_objective_is_the_symmetrised_cass_loss() {
    let d = device();
    let r = rand_tensor([8, 6], 1, &d); // [r1; r2], 4 images
    let t = rand_tensor([8, 6], 2, &d); // [t1; t2]
    let two = Objective { views: 2, guard: None }.forward(r.clone(), t.clone());
    let (r1, r2) = (r.clone().narrow(0, 0, 4), r.clone().narrow(0, 4, 4));
    let (t1, t2) = (t.clone().narrow(0, 0, 4), t.clone().narrow(0, 4, 4));
    let want = 0.5 * (scalar(cass_loss(r1, t2)) + scalar(cass_loss(r2, t1))) as f64;
    assert!((two.cass - want).abs() < 1e-6, "{} vs {want}", two.cass);
    // The same view on both sides is the one-view loss.
    let one = Objective { views: 1, guard: None }.forward(r.clone(), t.clone());
    assert!((one.cass - scalar(cass_loss(r.clone(), t.clone())) as f64).abs() < 1e-6);
    // The guard adds, per network and view, weight x hinge + covariance x penalty, averaged
    // over views and summed over the two networks.
    let g = CollapseGuard {
        weight: 3.0,
        target: 2.0,
        covariance: 0.5,
    };
    let guarded = Objective {
        views: 2,
        guard: Some(g),
    }
    .forward(r.clone(), t.clone());
    let term =
        |v: Tensor<2>| 3.0 * scalar(variance_hinge(v.clone(), 2.0)) as f64 + 0.5 * scalar(covariance_penalty(v)) as f64;
    let want_guard = 0.5
        * (term(r.clone().narrow(0, 0, 4))
            + term(r.narrow(0, 4, 4))
            + term(t.clone().narrow(0, 0, 4))
            + term(t.narrow(0, 4, 4)));
    let got = guarded.guard.expect("guard part");
    assert!((got - want_guard).abs() < 1e-5, "{got} vs {want_guard}");
    assert!((scalar(guarded.total) as f64 - (want + want_guard)).abs() < 1e-5);
}

#[test]
fn views_and_guard_are_validated_by_name() {
    let mut cfg = PretrainConfig {
        views: 3,
        ..tiny_pretrain()
    };
    assert!(matches!(cfg.validate(), Err(CassError::Config { field, .. }) if field == "views"));
    cfg.views = 2;
    cfg.collapse_guard = Some(CollapseGuard {
        weight: 1.0,
        target: 0.0,
        covariance: 0.0,
    });
    assert!(matches!(cfg.validate(), Err(CassError::Config { field, .. }) if field == "collapse_guard.target"));
}

/// Runs a small CASS pre-training from random weights on synthetic stripes and returns the last
/// epoch's output spreads (CNN, ViT) and the collapse warnings raised.
fn spread_after_pretraining(cfg: &PretrainConfig, name: &str) -> ((f64, f64), Vec<String>) {
    let (bytes, _) = synthetic_images(64, 16, 11);
    let set = Arc::new(ImageSet::from_memory(bytes, 64, 16, 16).unwrap());
    let dir = tmp(name);
    let spreads = std::sync::Mutex::new(Vec::new());
    let warnings = std::sync::Mutex::new(Vec::new());
    let mut obs = |e: &Event| match e {
        Event::Step { parts, .. } => {
            let get = |k: &str| parts.iter().find(|(n, _)| n == k).map(|p| p.1).unwrap();
            spreads.lock().unwrap().push((get("cnn_spread"), get("vit_spread")));
        }
        Event::Warning { code, .. } => warnings.lock().unwrap().push(code.clone()),
        _ => {}
    };
    let out = pretrain(cfg, set, vec![], &dir, false, &mut obs, &CancelToken::new()).unwrap();
    assert_eq!(out.status, Status::Completed);
    fs::remove_dir_all(&dir).unwrap();
    let spreads = spreads.into_inner().unwrap();
    let last = &spreads[spreads.len() - 8..];
    let mean = |f: fn(&(f64, f64)) -> f64| last.iter().map(f).sum::<f64>() / last.len() as f64;
    let spread = (mean(|s| s.0), mean(|s| s.1));
    eprintln!("{name}: final spread (cnn, vit) {spread:?}");
    (spread, warnings.into_inner().unwrap())
}

#[test]
fn random_init_collapses_without_the_guard_and_not_with_it() {
    let t = tiny_pretrain();
    let base = PretrainConfig {
        run: RunConfig {
            batch_size: 8,
            epochs: COLLAPSE_EPOCHS,
            ..t.run
        },
        schedule: crate::train::schedule::Schedule::Constant,
        ..t
    };
    let ((cnn, vit), warnings) = spread_after_pretraining(&base, "collapse-plain");
    assert!(
        cnn < 0.15 && vit < 0.15,
        "expected a collapse: spread cnn {cnn}, vit {vit}"
    );
    assert!(
        warnings.iter().any(|w| w == "collapse"),
        "no collapse warning: {warnings:?}"
    );

    let guarded = PretrainConfig {
        views: 2,
        collapse_guard: Some(CollapseGuard {
            weight: 1.0,
            target: 0.5,
            covariance: 0.0,
        }),
        ..base
    };
    let ((cnn, vit), warnings) = spread_after_pretraining(&guarded, "collapse-guarded");
    assert!(
        cnn > 0.3 && vit > 0.3,
        "guarded run collapsed: spread cnn {cnn}, vit {vit}"
    );
    assert!(warnings.is_empty(), "{warnings:?}");
}

const COLLAPSE_EPOCHS: u64 = 50;

#[test]
fn separate_view_batch_norm_normalises_each_view_by_its_own_statistics() {
    let d = device();
    let cfg = PretrainConfig {
        views: 2,
        ..tiny_pretrain()
    };
    let t = CassTrainer::new(&cfg, &d);
    let x1 = fixed_batch(&cfg, &d);
    let x2 = x1.clone().flip([3]); // another view of the same images
    let x = Tensor::cat(vec![x1.clone(), x2.clone()], 0).autodiff();
    let values = |v: Tensor<2>| v.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
    let separate = values(cnn_forward(&t.cnn, x.clone(), 2, ViewBatchNorm::Separate));
    let by_hand = values(Tensor::cat(
        vec![t.cnn.forward(x1.autodiff()), t.cnn.forward(x2.autodiff())],
        0,
    ));
    assert_eq!(separate, by_hand);
    let joint = values(cnn_forward(&t.cnn, x, 2, ViewBatchNorm::Joint));
    let d = joint
        .iter()
        .zip(&separate)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        d > 1e-4,
        "the batch statistics of both views and of each view gave the same outputs"
    );
}
