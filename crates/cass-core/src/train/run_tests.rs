//! The training loop's own tests, with a probe learner that records what the loop asks of it.

use super::*;

/// Records what the loop asks of it; its "loss" is the first pixel of the batch's first
/// image, so the batch sequence shows in the losses.
#[derive(Default)]
struct Probe {
    batches: Vec<Vec<u8>>,
    epochs: Vec<(u64, bool)>,
    saves: Vec<u64>,
    stop_after_epoch: Option<u64>,
    nan_at: Option<u64>,
}

impl Learner for Probe {
    fn loss_name(&self) -> &str {
        "probe loss"
    }
    fn step(&mut self, batch: &HostBatch, step: u64, _total: u64) -> StepReport {
        let plane = batch.pixels.len() / batch.size;
        let firsts: Vec<u8> = (0..batch.size)
            .map(|b| (batch.pixels[b * plane] * 255.0).round() as u8)
            .collect();
        self.batches.push(firsts);
        let loss = if self.nan_at == Some(step) {
            f64::NAN
        } else {
            step as f64
        };
        StepReport {
            loss,
            parts: vec![],
            spread: Default::default(),
            lr: 0.1,
        }
    }
    fn end_epoch(&mut self, epoch: u64, _mean: f64, full: bool, _at: &Progress) -> Result<EpochEnd, CassError> {
        self.epochs.push((epoch, full));
        Ok(EpochEnd {
            stop: self.stop_after_epoch == Some(epoch),
            warnings: vec![("note".into(), format!("epoch {epoch}"))],
            ..Default::default()
        })
    }
    fn save(&mut self, at: &Progress) -> Result<Option<PathBuf>, CassError> {
        self.saves.push(at.step);
        Ok(Some(PathBuf::from("ck")))
    }
}

/// 10 one-pixel images whose value is their index.
fn plan(total: u64, checkpoint_every: Option<u64>) -> Plan {
    let bytes: Vec<u8> = (0..10u8).flat_map(|i| [i, i, i]).collect();
    Plan {
        set: Arc::new(ImageSet::from_memory(bytes, 10, 1, 1).unwrap()),
        samples: Arc::new((0..10).collect()),
        labels: None,
        batch_size: 3,
        drop_last: true,
        seed: 5,
        total_steps: total,
        checkpoint_every,
    }
}

fn events(
    p: &Plan,
    l: &mut Probe,
    start: u64,
    losses: Vec<f64>,
    cancel: &CancelToken,
) -> (Result<RunEnd, CassError>, Vec<String>) {
    let mut seen = Vec::new();
    let mut obs = |e: &Event| {
        seen.push(match e {
            Event::Step { step, epoch, .. } => format!("step {step} e{epoch}"),
            Event::Epoch { epoch, mean_loss, .. } => format!("epoch {epoch} mean {mean_loss}"),
            Event::Checkpoint { step, .. } => format!("checkpoint {step}"),
            Event::Warning { message, .. } => format!("warning {message}"),
            Event::Device { backend, .. } => format!("device {backend}"),
        })
    };
    (run(p, l, start, losses, &mut obs, cancel), seen)
}

#[test]
fn epochs_checkpoints_and_events_come_in_order() {
    // 10 images, batch 3, drop_last: 3 steps per epoch; 7 steps = 2 epochs and one step.
    let p = plan(7, Some(2));
    let mut l = Probe::default();
    let (end, seen) = events(&p, &mut l, 0, vec![], &CancelToken::new());
    let end = end.unwrap();
    assert_eq!((end.status, end.step, end.losses.len()), (Status::Completed, 7, 7));
    assert_eq!(l.epochs, vec![(0, true), (1, true)]);
    // Each epoch's end and every 2 steps, never after the last step (the caller's).
    assert_eq!(l.saves, vec![2, 3, 4, 6]);
    assert_eq!(
        &seen[..6],
        [
            "step 1 e0",
            "step 2 e0",
            "checkpoint 2",
            "step 3 e0",
            "epoch 0 mean 1",
            "warning epoch 0"
        ]
    );
    assert_eq!(seen.last().unwrap(), "step 7 e2");
    // Each epoch is a permutation: 9 distinct images of the 10, seeded by (seed, epoch).
    let mut first: Vec<u8> = l.batches[..3].concat();
    first.sort();
    first.dedup();
    assert_eq!(first.len(), 9);
    assert_ne!(l.batches[..3], l.batches[3..6]);
}

#[test]
fn a_resumed_run_sees_the_batches_of_an_uninterrupted_one() {
    let p = plan(8, None);
    let mut whole = Probe::default();
    let (end, _) = events(&p, &mut whole, 0, vec![], &CancelToken::new());
    let end = end.unwrap();
    // Stop at step 4 (inside epoch 1), then resume there with the losses so far.
    let mut part = Probe::default();
    let (first, _) = events(&plan(4, None), &mut part, 0, vec![], &CancelToken::new());
    let first = first.unwrap();
    let mut rest = Probe::default();
    let (second, seen) = events(&p, &mut rest, first.step, first.losses, &CancelToken::new());
    let second = second.unwrap();
    assert_eq!([part.batches, rest.batches].concat(), whole.batches);
    assert_eq!(second.losses, end.losses);
    // The epoch entered part-way is reported, but not as full; its mean covers all of it.
    assert_eq!(rest.epochs, vec![(1, false)]);
    assert!(seen.contains(&"epoch 1 mean 4".to_string()), "{seen:?}");
}

#[test]
fn stop_cancel_and_non_finite_loss() {
    let mut l = Probe {
        stop_after_epoch: Some(0),
        ..Default::default()
    };
    let end = events(&plan(9, None), &mut l, 0, vec![], &CancelToken::new())
        .0
        .unwrap();
    assert_eq!((end.status, end.step), (Status::Completed, 3));
    assert!(
        l.saves.is_empty(),
        "a stopping run leaves the final checkpoint to its caller"
    );

    let cancel = CancelToken::new();
    cancel.cancel();
    let mut l = Probe::default();
    let end = events(&plan(9, None), &mut l, 0, vec![], &cancel).0.unwrap();
    assert_eq!((end.status, end.step), (Status::Cancelled, 0));

    let mut l = Probe {
        nan_at: Some(4),
        ..Default::default()
    };
    let e = events(&plan(9, None), &mut l, 0, vec![], &CancelToken::new())
        .0
        .err()
        .unwrap();
    assert_eq!(e.code(), "non-finite-loss");
    assert!(e.to_string().contains("probe loss became NaN"), "{e}");
}
