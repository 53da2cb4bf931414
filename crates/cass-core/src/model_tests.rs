use std::fs;
use std::sync::Arc;

use crate::checkpoint::CheckpointKind;
use crate::data::ImageSet;
use crate::device::BackendChoice;
use crate::events::{CancelToken, Silent};
use crate::explain::{CamMethod, HeadFusion, Method};
use crate::inference::{embed, evaluate};
use crate::loss::ClassificationLoss;
use crate::model::{Ask, LoadedModel, Pixels, Scoring};
use crate::models::Arch;
use crate::testing::{synthetic_images, tiny_finetune, tiny_pretrain};
use crate::train::finetune::{Init, Labeled, finetune};

const SIDE: usize = 16;

struct Fixture {
    root: std::path::PathBuf,
    bytes: Vec<u8>,
    set: Arc<ImageSet>,
    val: Labeled,
}

fn fixture(name: &str) -> Fixture {
    let root = std::env::temp_dir().join(format!("cass-model-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let n = 16;
    let (bytes, labels) = synthetic_images(n, SIDE, 5);
    let set = Arc::new(ImageSet::from_memory(bytes.clone(), n, SIDE, SIDE).unwrap());
    let val = Labeled {
        set: set.clone(),
        indices: (8..n).collect(),
        labels: labels[8..].to_vec(),
    };
    let train = Labeled {
        set: set.clone(),
        indices: (0..8).collect(),
        labels: labels[..8].to_vec(),
    };
    let mut p = tiny_pretrain();
    p.run.epochs = 1;
    crate::ssl::cass::pretrain(
        &p,
        set.clone(),
        vec![],
        &root.join("pre"),
        false,
        &mut Silent,
        &CancelToken::new(),
    )
    .unwrap();
    let mut ft = tiny_finetune(Arch::Cnn, Init::Pretrained(root.join("pre/checkpoint")));
    ft.max_epochs = 1;
    ft.class_names = vec!["stripes".into(), "dots".into()];
    finetune(&ft, &train, &val, &root.join("ft"), &mut Silent, &CancelToken::new()).unwrap();
    Fixture { root, bytes, set, val }
}

fn image(f: &Fixture, i: usize) -> &[u8] {
    &f.bytes[i * SIDE * SIDE * 3..(i + 1) * SIDE * SIDE * 3]
}

#[test]
fn a_loaded_classifier_answers_as_evaluate_scores_and_batching_changes_nothing() {
    let f = fixture("classifier");
    let m = LoadedModel::load(&f.root.join("ft"), None, BackendChoice::Cpu).unwrap();
    let info = m.info();
    assert_eq!(info.kind, CheckpointKind::Finetune);
    assert_eq!(info.method, "cass-finetune");
    assert_eq!(info.class_names, ["stripes", "dots"]);
    assert_eq!(info.num_classes, 2);
    assert_eq!(info.image_size, SIDE);
    // The tiny fine-tuning uses the paper's focal loss: one-vs-rest, so sigmoid scores.
    assert_eq!(
        ClassificationLoss::paper() == ClassificationLoss::CrossEntropy,
        info.scoring == Scoring::Softmax
    );

    let val: Vec<u8> = f.val.indices.iter().flat_map(|&i| image(&f, i).to_vec()).collect();
    let n = f.val.indices.len();
    let batched = m.run(Ask::Scores, &Pixels { bytes: &val, count: n }).unwrap();
    assert_eq!(batched.len(), n * 2);
    assert!(batched.iter().all(|s| (0.0..=1.0).contains(s)));
    // One image at a time gives the same scores as the batch: evaluation mode has no batch
    // statistics, so the binding may group callers' images freely.
    for (k, &i) in f.val.indices.iter().enumerate() {
        let one = m
            .run(
                Ask::Scores,
                &Pixels {
                    bytes: image(&f, i),
                    count: 1,
                },
            )
            .unwrap();
        for c in 0..2 {
            assert!((one[c] - batched[k * 2 + c]).abs() < 1e-5, "image {i} class {c}");
        }
    }
    // The predicted classes are the ones evaluate's confusion matrix counts.
    let metrics = evaluate(&f.root.join("ft"), &f.val, 3, BackendChoice::Cpu).unwrap();
    let mut confusion = vec![vec![0usize; 2]; 2];
    for (k, &label) in f.val.labels.iter().enumerate() {
        let pred = if batched[k * 2 + 1] > batched[k * 2] { 1 } else { 0 };
        confusion[label as usize][pred] += 1;
    }
    assert_eq!(confusion, metrics.confusion);
    fs::remove_dir_all(&f.root).unwrap();
}

#[test]
fn a_loaded_backbone_embeds_like_embed_and_refuses_to_predict() {
    let f = fixture("backbone");
    for arch in [Arch::Cnn, Arch::Vit] {
        let m = LoadedModel::load(&f.root.join("pre"), Some(arch), BackendChoice::Cpu).unwrap();
        assert_eq!(m.info().scoring, Scoring::None);
        assert_eq!(m.info().kind, CheckpointKind::Pretrain);
        let got = m
            .run(
                Ask::Embed,
                &Pixels {
                    bytes: &f.bytes[..3 * SIDE * SIDE * 3],
                    count: 3,
                },
            )
            .unwrap();
        let (want, dim) = embed(
            &f.root.join("pre"),
            Some(arch),
            f.set.clone(),
            vec![0, 1, 2],
            2,
            BackendChoice::Cpu,
        )
        .unwrap();
        assert_eq!(dim, m.info().feature_dim);
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{arch:?}: {a} vs {b}");
        }
        let err = m
            .run(
                Ask::Scores,
                &Pixels {
                    bytes: image(&f, 0),
                    count: 1,
                },
            )
            .unwrap_err();
        assert_eq!(err.code(), "no-classifier");
    }
    fs::remove_dir_all(&f.root).unwrap();
}

#[test]
fn misshapen_pixels_are_a_named_error() {
    let f = fixture("pixels");
    let m = LoadedModel::load(&f.root.join("ft"), None, BackendChoice::Cpu).unwrap();
    for (bytes, count) in [
        (&f.bytes[..10], 1),
        (&f.bytes[..SIDE * SIDE * 3], 2),
        (&f.bytes[..0], 0),
    ] {
        let err = m.run(Ask::Scores, &Pixels { bytes, count }).unwrap_err();
        assert!(err.to_string().contains("images"), "{err}");
    }
    fs::remove_dir_all(&f.root).unwrap();
}

/// A checkpoint's `state.json` is read without any schema: a network it implies that cannot be
/// allocated is refused before allocation (it used to abort the process with a failed
/// multi-gigabyte allocation, which no panic handler catches).
#[test]
fn a_state_json_implying_a_giant_network_is_refused_not_allocated() {
    let f = fixture("giant");
    let state = f.root.join("ft/best/state.json");
    let mut v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&state).unwrap()).unwrap();
    v["cnn"]["base_width"] = serde_json::json!(1 << 20);
    fs::write(&state, v.to_string()).unwrap();
    let err = LoadedModel::load(&f.root.join("ft"), None, BackendChoice::Cpu)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("parameters"), "{err}");
    // The same for a pre-training checkpoint's ViT.
    let state = f.root.join("pre/checkpoint/state.json");
    let mut v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&state).unwrap()).unwrap();
    v["config"]["vit"]["embed_dim"] = serde_json::json!(65536);
    v["config"]["vit"]["num_heads"] = serde_json::json!(1);
    fs::write(&state, v.to_string()).unwrap();
    let err = LoadedModel::load(&f.root.join("pre"), Some(Arch::Vit), BackendChoice::Cpu)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("parameters"), "{err}");
    fs::remove_dir_all(&f.root).unwrap();
}

