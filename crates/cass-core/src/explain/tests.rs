//! Explanations against pytorch-grad-cam 1.5.7 and a rollout reference written from the paper
//! (`parity/make_explain_fixtures.py`, on the committed timm fixtures), and the gradient with
//! respect to an activation against a finite difference.

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};

use super::*;
use crate::checkpoint::HostTensor;
use crate::testing::parity::{ParityModel, read_tensors};
use crate::testing::{device, max_abs, rel_err};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/timm")
        .join(name)
}

fn load(name: &str, d: &Device) -> Network {
    ParityModel::read(&fixture(&format!("{name}.json")))
        .unwrap()
        .load(&fixture(&format!("{name}.safetensors")), d)
        .unwrap()
        .valid()
}

fn reference() -> BTreeMap<String, HostTensor> {
    read_tensors(&fixture("explain.safetensors")).unwrap()
}

fn input(t: &HostTensor, d: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(t.data.clone(), t.shape.clone()), d)
}

const GRADCAM: Method = Method::Cam {
    method: CamMethod::GradCam,
    stage: None,
};

#[test]
fn class_activation_maps_match_pytorch_grad_cam() {
    let d = device();
    let r = reference();
    for (name, x) in [
        ("resnet_basic", "cnn.input"),
        ("resnet_bottleneck", "cnn.input"),
        ("vit_tiny", "vit.input"),
    ] {
        let net = load(name, &d);
        let x = input(&r[x], &d);
        for method in [CamMethod::GradCam, CamMethod::GradCamPlusPlus, CamMethod::LayerCam] {
            for (tag, targets) in [("predicted", [None, None]), ("chosen", [Some(3), Some(7)])] {
                // pytorch-grad-cam was given `layer4` (the last stage) for the ResNets.
                let stage = name.starts_with("resnet").then_some(4);
                let got = explain(&net, x.clone(), Method::Cam { method, stage }, &targets, true).unwrap();
                let key = format!("{name}.{}.{tag}", method.name());
                let raw = rel_err(&got.raw, &r[&format!("{key}.raw")].data);
                assert!(
                    raw <= 1e-4,
                    "{key}: raw map differs from pytorch-grad-cam by {raw:e} (relative)"
                );
                if let Some(want) = r.get(&format!("{key}.map")) {
                    let err = max_abs(&got.maps, &want.data);
                    assert!(
                        err <= 1e-4,
                        "{key}: scaled map differs from pytorch-grad-cam by {err:e}"
                    );
                    assert_eq!(want.shape[1], got.side);
                }
                if tag == "chosen" {
                    assert_eq!(got.targets, vec![Some(3), Some(7)]);
                }
            }
        }
    }
}

#[test]
fn attention_rollout_matches_the_reference() {
    let d = device();
    let r = reference();
    let net = load("vit_tiny", &d);
    let x = input(&r["vit.input"], &d);
    for (fusion, name) in [
        (HeadFusion::Mean, "mean"),
        (HeadFusion::Max, "max"),
        (HeadFusion::Min, "min"),
    ] {
        for ratio in [0.0, 0.9] {
            let got = explain(
                &net,
                x.clone(),
                Method::Rollout {
                    fusion,
                    discard_ratio: ratio,
                },
                &[None, None],
                false,
            )
            .unwrap();
            let want = &r[&format!("rollout.{name}.{ratio:.1}")].data;
            let err = max_abs(&got.raw, want);
            assert!(
                err <= 1e-5,
                "rollout {name} {ratio}: differs from the reference by {err:e}"
            );
            assert_eq!(got.grid, [4, 4]);
            assert!(got.logits.is_empty(), "a rollout without the head computes no logits");
        }
    }
}

