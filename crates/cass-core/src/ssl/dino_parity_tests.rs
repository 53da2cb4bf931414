//! One DINO step against PyTorch, from the `dino_step.*` fixtures that
//! `parity/make_fixtures.py --dino-only` writes: the `resnet_basic` timm backbone and a tiny head
//! (PyTorch's `weight_norm` last layer), two global and two local crops fed to both sides
//! unchanged, and the student, teacher and centre after one AdamW step with per-parameter
//! clipping, teacher EMA and centre update. Committed, so no Python is needed here.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use burn::tensor::TensorData;

use super::*;
use crate::checkpoint::{HostTensor, load_module_tensors, module_tensors};
use crate::models::dino_head::DinoHeadConfig;
use crate::testing::parity::{ParityModel, read_tensors};
use crate::testing::{device, tiny_vit};
use crate::train::run_config::RunConfig;
use crate::weights::load_timm;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/timm")
        .join(name)
}

fn tensors(name: &str) -> BTreeMap<String, HostTensor> {
    read_tensors(&fixture(name)).unwrap()
}

fn tensor<const D: usize>(t: &HostTensor, d: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), d)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// Our name for a tensor of the PyTorch head: `mlp.{0,2,4}` (GELUs between) are our
/// `mlp.{0,1,2}`, `last_layer.weight_v` is our `last_layer`; `last_layer.weight_g` has none.
fn our_head_name(name: &str) -> Option<String> {
    match name {
        "last_layer.weight_g" => None,
        "last_layer.weight_v" => Some("last_layer".into()),
        n => {
            let (layer, rest) = n.strip_prefix("mlp.")?.split_once('.')?;
            Some(format!("mlp.{}.{rest}", layer.parse::<usize>().ok()? / 2))
        }
    }
}

/// `[rows, cols]` -> `[cols, rows]`.
fn transposed(t: &HostTensor) -> HostTensor {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let data = (0..rows * cols).map(|i| t.data[(i % rows) * cols + i / rows]).collect();
    HostTensor {
        shape: vec![cols, rows],
        data,
    }
}

/// The PyTorch head's tensors under `prefix`, named and laid out as [`module_tensors`] gives
/// ours: `last_layer.weight_v` `[out, bottleneck]` becomes `[bottleneck, out]` (burn's layout,
/// where the linear weights are already transposed back). `weight_g` must be all ones (DINO's
/// `norm_last_layer`), which our head hard-wires.
fn head_tensors(all: &BTreeMap<String, HostTensor>, prefix: &str) -> BTreeMap<String, HostTensor> {
    let mut out = BTreeMap::new();
    for (name, t) in all {
        let Some(name) = name.strip_prefix(prefix) else {
            continue;
        };
        match our_head_name(name) {
            None => assert!(t.data.iter().all(|&g| g == 1.0), "{name} is not fixed at 1"),
            Some(ours) if ours == "last_layer" => drop(out.insert(ours, transposed(t))),
            Some(ours) => drop(out.insert(ours, t.clone())),
        }
    }
    out
}

/// Our gradients after clipping, read back from Adam's first moment (`(1 - beta1) g` after one
/// step), in [`module_tensors`]' layout: `layout` is that of the stepped module, whose linear
/// weights burn keeps (and Adam flattens) as `[in, out]`. The backbone's optimizer steps the
/// [`Network`] enum, so its names carry the variant (`Cnn.conv1.weight`); that is dropped here.
fn clipped_grads(opt: &Adam, layout: &BTreeMap<String, HostTensor>) -> BTreeMap<String, HostTensor> {
    let scale = 1.0 / (1.0 - opt.config.beta1);
    opt.state
        .iter()
        .map(|(name, m)| {
            let name = name.strip_prefix("Cnn.").unwrap_or(name);
            let shape = layout[name].shape.clone();
            let g = HostTensor {
                data: values(m.exp_avg.clone().mul_scalar(scale)),
                shape: shape.iter().rev().cloned().collect(),
            };
            let linear = name.starts_with("mlp.") && name.ends_with(".weight");
            (
                name.to_string(),
                if linear {
                    transposed(&g)
                } else {
                    HostTensor { shape, ..g }
                },
            )
        })
        .collect()
}

fn prefixed(map: BTreeMap<String, HostTensor>) -> BTreeMap<String, HostTensor> {
    map.into_iter().map(|(n, v)| (format!("head.{n}"), v)).collect()
}

