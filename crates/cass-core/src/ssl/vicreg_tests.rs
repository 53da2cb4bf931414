use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::data::{ImageSet, upload};
use crate::events::{CancelToken, Silent};
use crate::ssl::Pretrained;
use crate::ssl::pretrain::run;
use crate::testing::{device, synthetic_images, tiny_finetune, tiny_resnet, tiny_vit};
use crate::train::finetune::{Init, Labeled, finetune};
use crate::train::run::Status;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cass-vicreg-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

fn tiny_vicreg(arch: Arch) -> VicregConfig {
    VicregConfig {
        run: RunConfig {
            collapse_warning_spread: 0.0,
            ..RunConfig::new(4, 2, 5)
        },
        arch,
        cnn: tiny_resnet(1),
        vit: tiny_vit(16, 1),
        expander: vec![32, 32, 32],
        image_size: 16,
        lr: 1e-3,
        min_lr: 1e-6,
        warmup_epochs: 0,
        adam: Default::default(),
        weights: Default::default(),
        augment: Default::default(),
        conv: Default::default(),
        unknown: Default::default(),
    }
}

#[test]
fn a_step_lowers_nothing_it_should_not_and_reports_its_three_terms() {
    let cfg = tiny_vicreg(Arch::Cnn);
    let mut t = VicregTrainer::new(&cfg, &device());
    let (bytes, _) = synthetic_images(4, 16, 1);
    let set = ImageSet::from_memory(bytes, 4, 16, 16).unwrap();
    let raw = upload(&crate::data::assemble(&set, &[0, 1, 2, 3], None), &set, &device());
    let at = StepAt {
        step: 0,
        total: 4,
        epoch: 0,
        per_epoch: 2,
    };
    let views = t.views(raw.clone(), at, 1);
    assert_eq!(views[0].dims(), [8, 3, 16, 16], "two views of 4 images");
    let r = t.train_step(raw, at, 1);
    let part = |n: &str| r.parts.iter().find(|(k, _)| k == n).unwrap().1;
    let want = 25.0 * part("invariance") + 25.0 * part("variance") + part("covariance");
    assert!(
        (r.loss - want).abs() < 1e-4 * want.abs().max(1.0),
        "{} vs {want}",
        r.loss
    );
    assert!(r.spread.cnn.is_some() && r.spread.vit.is_none());
}

#[test]
fn a_run_resumes_bit_for_bit_and_its_backbone_fine_tunes() {
    let cfg = tiny_vicreg(Arch::Vit);
    let (bytes, labels) = synthetic_images(10, 16, 5);
    let set = Arc::new(ImageSet::from_memory(bytes, 10, 16, 16).unwrap());
    let a = tmp("full");
    let full = run::<VicregTrainer>(&cfg, set.clone(), vec![], &a, false, &mut Silent, &CancelToken::new()).unwrap();
    assert_eq!(full.steps, 4);
    assert!(full.losses.iter().all(|l| l.is_finite()), "{:?}", full.losses);

    let b = tmp("part");
    // Stopped after step 3 (a cancellation: a shorter run would have another schedule).
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    let mut obs = move |e: &crate::events::Event| {
        if let crate::events::Event::Step { step: 3, .. } = e {
            c2.cancel();
        }
    };
    let part = run::<VicregTrainer>(&cfg, set.clone(), vec![], &b, false, &mut obs, &cancel).unwrap();
    assert_eq!((part.status, part.steps), (Status::Cancelled, 3));
    let rest = run::<VicregTrainer>(&cfg, set.clone(), vec![], &b, true, &mut Silent, &CancelToken::new()).unwrap();
    assert_eq!(rest.losses, full.losses, "resume must continue the same run");

    // The registry reads its checkpoint: one network, which fine-tuning starts from.
    let p = Pretrained::read(&a.join("checkpoint")).unwrap();
    assert_eq!(p.networks(), [Arch::Vit]);
    let labeled = Labeled {
        set: set.clone(),
        indices: (0..10).collect(),
        labels,
    };
    let ft = tiny_finetune(Arch::Vit, Init::Pretrained(a.clone()));
    let done = finetune(&ft, &labeled, &labeled, &tmp("ft"), &mut Silent, &CancelToken::new()).unwrap();
    assert_eq!(done.status, Status::Completed);
    for d in [a, b, tmp("ft")] {
        let _ = fs::remove_dir_all(d);
    }
}

#[test]
fn bad_settings_are_named() {
    let field = |c: VicregConfig| match c.validate().unwrap_err() {
        CassError::Config { field, .. } => field,
        e => panic!("{e:?}"),
    };
    let ok = tiny_vicreg(Arch::Cnn);
    ok.validate().unwrap();
    assert_eq!(
        field(VicregConfig {
            expander: vec![],
            ..ok.clone()
        }),
        "expander"
    );
    assert_eq!(
        field(VicregConfig {
            expander: vec![16_384, 16_384, 16_384],
            ..ok.clone()
        }),
        "expander"
    );
    assert_eq!(field(VicregConfig { lr: 0.0, ..ok.clone() }), "lr");
    let mut unknown = ok.clone();
    unknown.unknown.insert("sim_coef".into(), serde_json::json!(25));
    assert_eq!(field(unknown), "sim_coef");
    // state.json round trip: the shared run settings stay top-level fields.
    let json = serde_json::to_value(&ok).unwrap();
    assert_eq!(json["batch_size"], 4);
    let back: VicregConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back.run, ok.run);
}
