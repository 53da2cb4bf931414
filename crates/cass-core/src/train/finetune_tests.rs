use std::fs;

use super::*;
use crate::device::BackendChoice;
use crate::events::Silent;
use crate::inference::{embed, evaluate};
use crate::testing::{synthetic_images, tiny_pretrain};

fn cfg(arch: Arch, init: Init) -> FinetuneConfig {
    crate::testing::tiny_finetune(arch, init)
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

/// One epoch of CASS pre-training of the tiny networks on `data`'s images, into `dir`.
fn pretrain_one_epoch(data: &Labeled, dir: &std::path::Path) {
    let mut pcfg = tiny_pretrain();
    pcfg.run.epochs = 1;
    let never = CancelToken::new();
    crate::ssl::cass::pretrain(&pcfg, data.set.clone(), vec![], dir, false, &mut Silent, &never).unwrap();
}

#[test]
fn finetune_from_pretraining_then_evaluate_reproduces_validation_metrics() {
    let root = std::env::temp_dir().join(format!("cass-ft-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let (train, val) = data(24);
    pretrain_one_epoch(&train, &root.join("pre"));
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

#[test]
fn finetune_from_a_weights_file_starts_from_its_tensors_and_refuses_a_misshapen_one() {
    let root = std::env::temp_dir().join(format!("cass-ft-weights-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let (train, val) = data(16);
    // A timm-named file of the tiny CNN: a short pre-training, exported.
    pretrain_one_epoch(&train, &root.join("pre"));
    let file = root.join("cnn.safetensors");
    crate::inference::export(&root.join("pre"), Some(Arch::Cnn), &file).unwrap();
    // A learning rate of 0: the kept weights are the file's, bar the new classifier.
    let mut c = cfg(Arch::Cnn, Init::Weights(file.clone()));
    c.lr = 0.0;
    c.max_epochs = 1;
    let out = finetune(&c, &train, &val, &root.join("ft"), &mut Silent, &CancelToken::new()).unwrap();
    let kept = crate::checkpoint::read_safetensors(&out.checkpoint.join("model.safetensors")).unwrap();
    let source = crate::checkpoint::read_safetensors(&file).unwrap();
    let name = kept
        .keys()
        .find(|k| k.ends_with("conv1.weight"))
        .expect("a conv1 weight")
        .clone();
    assert_eq!(kept[&name].data, source["conv1.weight"].data);
    // The ViT's file for the CNN: an error that names what does not fit, not a panic.
    let vit_file = root.join("vit.safetensors");
    crate::inference::export(&root.join("pre"), Some(Arch::Vit), &vit_file).unwrap();
    let e = finetune(
        &cfg(Arch::Cnn, Init::Weights(vit_file)),
        &train,
        &val,
        &root.join("ft2"),
        &mut Silent,
        &CancelToken::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("conv1") || e.contains("missing"), "{e}");
    fs::remove_dir_all(&root).unwrap();
}
