//! Parity with timm, from fixtures written by `parity/make_fixtures.py` (random-initialised
//! timm models, their weights and outputs; committed, so no Python is needed here).

use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::TensorData;

use super::*;
use crate::models::{BlockKind, Network, ResNetConfig};
use crate::ssl::cass::{CassTrainer, PretrainConfig};
use crate::testing::parity::{ParityModel, read_tensors};
use crate::testing::{device, grads_by_name, rel_err};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/timm")
        .join(name)
}

fn model(name: &str) -> ParityModel {
    ParityModel::read(&fixture(&format!("{name}.json"))).unwrap()
}

/// Our network for a fixture, with the fixture's timm weights loaded strictly.
fn load_case(name: &str, d: &Device) -> Network {
    model(name).load(&fixture(&format!("{name}.safetensors")), d).unwrap()
}

fn tensor<const D: usize>(t: &HostTensor, d: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), d)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

#[test]
fn forward_and_features_match_timm_in_eval_mode() {
    let d = device();
    for name in ["resnet_basic", "resnet_bottleneck", "vit_tiny"] {
        let io = read_tensors(&fixture(&format!("{name}.io.safetensors"))).unwrap();
        let net = load_case(name, &d).valid();
        let x: Tensor<4> = tensor(&io["input"], &d);
        let logits = rel_err(&values(net.forward(x.clone())), &io["logits"].data);
        let feats = rel_err(&values(net.forward_features(x)), &io["features"].data);
        assert!(
            logits <= 1e-4,
            "{name}: logits differ from timm by {logits:e} (relative)"
        );
        assert!(
            feats <= 1e-4,
            "{name}: features differ from timm by {feats:e} (relative)"
        );
    }
}

#[test]
fn pos_embed_is_resampled_like_timm_for_another_image_size() {
    let d = device();
    let io = read_tensors(&fixture("vit_tiny_at48.io.safetensors")).unwrap();
    let mut cfg = model("vit_tiny").vit().unwrap();
    cfg.image_size = 48;
    let vit = load_timm_vit(cfg.init(&d), &fixture("vit_tiny.safetensors"), &HashSet::new()).unwrap();
    let pe = rel_err(&values(vit.pos_embed.val()), &io["pos_embed"].data);
    assert!(pe <= 1e-5, "pos_embed differs from timm's resampling by {pe:e}");
    let logits = rel_err(
        &values(vit.valid().forward(tensor(&io["input"], &d))),
        &io["logits"].data,
    );
    assert!(logits <= 1e-4, "logits at 48 px differ from timm by {logits:e}");
}

#[test]
fn strict_loading_names_what_is_missing_extra_or_misshapen() {
    let d = device();
    let path = fixture("resnet_basic.safetensors");
    // A model of another head width: the head mismatches, everything else fits.
    let wrong = ResNetConfig::new(BlockKind::Basic, [1, 1, 1, 1])
        .with_base_width(8)
        .with_num_classes(3);
    let err = load_timm(wrong.init(&d), &path, &HashSet::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("wrong shape") && err.contains("fc.weight"), "{err}");
    // --ignore-head: the same load succeeds and keeps our freshly initialised head.
    load_timm(wrong.init(&d), &path, &head_names("fc")).unwrap();
    // A deeper model misses tensors; a ViT file into a ResNet has only unexpected ones.
    let deeper = ResNetConfig::new(BlockKind::Basic, [2, 1, 1, 1])
        .with_base_width(8)
        .with_num_classes(10);
    let err = load_timm(deeper.init(&d), &path, &HashSet::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("missing") && err.contains("layer1.1.conv1.weight"),
        "{err}"
    );
    let err = load_timm(deeper.init(&d), &fixture("vit_tiny.safetensors"), &HashSet::new()).unwrap_err();
    assert_eq!(err.code(), "bad-weights");
    assert!(
        err.to_string().contains("unexpected") && err.to_string().contains("blocks.0.attn.qkv.weight"),
        "{err}"
    );
}