#[test]
fn a_loaded_model_explains_its_own_predictions_in_chunks() {
    let f = fixture("explain");
    let m = LoadedModel::load(&f.root.join("ft"), None, BackendChoice::Cpu).unwrap();
    let n = 12; // more than one chunk of the engine's explanation batches
    let bytes = &f.bytes[..n * SIDE * SIDE * 3];
    let pixels = Pixels { bytes, count: n };
    let scores = m.run(Ask::Scores, &pixels).unwrap();
    let gradcam = Method::Cam {
        method: CamMethod::GradCam,
        stage: None,
    };
    let e = m.explain(&pixels, gradcam, &[None; 12]).unwrap();
    assert_eq!(e.maps.len(), n * SIDE * SIDE);
    assert!(e.maps.iter().all(|v| (0.0..=1.0).contains(v)));
    for i in 0..n {
        let row = &scores[i * 2..i * 2 + 2];
        let predicted = if row[1] > row[0] { 1 } else { 0 };
        assert_eq!(e.classes[i], Some(predicted), "image {i} explains its predicted class");
        let s = e.scores[i].unwrap();
        assert!(
            (s - row[predicted]).abs() < 1e-5,
            "image {i}: score {s} against {}",
            row[predicted]
        );
    }
    let other = m
        .explain(
            &Pixels {
                bytes: image(&f, 3),
                count: 1,
            },
            gradcam,
            &[Some(1)],
        )
        .unwrap();
    assert_eq!(other.classes, [Some(1)]);
    assert!((other.scores[0].unwrap() - scores[3 * 2 + 1]).abs() < 1e-5);
    let err = m
        .explain(
            &Pixels {
                bytes: image(&f, 0),
                count: 1,
            },
            gradcam,
            &[Some(2)],
        )
        .unwrap_err();
    assert!(err.to_string().contains("class 2 does not exist"), "{err}");
    fs::remove_dir_all(&f.root).unwrap();
}

#[test]
fn a_backbone_gives_rollout_only_and_names_what_works() {
    let f = fixture("explain-backbone");
    let px = Pixels {
        bytes: &f.bytes[..2 * SIDE * SIDE * 3],
        count: 2,
    };
    let rollout = Method::Rollout {
        fusion: HeadFusion::Max,
        discard_ratio: 0.5,
    };
    let vit = LoadedModel::load(&f.root.join("pre"), Some(Arch::Vit), BackendChoice::Cpu).unwrap();
    let e = vit.explain(&px, rollout, &[None, None]).unwrap();
    assert_eq!(e.classes, [None, None]);
    assert_eq!(e.maps.len(), 2 * SIDE * SIDE);
    let err = vit
        .explain(
            &px,
            Method::Cam {
                method: CamMethod::LayerCam,
                stage: None,
            },
            &[None, None],
        )
        .unwrap_err();
    assert_eq!(err.code(), "no-classifier");
    assert!(err.to_string().contains("attention-rollout works"), "{err}");
    let cnn = LoadedModel::load(&f.root.join("pre"), Some(Arch::Cnn), BackendChoice::Cpu).unwrap();
    let err = cnn
        .explain(
            &px,
            Method::Cam {
                method: CamMethod::GradCam,
                stage: None,
            },
            &[None, None],
        )
        .unwrap_err();
    assert!(err.to_string().contains("fine-tune it first"), "{err}");
    fs::remove_dir_all(&f.root).unwrap();
}
