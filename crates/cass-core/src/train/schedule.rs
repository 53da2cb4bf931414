//! Learning-rate schedules.

use serde::{Deserialize, Serialize};
use std::f64::consts::PI;

/// A learning-rate schedule, evaluated at a global iteration `t` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Schedule {
    /// The authors' schedule: cosine annealing with `t_max` stepped every iteration, periodic
    /// with period `2 t_max` (PyTorch's recursive `CosineAnnealingLR` never stops at `t_max`):
    /// `lr_t = min + (base - min) (1 + cos(pi t / t_max)) / 2`.
    CosineWave { t_max: u64, min_lr: f64 },
    /// Linear warm-up from 0 over `warmup` iterations, then one cosine decay to `min_lr` at the
    /// end of the run.
    Cosine { warmup: u64, min_lr: f64 },
    /// A constant rate.
    Constant,
}

impl Schedule {
    /// The paper preset (T_max 16, eta_min 1e-6).
    pub fn paper() -> Self {
        Schedule::CosineWave {
            t_max: 16,
            min_lr: 1e-6,
        }
    }

    /// Learning rate at iteration `t` of a run of `total` iterations.
    pub fn lr(&self, base: f64, t: u64, total: u64) -> f64 {
        match *self {
            Schedule::CosineWave { t_max, min_lr } => {
                let t_max = t_max.max(1) as f64;
                min_lr + (base - min_lr) * (1.0 + (PI * t as f64 / t_max).cos()) / 2.0
            }
            Schedule::Cosine { warmup, min_lr } => {
                if t < warmup {
                    return base * (t + 1) as f64 / warmup as f64;
                }
                let span = total.saturating_sub(warmup).max(1) as f64;
                let progress = ((t - warmup) as f64 / span).min(1.0);
                min_lr + (base - min_lr) * (1.0 + (PI * progress).cos()) / 2.0
            }
            Schedule::Constant => base,
        }
    }
}

/// A cosine from `start` at step 0 to `end` at step `total` (DINO's `cosine_scheduler` without
/// warm-up).
pub fn cosine(start: f64, end: f64, step: u64, total: u64) -> f64 {
    let progress = (step as f64 / total.max(1) as f64).min(1.0);
    end + (start - end) * (1.0 + (std::f64::consts::PI * progress).cos()) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 + 1e-7 * b.abs()
    }

    #[test]
    fn cosine_wave_spec_vectors() {
        let s = Schedule::paper();
        for (t, want) in [
            (0, 1e-3),
            (1, 9.904022e-4),
            (8, 5.005e-4),
            (15, 1.0597752e-5),
            (16, 1e-6),
            (32, 1e-3),
        ] {
            let got = s.lr(1e-3, t, 10_000);
            assert!(close(got, want), "t={t}: {got} vs {want}");
        }
        assert!(close(s.lr(3e-4, 297, 0), 1.2133399685858832e-4));
        assert!(close(s.lr(3e-4, 594, 0), 1.2380009889563552e-5));
    }

    #[test]
    fn cosine_warms_up_then_decays_to_min() {
        let s = Schedule::Cosine {
            warmup: 10,
            min_lr: 1e-6,
        };
        assert!(close(s.lr(1e-3, 0, 100), 1e-4));
        assert!(close(s.lr(1e-3, 9, 100), 1e-3));
        assert!(close(s.lr(1e-3, 10, 100), 1e-3));
        assert!(close(s.lr(1e-3, 100, 100), 1e-6));
        let mut prev = f64::INFINITY;
        for t in 10..=100 {
            let lr = s.lr(1e-3, t, 100);
            assert!(lr <= prev);
            prev = lr;
        }
    }

    #[test]
    fn cosine_runs_from_start_to_end() {
        assert!((cosine(0.04, 0.4, 0, 100) - 0.04).abs() < 1e-12);
        assert!((cosine(0.04, 0.4, 50, 100) - 0.22).abs() < 1e-12);
        assert!((cosine(0.996, 1.0, 100, 100) - 1.0).abs() < 1e-12);
    }
}
