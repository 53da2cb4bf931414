//! CASS checkpoints: what a save writes, that a load restores it bit for bit, that a resumed run
//! continues the same loss curve, and that identical runs write identical files.

use std::fs;

use super::tests::{fixed_batch, tmp};
use super::*;
use crate::checkpoint::module_tensors;
use crate::events::{Event, Silent};
use crate::testing::{device, synthetic_images, tiny_pretrain};
use crate::train::run_config::RunConfig;

#[test]
fn save_then_load_gives_bit_identical_outputs() {
    let d = device();
    let cfg = tiny_pretrain();
    let mut t = CassTrainer::new(&cfg, &d);
    let x = fixed_batch(&cfg, &d);
    t.step(x.clone(), 1e-3, 1e-3);
    let dir = tmp("saveload");
    fs::create_dir_all(&dir).unwrap();
    Method::save(&t, &dir, 1).unwrap();
    let u = <CassTrainer as Method>::load(&cfg, &dir, &d).unwrap();
    let (a, b) = (module_tensors(&t.cnn), module_tensors(&u.cnn));
    for (k, v) in &a {
        assert_eq!(Some(v), b.get(k), "tensor {k} differs after reload");
    }
    let xv = x.clone().without_autodiff();
    assert_eq!(
        t.cnn.valid().forward(xv.clone()).into_data(),
        u.cnn.valid().forward(xv.clone()).into_data()
    );
    assert_eq!(
        t.vit.valid().forward(xv.clone()).into_data(),
        u.vit.valid().forward(xv).into_data()
    );
    assert_eq!(u.opt_cnn.step, 1);
    assert_eq!(t.opt_vit.state.len(), u.opt_vit.state.len());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_after_cancel_continues_the_same_loss_curve() {
    let cfg = tiny_pretrain();
    let (bytes, _) = synthetic_images(10, 16, 5);
    let set = Arc::new(ImageSet::from_memory(bytes, 10, 16, 16).unwrap());
    let a = tmp("resume-a");
    let full = pretrain(&cfg, set.clone(), vec![], &a, false, &mut Silent, &CancelToken::new()).unwrap();
    assert_eq!(full.status, Status::Completed);
    assert_eq!(full.steps, 4); // 2 epochs x floor(10 / 4) batches

    let b = tmp("resume-b");
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    let mut obs = move |e: &Event| {
        if let Event::Step { step: 3, .. } = e {
            c2.cancel();
        }
    };
    let part = pretrain(&cfg, set.clone(), vec![], &b, false, &mut obs, &cancel).unwrap();
    assert_eq!(part.status, Status::Cancelled);
    assert_eq!(part.steps, 3);
    // Checkpoints are published by rename: no staging folder is left beside them.
    let leftovers: Vec<String> = fs::read_dir(&b)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Resuming with another batch size keeps the checkpoint's, and says so.
    let mut warned = Vec::new();
    let other = PretrainConfig {
        run: RunConfig {
            batch_size: 2,
            backend: crate::device::BackendChoice::Auto,
            ..cfg.run
        },
        views: 2,
        ..cfg.clone()
    };
    let probe_cancel = CancelToken::new();
    probe_cancel.cancel();
    let mut seen = |e: &Event| {
        if let Event::Warning { code, message, .. } = e {
            warned.push(format!("{code}: {message}"));
        }
    };
    let again = pretrain(&other, set.clone(), vec![], &b, true, &mut seen, &probe_cancel).unwrap();
    assert_eq!(again.steps, 3, "cancelled before its first step");
    // The device is the call's to choose (a run moved to another machine): it is used, and
    // recorded, rather than the checkpoint's.
    let saved: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(b.join("checkpoint/state.json")).unwrap()).unwrap();
    assert_eq!(saved["config"]["backend"], "auto");
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].starts_with("resume-keeps-config: resuming keeps the checkpoint's config")
            && warned[0].ends_with("not used: batch_size, views"),
        "{warned:?}"
    );
    // A state.json whose step is past the run (or disagrees with its losses) is refused, not
    // taken as a completed run.
    let state = b.join("checkpoint/state.json");
    let text = fs::read_to_string(&state).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["step"] = serde_json::json!(1_000_000);
    fs::write(&state, v.to_string()).unwrap();
    let err = pretrain(&cfg, set.clone(), vec![], &b, true, &mut Silent, &CancelToken::new()).unwrap_err();
    assert_eq!(err.code(), "bad-checkpoint", "{err}");
    fs::write(&state, text).unwrap();
    let rest = pretrain(&cfg, set, vec![], &b, true, &mut Silent, &CancelToken::new()).unwrap();
    assert_eq!(rest.status, Status::Completed);
    // Bit for bit: the losses read back from state.json included (serde_json's default float
    // parser was 1 ULP off on some of them; the workspace turns on `float_roundtrip`).
    assert_eq!(rest.losses, full.losses);
    fs::remove_dir_all(&a).unwrap();
    fs::remove_dir_all(&b).unwrap();
}

#[test]
fn identical_runs_write_identical_checkpoint_files() {
    let cfg = tiny_pretrain();
    let (bytes, _) = synthetic_images(8, 16, 5);
    let set = Arc::new(ImageSet::from_memory(bytes, 8, 16, 16).unwrap());
    let dirs = [tmp("same-a"), tmp("same-b")];
    for d in &dirs {
        pretrain(&cfg, set.clone(), vec![], d, false, &mut Silent, &CancelToken::new()).unwrap();
    }
    let files = [
        "cnn.safetensors",
        "vit.safetensors",
        "cnn.adam.safetensors",
        "vit.adam.safetensors",
        "state.json",
    ];
    for f in files {
        let [a, b] = dirs.clone().map(|d| fs::read(d.join("checkpoint").join(f)).unwrap());
        assert!(a == b, "{f} differs between two identical runs");
    }
    for d in &dirs {
        fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn the_convolution_strategy_is_saved_with_the_checkpoint_and_restored() {
    use crate::models::conv::ConvStrategy;
    let t = tiny_pretrain();
    let cfg = PretrainConfig {
        conv: ConvStrategy::Batched,
        run: RunConfig { epochs: 1, ..t.run },
        ..t
    };
    let (bytes, _) = synthetic_images(8, 16, 5);
    let set = Arc::new(ImageSet::from_memory(bytes, 8, 16, 16).unwrap());
    let dir = tmp("conv-saved");
    pretrain(&cfg, set, vec![], &dir, false, &mut Silent, &CancelToken::new()).unwrap();
    assert_eq!(
        read_state(&dir.join("checkpoint")).unwrap().config.conv,
        ConvStrategy::Batched
    );
    let restored = crate::inference::restore(&dir, Some(crate::models::Arch::Cnn), Default::default()).unwrap();
    match restored.net {
        crate::models::Network::Cnn(m) => assert_eq!(m.conv, ConvStrategy::Batched),
        _ => panic!("asked for the CNN"),
    }
    // A config without the field (written before it existed) reads as the default.
    let mut v = serde_json::to_value(&cfg).unwrap();
    v.as_object_mut().unwrap().remove("conv");
    assert_eq!(
        serde_json::from_value::<PretrainConfig>(v).unwrap().conv,
        ConvStrategy::Auto
    );
    fs::remove_dir_all(&dir).unwrap();
}