#[test]
fn one_dino_step_matches_pytorch() {
    let d = device();
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture("dino_step.json")).unwrap()).unwrap();
    let num = |k: &str| meta[k].as_f64().unwrap();
    let width = |k: &str| meta[k].as_u64().unwrap() as usize;
    let (lr, batch) = (num("lr"), 2);
    let cfg = DinoConfig {
        arch: Arch::Cnn,
        cnn: ParityModel::read(&fixture("resnet_basic.json"))
            .unwrap()
            .resnet()
            .unwrap(),
        vit: tiny_vit(32, 1),
        head: DinoHeadConfig {
            out_dim: width("out_dim"),
            hidden_dim: width("hidden_dim"),
            bottleneck_dim: width("bottleneck_dim"),
        },
        image_size: 32,
        // At step 0 without warm-up the cosine schedules give their start values: lr = peak,
        // weight decay = weight_decay, momentum = momentum_teacher.
        base_lr: lr * 256.0 / batch as f64,
        min_lr: 1e-6,
        warmup_epochs: 0,
        adam: Default::default(),
        weight_decay: num("weight_decay"),
        weight_decay_end: 0.4,
        momentum_teacher: num("momentum"),
        teacher_temp: num("teacher_temp"),
        warmup_teacher_temp: 0.01,
        warmup_teacher_temp_epochs: 0,
        student_temp: num("student_temp"),
        center_momentum: num("center_momentum"),
        clip_grad: Some(num("clip")),
        freeze_last_layer_epochs: 0,
        global_crop_scale: [0.4, 1.0],
        local_crops: 2,
        local_crop_scale: [0.05, 0.4],
        local_crop_size: 16,
        augment: Default::default(),
        conv: Default::default(),
        run: RunConfig {
            collapse_warning_spread: 0.0,
            ..RunConfig::new(batch, 1, 0)
        },
        unknown: Default::default(),
    };
    let none = HashSet::new();
    let backbone_file = fixture("resnet_basic.safetensors");
    let mut t = DinoTrainer::new(&cfg, &d);
    let Network::Cnn(cnn) = t.student else {
        unreachable!("a ResNet config")
    };
    t.student = Network::Cnn(load_timm(cnn, &backbone_file, &none).unwrap());
    let head_file = fixture("dino_step.head.safetensors");
    t.student_head = load_module_tensors(
        t.student_head,
        &head_tensors(&tensors("dino_step.head.safetensors"), ""),
        &none,
        &head_file,
    )
    .unwrap();
    t.teacher = own_copy(&t.student).no_grad();
    t.teacher_head = own_copy(&t.student_head).no_grad();
    let io = tensors("dino_step.io.safetensors");
    t.loss.center = tensor(&io["center"], &d.clone().inner());

    let at = StepAt {
        step: 0,
        total: 10,
        epoch: 0,
        per_epoch: 10,
    };
    let report = t.step(tensor(&io["globals"], &d), Some(tensor(&io["locals"], &d)), at);
    let part = |name: &str| report.parts.iter().find(|(n, _)| n == name).unwrap().1;
    assert!((report.lr - lr).abs() <= 1e-12 * lr, "lr {} vs {lr}", report.lr);
    assert!((part("teacher_momentum") - num("momentum")).abs() <= 1e-12);
    assert_eq!(part("teacher_temp"), num("teacher_temp"));

    // fp32 on both sides, summed in other orders. Measured (`cargo test -p cass-core --lib
    // one_dino_step -- --nocapture`): loss 1.2e-7 apart, clipped gradient norms 1.3e-5
    // (relative), parameters 4.2e-7, centre 1.5e-8; each tolerance is ~10x that.
    let want = num("loss");
    let loss_err = (report.loss - want).abs();
    assert!(loss_err <= 2e-6, "loss {} vs PyTorch {want}", report.loss);

    // Clipping: our clipped gradient's norm against PyTorch's, parameter by parameter. (Adam's
    // first step, lr * g / (|g| + eps), hardly depends on the gradient's scale, so the updated
    // parameters alone would not show a missing or wrong clip.)
    let clip = num("clip");
    let clipped: HashSet<&str> = meta["clipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(!clipped.is_empty(), "the fixture must clip some gradient");
    let Network::Cnn(student) = &t.student else {
        unreachable!()
    };
    let ours_grads: BTreeMap<String, HostTensor> = clipped_grads(&t.opt_backbone, &module_tensors(student))
        .into_iter()
        .chain(prefixed(clipped_grads(&t.opt_head, &module_tensors(&t.student_head))))
        .collect();
    let mut norm_err = 0f64;
    let grad_norms = meta["grad_norms"].as_object().unwrap();
    assert_eq!(grad_norms.len(), ours_grads.len(), "the same parameters have gradients");
    for (name, norm) in grad_norms {
        let norm = norm.as_f64().unwrap();
        let ours_name = match name.strip_prefix("head.") {
            Some(n) => format!("head.{}", our_head_name(n).unwrap()),
            None => name.clone(),
        };
        let ours = ours_grads[&ours_name]
            .data
            .iter()
            .map(|&v| (v as f64).powi(2))
            .sum::<f64>();
        let ours = ours.sqrt();
        let theirs = if clipped.contains(name.as_str()) {
            norm * clip / (norm + 1e-6)
        } else {
            norm
        };
        let err = (ours - theirs).abs() / theirs;
        norm_err = norm_err.max(err);
        assert!(err <= 2e-4, "{name}: clipped gradient norm {ours} vs PyTorch {theirs}");
    }

    // Parameters and running statistics. Adam's first step moves every weight by about
    // lr * sign(g): where the gradient is ~0 the sign is rounding noise, so those elements are
    // only held to the step bound. An exactly zero gradient is no noise (layer4 sees 1x1 maps,
    // so the outer taps of its 3x3 kernels get none): there both sides only decay the weight.
    let student_after = tensors("dino_step.student_after.safetensors");
    let teacher_after = tensors("dino_step.teacher_after.safetensors");
    let before = tensors("resnet_basic.safetensors");
    let m = num("momentum") as f32;
    let Network::Cnn(teacher) = &t.teacher else {
        unreachable!()
    };
    let backbone = |all: &BTreeMap<String, HostTensor>| -> BTreeMap<String, HostTensor> {
        all.iter()
            .filter(|(n, _)| !n.starts_with("head."))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect()
    };
    // The teacher's backbone parameters are, by definition, m * before + (1 - m) * PyTorch's
    // student after; its running statistics come from its own train-mode forward.
    let mut teacher_backbone = backbone(&student_after);
    for (name, v) in teacher_backbone.iter_mut() {
        if name.contains("running") {
            *v = teacher_after[name].clone();
        } else {
            for (x, b) in v.data.iter_mut().zip(&before[name].data) {
                *x = m * b + (1.0 - m) * *x;
            }
        }
    }
    let ours_student: BTreeMap<String, HostTensor> = module_tensors(student)
        .into_iter()
        .chain(prefixed(module_tensors(&t.student_head)))
        .collect();
    let ours_teacher: BTreeMap<String, HostTensor> = module_tensors(teacher)
        .into_iter()
        .chain(prefixed(module_tensors(&t.teacher_head)))
        .collect();
    let want_student: BTreeMap<String, HostTensor> = backbone(&student_after)
        .into_iter()
        .chain(prefixed(head_tensors(&student_after, "head.")))
        .collect();
    let want_teacher: BTreeMap<String, HostTensor> = teacher_backbone
        .into_iter()
        .chain(prefixed(head_tensors(&teacher_after, "head.")))
        .collect();
    let (mut worst, mut compared, mut total) = (0f32, 0usize, 0usize);
    for (what, ours, want) in [
        ("student", &ours_student, &want_student),
        ("teacher", &ours_teacher, &want_teacher),
    ] {
        let unused = ["fc.bias", "fc.weight"];
        assert!(
            ours.keys().filter(|n| !unused.contains(&n.as_str())).eq(want.keys()),
            "{what}: every tensor but the classifier is compared"
        );
        for (name, r) in want {
            let o = &ours[name];
            assert_eq!(o.shape, r.shape, "{what}: {name}");
            let grad = ours_grads.get(name);
            let gmax = grad.map_or(0.0, |g| g.data.iter().fold(0f32, |m, v| m.max(v.abs())));
            for (k, (a, b)) in o.data.iter().zip(&r.data).enumerate() {
                let conditioned = grad.is_none_or(|g| g.data[k] == 0.0 || g.data[k].abs() > 1e-3 * gmax);
                let tol = if conditioned { 5e-6 } else { 2.0 * lr as f32 + 1e-6 };
                assert!((a - b).abs() <= tol, "{what}: {name}[{k}] = {a} vs PyTorch {b}");
                if conditioned {
                    worst = worst.max((a - b).abs());
                    compared += 1;
                }
                total += 1;
            }
        }
    }
    // Measured: 153,276 of the 161,472 elements.
    assert!(
        compared * 10 >= total * 9,
        "only {compared} of {total} elements held to 5e-6"
    );
    // The classifier, unused by DINO, has no gradient and is neither stepped nor decayed.
    assert_eq!(ours_student["fc.weight"], before["fc.weight"]);

    let center = values(t.loss.center.clone());
    let center_err = center
        .iter()
        .zip(&io["center_after"].data)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(center_err <= 2e-7, "centre differs from PyTorch's by {center_err}");
    eprintln!(
        "loss {loss_err:e}, clipped gradient norms {norm_err:e} (relative), parameters {worst:e} \
         ({compared} of {total} elements), centre {center_err:e}"
    );
}