/// The CLS row of a rollout is one row of a product of row-stochastic matrices: over all
/// tokens (its own entry included) it sums to 1, so over the patches to less.
#[test]
fn rollout_rows_stay_a_distribution() {
    let d = device();
    let net = load("vit_tiny", &d);
    let x = Tensor::<4>::random([3, 3, 32, 32], Distribution::Normal(0.0, 1.0), &d);
    let got = explain(
        &net,
        x,
        Method::Rollout {
            fusion: HeadFusion::Mean,
            discard_ratio: 0.0,
        },
        &[None; 3],
        true,
    )
    .unwrap();
    for row in got.raw.chunks(16) {
        let s: f32 = row.iter().sum();
        assert!(s > 0.0 && s < 1.0, "patch share of the CLS row is {s}");
        assert!(row.iter().all(|&v| v >= 0.0));
    }
    assert_eq!(got.logits.len(), 3 * 10);
}

/// The two-part forward gives the true gradient with respect to the explained activation: the
/// ViT's `norm1` output of the last block, checked by a central difference along a random
/// direction (the CNN's head is linear after pooling, so the ViT is the harder case).
#[test]
fn activation_gradient_matches_a_finite_difference() {
    let d = device();
    let Network::Vit(v) = load("vit_tiny", &d) else {
        unreachable!()
    };
    let x = Tensor::<4>::random([1, 3, 32, 32], Distribution::Normal(0.0, 1.0), &d);
    let (last, before) = v.blocks.split_last().unwrap();
    let mut t = v.embed_tokens(x);
    for b in before {
        t = b.forward(t);
    }
    let normed = last.norm1.forward(t.clone());
    let class = 4;
    let logit = |a: Tensor<3>| -> f64 {
        let l = v.head.forward(v.pool(last.forward_from_norm1(t.clone(), a)));
        l.narrow(1, class, 1).into_scalar::<f32>() as f64
    };
    let (_, _, grad) = logits_and_grad(
        normed.clone(),
        |a| v.head.forward(v.pool(last.forward_from_norm1(t.clone().autodiff(), a))),
        &[Some(class)],
    )
    .unwrap();
    let dir = Tensor::<3>::random(normed.dims(), Distribution::Normal(0.0, 1.0), &d);
    let analytic = (grad * dir.clone()).sum().into_scalar::<f32>() as f64;
    let eps = 1e-2;
    let numeric =
        (logit(normed.clone() + dir.clone().mul_scalar(eps)) - logit(normed - dir.mul_scalar(eps))) / (2.0 * eps);
    let err = (analytic - numeric).abs() / numeric.abs().max(1e-3);
    assert!(
        err < 2e-2,
        "directional derivative {analytic} against finite difference {numeric}"
    );
    assert!(analytic.abs() > 1e-4, "the gradient at the patches must not vanish");
}

