//! Checkpoints written before `state.json` had a version (committed under
//! `fixtures/checkpoints/unversioned`, written by `scripts/make-checkpoint-fixtures.ts` at the
//! commit that added this test) still load, answer and resume; the resumed run writes the
//! current version; a newer version than this build knows is refused, not misread.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::checkpoint::{Checkpoint, STATE_VERSION, read_json};
use crate::data::ImageSet;
use crate::device::BackendChoice;
use crate::events::{CancelToken, Silent};
use crate::model::{Ask, LoadedModel, Pixels};
use crate::models::Arch;
use crate::ssl::cass::{pretrain, read_state};
use crate::testing::synthetic_images;

fn fixture(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/checkpoints/unversioned")
        .join(kind)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn unversioned_checkpoints_load_and_answer() {
    for kind in ["pretrain", "finetune"] {
        let state = read_json(&fixture(kind).join("state.json")).unwrap();
        assert!(
            state.get("version").is_none(),
            "the fixture is of the unversioned format"
        );
        Checkpoint::open(&fixture(kind)).unwrap();
    }
    let (bytes, _) = synthetic_images(2, 16, 3);
    let px = Pixels {
        bytes: &bytes,
        count: 2,
    };
    let classifier = LoadedModel::load(&fixture("finetune"), None, BackendChoice::Cpu).unwrap();
    assert_eq!(classifier.info().class_names, ["vertical", "horizontal"]);
    let scores = classifier.run(Ask::Scores, &px).unwrap();
    assert_eq!(scores.len(), 4);
    assert!(scores.iter().all(|s| s.is_finite() && (0.0..=1.0).contains(s)));
    for arch in [Arch::Cnn, Arch::Vit] {
        let backbone = LoadedModel::load(&fixture("pretrain"), Some(arch), BackendChoice::Cpu).unwrap();
        let e = backbone.run(Ask::Embed, &px).unwrap();
        assert!(!e.is_empty() && e.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn an_unversioned_pre_training_resumes_and_is_written_in_the_current_format() {
    let out = std::env::temp_dir().join(format!("cass-compat-{}", std::process::id()));
    let _ = fs::remove_dir_all(&out);
    copy_dir(&fixture("pretrain"), &out.join("checkpoint"));
    let old = read_state(&out.join("checkpoint")).unwrap();
    assert_eq!(old.version, 1);
    assert!(old.completed && old.step > 0);
    let mut cfg = old.config.clone();
    cfg.run.epochs += 1;
    let (bytes, _) = synthetic_images(16, 16, 3);
    let set = Arc::new(ImageSet::from_memory(bytes, 16, 16, 16).unwrap());
    let done = pretrain(
        &cfg,
        set,
        (0..16).collect(),
        &out,
        true,
        &mut Silent,
        &CancelToken::new(),
    )
    .unwrap();
    assert_eq!(done.steps, 2 * old.step, "one more epoch after the old one");
    let new = read_state(&out.join("checkpoint")).unwrap();
    assert_eq!(new.version, STATE_VERSION);
    assert_eq!(
        new.losses[..old.losses.len()],
        old.losses[..],
        "the old losses are kept"
    );
    fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_state_from_a_newer_cass_ssl_is_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("cass-compat-new-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    copy_dir(&fixture("finetune"), &dir);
    let mut state = read_json(&dir.join("state.json")).unwrap();
    state["version"] = serde_json::json!(STATE_VERSION + 1);
    fs::write(dir.join("state.json"), serde_json::to_vec(&state).unwrap()).unwrap();
    let err = Checkpoint::open(&dir).unwrap_err();
    assert_eq!(err.code(), "bad-checkpoint");
    assert!(err.to_string().contains("needs a newer cass-ssl"), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_shared_run_settings_stay_top_level_fields_of_state_json() {
    // The run settings moved into `RunConfig`, flattened: an old `state.json` config reads, and
    // writes back every field it had, at the same place and with the same value; only the
    // settings added since are new.
    let state = read_json(&fixture("pretrain").join("state.json")).unwrap();
    let old = state["config"].as_object().unwrap().clone();
    let cfg: crate::ssl::cass::PretrainConfig = serde_json::from_value(state["config"].clone()).unwrap();
    // Through the text, as `state.json` is written (a `Value` built directly keeps an f32 widened).
    let again: serde_json::Value = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    for (k, v) in &old {
        assert_eq!(again.get(k), Some(v), "{k}");
    }
    let mut added: Vec<&String> = again
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !old.contains_key(*k))
        .collect();
    added.sort();
    assert_eq!(added, ["accumulate", "view_batch_norm"]);
}
