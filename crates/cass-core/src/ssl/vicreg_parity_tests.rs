//! One VICReg step against PyTorch, from the `vicreg_step.*` fixtures that
//! `parity/make_vicreg_fixture.py` writes: the `resnet_basic` timm backbone and a 32-32-32
//! expander, two fixed views (no augmentation: the same tensors on both sides), the loss and its
//! three terms, every gradient, and the parameters and running statistics after one AdamW step.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use burn::module::{ModuleVisitor, Param};
use burn::tensor::TensorData;

use super::*;
use crate::checkpoint::{HostTensor, load_module_tensors, module_tensors};
use crate::params::ParamNamer;
use crate::testing::parity::{ParityModel, read_tensors};
use crate::testing::{device, tiny_vit};
use crate::weights::load_timm;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/timm")
        .join(name)
}

/// Every gradient in `grads`, by timm name, in PyTorch's layout (burn keeps a linear weight
/// `[in, out]`; PyTorch `[out, in]`).
fn named_grads<M: Module>(module: &M, grads: &GradientsParams, prefix: &str) -> BTreeMap<String, Vec<f32>> {
    struct Gather<'a> {
        grads: &'a GradientsParams,
        namer: ParamNamer,
        prefix: &'a str,
        out: BTreeMap<String, Vec<f32>>,
    }
    impl ModuleVisitor for Gather<'_> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.namer.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.namer.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let Some(g) = self.grads.get::<D>(param.id) else { return };
            let g = if self.namer.is_linear_weight() {
                g.reshape([0, 0]).swap_dims(0, 1).reshape([-1])
            } else {
                g.reshape([-1])
            };
            let name = self.namer.param_name();
            let name = name.strip_prefix("Cnn.").unwrap_or(&name).to_string();
            let values = g.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
            self.out.insert(format!("{}{name}", self.prefix), values);
        }
    }
    let mut v = Gather {
        grads,
        namer: ParamNamer::default(),
        prefix,
        out: BTreeMap::new(),
    };
    module.visit(&mut v);
    v.out
}

/// Largest difference relative to the tensor's largest magnitude (at least 1e-3).
fn rel_diff(ours: &[f32], theirs: &[f32]) -> f32 {
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max) / scale
}

#[test]
fn one_vicreg_step_matches_pytorch() {
    let d = device();
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture("vicreg_step.json")).unwrap()).unwrap();
    let num = |k: &str| meta[k].as_f64().unwrap();
    let widths: Vec<usize> = meta["widths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_u64().unwrap() as usize)
        .collect();
    let cfg = VicregConfig {
        run: RunConfig::new(8, 1, 0),
        arch: Arch::Cnn,
        cnn: ParityModel::read(&fixture("resnet_basic.json"))
            .unwrap()
            .resnet()
            .unwrap(),
        vit: tiny_vit(32, 1),
        expander: widths,
        image_size: 32,
        lr: num("lr"),
        min_lr: 0.0,
        warmup_epochs: 0,
        adam: crate::train::adam::AdamConfig {
            weight_decay: num("weight_decay"),
            ..Default::default()
        },
        weights: Default::default(),
        augment: Default::default(),
        conv: Default::default(),
        unknown: Default::default(),
    };
    let none = HashSet::new();
    let mut t = VicregTrainer::new(&cfg, &d);
    let Network::Cnn(cnn) = t.backbone else {
        unreachable!("a ResNet config")
    };
    t.backbone = Network::Cnn(load_timm(cnn, &fixture("resnet_basic.safetensors"), &none).unwrap());
    let expander_file = fixture("vicreg_step.expander.safetensors");
    t.expander = load_module_tensors(
        t.expander,
        &read_tensors(&expander_file).unwrap(),
        &none,
        &expander_file,
    )
    .unwrap();
    let io = read_tensors(&fixture("vicreg_step.io.safetensors")).unwrap();
    let views = &io["views"];
    let views = Tensor::<4>::from_data(TensorData::new(views.data.clone(), views.shape.clone()), &d);
    let at = StepAt {
        step: 0,
        total: 10,
        epoch: 0,
        per_epoch: 10,
    };

    let (grads, report) = t.gradients(views, 1.0, at);
    // fp32 on both sides, summed in other orders. Measured (`cargo test -p cass-core --lib
    // one_vicreg_step -- --nocapture`): loss 0, terms 2.4e-7, gradients 1.2e-4 (relative to each
    // tensor's largest), parameters 2.1e-5; the tolerances are 5-10x that.
    let part = |name: &str| report.parts.iter().find(|(n, _)| n == name).unwrap().1;
    let loss_err = (report.loss - num("loss")).abs();
    let term_err = ["invariance", "variance", "covariance"]
        .iter()
        .map(|k| (part(k) - num(k)).abs())
        .fold(0.0, f64::max);
    assert!(loss_err <= 2e-5, "loss {} vs PyTorch {}", report.loss, num("loss"));
    assert!(term_err <= 2e-6, "a term is {term_err} from PyTorch's");

    let theirs = read_tensors(&fixture("vicreg_step.grads.safetensors")).unwrap();
    let ours: BTreeMap<String, Vec<f32>> = named_grads(&t.backbone, &grads.backbone, "")
        .into_iter()
        .chain(named_grads(&t.expander, &grads.expander, "expander."))
        .collect();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "the same parameters have gradients"
    );
    let mut grad_err = 0f32;
    for (name, g) in &ours {
        let e = rel_diff(g, &theirs[name].data);
        grad_err = grad_err.max(e);
        assert!(e <= 1e-3, "{name}: gradient {e} (relative) from PyTorch's");
    }

    // One AdamW step: parameters (each moves by about lr * sign(g), so elements whose gradient is
    // rounding noise are held only to that bound) and the running statistics of both views'
    // forward passes.
    t.apply(grads, at);
    let after = read_tensors(&fixture("vicreg_step.after.safetensors")).unwrap();
    let Network::Cnn(cnn) = &t.backbone else { unreachable!() };
    let ours_after: BTreeMap<String, HostTensor> = module_tensors(cnn)
        .into_iter()
        .chain(
            module_tensors(&t.expander)
                .into_iter()
                .map(|(n, v)| (format!("expander.{n}"), v)),
        )
        .collect();
    let lr = num("lr") as f32;
    let mut param_err = 0f32;
    for (name, want) in &after {
        let got = &ours_after.get(name).unwrap_or_else(|| panic!("{name} missing")).data;
        let g = theirs.get(name).map(|g| g.data.as_slice());
        for (i, (a, b)) in got.iter().zip(&want.data).enumerate() {
            let err = (a - b).abs();
            let noise = g.is_some_and(|g| g[i].abs() < 1e-6);
            let bound = if noise { 2.1 * lr } else { 1e-4 + 1e-4 * b.abs() };
            assert!(err <= bound, "{name}[{i}]: {a} vs PyTorch {b}");
            if !noise {
                param_err = param_err.max(err);
            }
        }
    }
    eprintln!(
        "vicreg parity: loss {loss_err:.2e}, terms {term_err:.2e}, gradients {grad_err:.2e} (relative), parameters {param_err:.2e}"
    );
}