/// Each image's map depends on that image only (BatchNorm on running statistics, and the
/// batch's explained logits summed, each from its own activation).
#[test]
fn maps_do_not_depend_on_the_batch() {
    let d = device();
    for name in ["resnet_basic", "vit_tiny"] {
        let net = load(name, &d);
        let side = if name == "vit_tiny" { 32 } else { 64 };
        let x = Tensor::<4>::random([3, 3, side, side], Distribution::Normal(0.0, 1.0), &d);
        let all = explain(&net, x.clone(), GRADCAM, &[None; 3], true).unwrap();
        let one = explain(&net, x.narrow(0, 1, 1), GRADCAM, &[None], true).unwrap();
        let plane = side * side;
        let err = max_abs(&all.maps[plane..2 * plane], &one.maps);
        assert!(err <= 1e-5, "{name}: image 1's map changes with the batch by {err:e}");
        assert!(all.maps.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}

#[test]
fn explaining_refuses_what_it_cannot_do() {
    let d = device();
    let cnn = load("resnet_basic", &d);
    let x = Tensor::<4>::zeros([1, 3, 64, 64], &d);
    let rollout = Method::Rollout {
        fusion: HeadFusion::Mean,
        discard_ratio: 0.0,
    };
    let e = explain(&cnn, x.clone(), rollout, &[None], true).unwrap_err();
    assert!(e.to_string().contains("needs a ViT"), "{e}");
    let bad_stage = Method::Cam {
        method: CamMethod::GradCam,
        stage: Some(5),
    };
    let e = explain(&cnn, x.clone(), bad_stage, &[None], true).unwrap_err();
    assert!(e.to_string().contains("stages 1 to 4"), "{e}");
    let e = explain(&cnn, x.clone(), GRADCAM, &[Some(10)], true).unwrap_err();
    assert!(e.to_string().contains("class 10 does not exist"), "{e}");
    let e = explain(&cnn, x, GRADCAM, &[None, None], true).unwrap_err();
    assert!(e.to_string().contains("one target per image"), "{e}");
    let vit = load("vit_tiny", &d);
    let bad = Method::Rollout {
        fusion: HeadFusion::Mean,
        discard_ratio: 1.0,
    };
    let e = explain(&vit, Tensor::zeros([1, 3, 32, 32], &d), bad, &[None], false).unwrap_err();
    assert!(e.to_string().contains("discardRatio"), "{e}");
}

#[test]
fn resize_follows_opencv_half_pixel_rule() {
    // 2 -> 4: destination centres fall at -0.25, 0.25, 0.75, 1.25 source pixels; the outer two
    // clamp to the edges.
    let out = cam::resize_bilinear(&[0.0, 1.0], [1, 2], [1, 4]);
    assert_eq!(out, vec![0.0, 0.25, 0.75, 1.0]);
    let flat = cam::resize_bilinear(&[0.5; 9], [3, 3], [7, 7]);
    assert!(flat.iter().all(|&v| (v - 0.5).abs() < 1e-7));
    let mut constant = vec![2.0f32; 4];
    cam::min_max(&mut constant);
    assert!(
        constant.iter().all(|&v| v == 0.0),
        "a constant map scales to zeros, not NaN"
    );
}

/// An earlier stage is explained through the later ones, their BatchNorm on running
/// statistics: `layer2` of the bottleneck ResNet against pytorch-grad-cam; the two halves of the
/// split forward equal the whole; the automatic stage is the deepest with a grid of at least 4.
#[test]
fn an_earlier_stage_is_explained_through_evaluation_mode_batch_norm() {
    assert_eq!(
        [
            auto_stage(224),
            auto_stage(96),
            auto_stage(64),
            auto_stage(32),
            auto_stage(8)
        ],
        [4, 3, 3, 2, 1]
    );
    let d = device();
    let r = reference();
    let net = load("resnet_bottleneck", &d);
    let x = input(&r["cnn.input"], &d);
    let method = Method::Cam {
        method: CamMethod::GradCam,
        stage: Some(2),
    };
    let got = explain(&net, x.clone(), method, &[None, None], true).unwrap();
    assert_eq!(got.grid, [12, 12]);
    let raw = rel_err(&got.raw, &r["resnet_bottleneck.gradcam.layer2.raw"].data);
    assert!(
        raw <= 1e-4,
        "layer2 raw map differs from pytorch-grad-cam by {raw:e} (relative)"
    );
    let err = max_abs(&got.maps, &r["resnet_bottleneck.gradcam.layer2.map"].data);
    assert!(
        err <= 1e-4,
        "layer2 scaled map differs from pytorch-grad-cam by {err:e}"
    );
    let Network::Cnn(cnn) = net else { unreachable!() };
    let halves = cnn.forward_from_stage(cnn.forward_to_stage(x.clone(), 2), 2);
    assert!(max_abs(&host(cnn.forward(x)), &host(halves)) < 1e-5);
    let e = explain(
        &Network::Cnn(cnn),
        Tensor::zeros([1, 3, 64, 64], &d),
        GRADCAM,
        &[None],
        true,
    )
    .unwrap();
    assert_eq!(e.grid, [4, 4], "64 px: stage 3, 4 x 4");
}
