//! What a folder holds, for the callers that only have a path: a pre-training or fine-tuning
//! output folder (`out/`, whose checkpoint is `out/checkpoint/` or `out/best/`) or the checkpoint
//! folder itself. Callers ask here instead of reading `state.json` and guessing the layout.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::CassError;

/// The `state.json` this module reads is bounded: a run's state is a config and one loss per
/// step, far below this even for millions of steps.
const MAX_STATE_BYTES: u64 = 256 << 20;

/// What produced a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointKind {
    /// Self-supervised pre-training: both networks, optimizer moments, resumable.
    Pretrain,
    /// Fine-tuning: one network with its classifier, the best validation epoch.
    Finetune,
}

/// A checkpoint found from a path.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The folder holding `state.json` and the weights.
    pub dir: PathBuf,
    pub kind: CheckpointKind,
    /// The `kind` string of `state.json` (the method, e.g. `cass-pretrain`).
    pub method: String,
    /// Input side the networks were trained at.
    pub image_size: usize,
    /// Networks it holds (`cnn`, `vit`) and each weights file.
    pub networks: Vec<(String, PathBuf)>,
    /// Pre-training: steps done and whether the run completed. Fine-tuning: the best epoch.
    pub step: Option<u64>,
    pub completed: Option<bool>,
    pub best_epoch: Option<u64>,
}

impl Checkpoint {
    /// Finds the checkpoint in `path`: `path/state.json`, else `path/checkpoint/` (pre-training
    /// output), else `path/best/` (fine-tuning output).
    pub fn open(path: &Path) -> Result<Self, CassError> {
        let dir = ["", "checkpoint", "best"]
            .iter()
            .map(|sub| if sub.is_empty() { path.to_path_buf() } else { path.join(sub) })
            .find(|d| d.join("state.json").is_file())
            .ok_or_else(|| {
                CassError::data(
                    "no-checkpoint",
                    "no checkpoint here: expected state.json in the folder, in checkpoint/ (pre-training) or in best/ (fine-tuning)",
                    Some(path),
                )
            })?;
        let state_path = dir.join("state.json");
        let v = read_json(&state_path)?;
        super::check_state_version(&v, &state_path)?;
        let bad = |what: &str| CassError::data("bad-checkpoint", format!("state.json {what}"), Some(&state_path));
        let method = v
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| bad("has no kind"))?
            .to_string();
        let config = v.get("config").ok_or_else(|| bad("has no config"))?;
        let size = |c: &serde_json::Value| c.get("image_size").and_then(|s| s.as_u64());
        let image_size = size(config).ok_or_else(|| bad("has no config.image_size"))? as usize;
        let u64_of = |k: &str| v.get(k).and_then(|s| s.as_u64());
        let kind = if method.ends_with("-finetune") {
            CheckpointKind::Finetune
        } else if method.ends_with("-pretrain") {
            CheckpointKind::Pretrain
        } else {
            return Err(bad(&format!("has an unknown kind {method:?}")));
        };
        let networks = match kind {
            CheckpointKind::Pretrain => ["cnn", "vit"]
                .iter()
                .map(|a| (a.to_string(), dir.join(format!("{a}.safetensors"))))
                .filter(|(_, p)| p.is_file())
                .collect(),
            CheckpointKind::Finetune => {
                let arch = config
                    .get("arch")
                    .and_then(|a| a.as_str())
                    .ok_or_else(|| bad("has no config.arch"))?;
                vec![(arch.to_string(), dir.join("model.safetensors"))]
            }
        };
        Ok(Self {
            kind,
            method,
            image_size,
            networks,
            step: (kind == CheckpointKind::Pretrain).then(|| u64_of("step")).flatten(),
            completed: v.get("completed").and_then(|c| c.as_bool()),
            best_epoch: u64_of("best_epoch"),
            dir,
        })
    }
}

/// Reads a bounded JSON file.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, CassError> {
    let bytes = super::read_bounded(path, MAX_STATE_BYTES, "state.json")?;
    serde_json::from_slice(&bytes)
        .map_err(|e| CassError::data("bad-checkpoint", format!("unreadable state: {e}"), Some(path)))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn write(dir: &Path, json: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("state.json"), json).unwrap();
    }

    #[test]
    fn finds_each_layout_and_names_what_is_missing() {
        let root = std::env::temp_dir().join(format!("cass-inspect-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let pre = root.join("pre");
        write(
            &pre.join("checkpoint"),
            r#"{"kind":"cass-pretrain","config":{"image_size":32},"step":7,"completed":false}"#,
        );
        fs::write(pre.join("checkpoint/cnn.safetensors"), b"x").unwrap();
        let c = Checkpoint::open(&pre).unwrap();
        assert_eq!(c.kind, CheckpointKind::Pretrain);
        assert_eq!((c.image_size, c.step, c.completed), (32, Some(7), Some(false)));
        assert_eq!(c.dir, pre.join("checkpoint"));
        // Only the networks whose weights are there.
        assert_eq!(
            c.networks,
            vec![("cnn".to_string(), pre.join("checkpoint/cnn.safetensors"))]
        );
        // The checkpoint folder itself opens the same.
        assert_eq!(Checkpoint::open(&pre.join("checkpoint")).unwrap().dir, c.dir);

        let ft = root.join("ft");
        write(
            &ft.join("best"),
            r#"{"kind":"cass-finetune","config":{"image_size":16,"arch":"vit"},"best_epoch":2}"#,
        );
        let c = Checkpoint::open(&ft).unwrap();
        assert_eq!(
            (c.kind, c.image_size, c.best_epoch, c.step),
            (CheckpointKind::Finetune, 16, Some(2), None)
        );
        assert_eq!(c.networks[0].0, "vit");

        let e = Checkpoint::open(&root.join("nothing")).unwrap_err();
        assert_eq!(e.code(), "no-checkpoint");
        write(&root.join("odd"), r#"{"kind":"something","config":{"image_size":1}}"#);
        let e = Checkpoint::open(&root.join("odd")).unwrap_err();
        assert!(e.to_string().contains("unknown kind"), "{e}");
        write(&root.join("torn"), r#"{"kind":"cass-pretrain""#);
        assert_eq!(
            Checkpoint::open(&root.join("torn")).unwrap_err().code(),
            "bad-checkpoint"
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