#[test]
fn timm_to_ours_to_export_gives_identical_tensors() {
    let d = device();
    let dir = std::env::temp_dir().join(format!("cass-export-{}", std::process::id()));
    for name in ["resnet_basic", "resnet_bottleneck", "vit_tiny"] {
        let out = dir.join(format!("{name}.safetensors"));
        match load_case(name, &d) {
            Network::Cnn(m) => export_timm(&m, &out, 7).unwrap(),
            Network::Vit(m) => export_timm(&m, &out, 7).unwrap(),
        }
        let original = std::fs::read(fixture(&format!("{name}.safetensors"))).unwrap();
        let exported = std::fs::read(&out).unwrap();
        let (a, b) = (
            safetensors::SafeTensors::deserialize(&original).unwrap(),
            safetensors::SafeTensors::deserialize(&exported).unwrap(),
        );
        let mut names_a: Vec<String> = a.names().into_iter().map(String::from).collect();
        let mut names_b: Vec<String> = b.names().into_iter().map(String::from).collect();
        names_a.sort();
        names_b.sort();
        assert_eq!(names_a, names_b, "{name}: exported names differ from timm's");
        for n in &names_a {
            let (ta, tb) = (a.tensor(n).unwrap(), b.tensor(n).unwrap());
            assert_eq!((ta.dtype(), ta.shape()), (tb.dtype(), tb.shape()), "{name}: {n}");
            assert_eq!(
                ta.data(),
                tb.data(),
                "{name}: {n} is not bit-identical after the round trip"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_cass_step_matches_pytorch() {
    let d = device();
    let step: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture("cass_step.json")).unwrap()).unwrap();
    let cfg = PretrainConfig {
        cnn: model("resnet_basic").resnet().unwrap(),
        vit: model("vit_tiny").vit().unwrap(),
        image_size: 32,
        run: crate::train::run_config::RunConfig::new(2, 1, 0),
        schedule: crate::train::schedule::Schedule::Constant,
        // The rest as the tiny config: lr 1e-3 for both, default Adam and augmentation, one view.
        ..crate::testing::tiny_pretrain()
    };
    let none = HashSet::new();
    // Two copies: a train-mode forward updates the running statistics, so the gradient probe
    // and the step each get their own.
    let fresh = || {
        let mut t = CassTrainer::new(&cfg, &d);
        t.cnn = load_timm(t.cnn, &fixture("resnet_basic.safetensors"), &none).unwrap();
        t.vit = load_timm(t.vit, &fixture("vit_tiny.safetensors"), &none).unwrap();
        t
    };
    let (probe, mut t) = (fresh(), fresh());
    let io = read_tensors(&fixture("resnet_basic.io.safetensors")).unwrap();
    let x: Tensor<4> = tensor(&io["input"], &d);

    // Gradients of the one backward, against PyTorch's, tensor by tensor.
    let loss = crate::loss::cass_loss(
        probe.cnn.forward(x.clone().autodiff()),
        probe.vit.forward(x.clone().autodiff()),
    );
    let grads = loss.backward();
    let ours = [grads_by_name(&probe.cnn, &grads), grads_by_name(&probe.vit, &grads)];
    let theirs = [
        read_tensors(&fixture("cass_step.cnn_grads.safetensors")).unwrap(),
        read_tensors(&fixture("cass_step.vit_grads.safetensors")).unwrap(),
    ];
    // fp32 gradients summed in another order (worst measured: 9e-4 relative to the tensor's
    // largest entry, in the first BatchNorm); 2e-3 allowed.
    let mut worst = 0f64;
    for (o, r) in ours.iter().zip(&theirs) {
        assert_eq!(o.len(), r.len());
        for (name, g) in r {
            let err = rel_err(&o[name], &g.data);
            worst = worst.max(err);
            assert!(
                err <= 2e-3,
                "gradient of {name} differs from PyTorch by {err:e} (relative)"
            );
        }
    }

    eprintln!("worst relative gradient difference: {worst:e}");
    // Then the step itself: loss, and every parameter and running statistic after the update.
    let lr = step["lr"].as_f64().unwrap();
    let out = t.step(x, lr, lr);
    let want = step["loss"].as_f64().unwrap();
    assert!(
        (out.loss - want).abs() <= 1e-5 * want.abs().max(1.0),
        "loss {} vs PyTorch {want}",
        out.loss
    );
    let (mut compared, mut total) = (0, 0);
    for ((ours, file), g) in [
        (module_tensors(&t.cnn), "cass_step.cnn_after.safetensors"),
        (module_tensors(&t.vit), "cass_step.vit_after.safetensors"),
    ]
    .into_iter()
    .zip(&theirs)
    {
        for (name, r) in &read_tensors(&fixture(file)).unwrap() {
            let o = &ours[name];
            // Adam's first step moves every weight by lr * sign(g): where PyTorch's gradient is
            // ~0 the sign is rounding noise, so those elements are only held to the step bound.
            let grad = g.get(name);
            let gmax = grad.map_or(0.0, |g| g.data.iter().fold(0f32, |m, v| m.max(v.abs())));
            for (k, (a, b)) in o.data.iter().zip(&r.data).enumerate() {
                let conditioned = grad.is_none_or(|g| g.data[k].abs() > 1e-3 * gmax);
                let tol = if conditioned { 2e-5 } else { 2.0 * lr as f32 + 1e-6 };
                assert!((a - b).abs() <= tol, "{file}: {name}[{k}] = {a} vs PyTorch {b}");
                compared += conditioned as usize;
                total += 1;
            }
        }
    }
    // Measured: 51,092 of the elements have a gradient above 1e-3 of their tensor's largest.
    assert!(
        compared * 5 >= total * 2,
        "only {compared} of {total} elements held to 2e-5"
    );
}
