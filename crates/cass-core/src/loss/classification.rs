//! Fine-tuning losses. The CASS paper's preset is the authors' sigmoid focal loss (after Lin et
//! al., "Focal Loss for Dense Object Detection", 2017) on one-hot targets `y`, alpha 1, gamma 2,
//! eps 1e-12, times a per-class weight, averaged over batch x classes, exactly as their
//! `FocalLoss.forward`:
//! `log_pt = y log(p + eps) + (1 - y) log(1 - p + eps)`, `pt = exp(log_pt)`,
//! `l = -alpha (1 - pt)^gamma log_pt w_c`.
//! Alpha scales the positive AND the negative term, so at alpha = 1 negatives keep full weight.
//! RetinaNet's alpha-balanced form (alpha on positives, `1 - alpha` on negatives) is a different
//! loss, offered separately as [`ClassificationLoss::FocalAlphaBalanced`]: at alpha = 1 it gives
//! negatives no weight at all, so nothing stops every logit from rising.

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, sigmoid};
use serde::{Deserialize, Serialize};

/// Added to `p` and to `1 - p` (after the subtraction: in f32, `1 + 1e-12` is 1, and a
/// saturated sigmoid would give `log(0)`).
const FOCAL_EPS: f64 = 1e-12;

/// How per-class loss weights are derived from the class counts of the labelled split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassWeighting {
    /// All classes weigh 1.
    None,
    /// The authors' min-max scaling of counts into [0.2, 1] (most frequent class 1.0).
    MinMaxCounts,
    /// `n_total / (n_classes * n_c)`, the usual inverse-frequency balancing.
    InverseFrequency,
}

/// The classification loss used for fine-tuning.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ClassificationLoss {
    /// The authors' sigmoid focal loss on one-hot targets: alpha scales both terms.
    Focal { alpha: f64, gamma: f64 },
    /// RetinaNet's alpha-balanced sigmoid focal loss: alpha on positives, `1 - alpha` on negatives.
    FocalAlphaBalanced { alpha: f64, gamma: f64 },
    /// Softmax cross-entropy.
    CrossEntropy,
}

impl ClassificationLoss {
    /// The paper preset: focal, alpha 1, gamma 2.
    pub fn paper() -> Self {
        ClassificationLoss::Focal { alpha: 1.0, gamma: 2.0 }
    }

    /// Mean loss over the batch (and classes, for focal).
    ///
    /// # Shapes
    /// `logits`: `[batch, classes]`, `targets`: `[batch]` class indices, `weights`: `[classes]`
    /// -> `[1]`
    pub fn forward(&self, logits: Tensor<2>, targets: Tensor<1, Int>, weights: Tensor<1>) -> Tensor<1> {
        let [b, c] = logits.dims();
        let one_hot = targets.one_hot(c).float(); // [batch, classes]
        let w = weights.reshape([1, c]); // [1, classes]
        match *self {
            ClassificationLoss::Focal { alpha, gamma } => {
                let p = sigmoid(logits);
                let log_pt = one_hot.clone() * p.clone().add_scalar(FOCAL_EPS).log()
                    + one_hot.neg().add_scalar(1.0) * p.neg().add_scalar(1.0).add_scalar(FOCAL_EPS).log();
                let modulator = log_pt.clone().exp().neg().add_scalar(1.0).powf_scalar(gamma);
                (modulator * log_pt * w).mul_scalar(-alpha).mean()
            }
            ClassificationLoss::FocalAlphaBalanced { alpha, gamma } => {
                let p = sigmoid(logits);
                let pos = one_hot.clone()
                    * p.clone().neg().add_scalar(1.0).powf_scalar(gamma)
                    * p.clone().add_scalar(FOCAL_EPS).log()
                    * alpha;
                let neg = one_hot.neg().add_scalar(1.0)
                    * p.clone().powf_scalar(gamma)
                    * p.neg().add_scalar(1.0).add_scalar(FOCAL_EPS).log()
                    * (1.0 - alpha);
                ((pos + neg).neg() * w).mean()
            }
            ClassificationLoss::CrossEntropy => {
                let nll = (log_softmax(logits, 1) * one_hot.clone()).sum_dim(1).neg(); // [b, 1]
                let wt = (one_hot * w).sum_dim(1); // [b, 1]
                (nll * wt).sum().div_scalar(b as f64)
            }
        }
    }
}

/// Per-class weights from class counts. Errors name the empty class.
pub fn class_weights(counts: &[usize], weighting: ClassWeighting) -> Result<Vec<f32>, String> {
    if let Some(c) = counts.iter().position(|&n| n == 0) {
        return Err(format!("class {c} has no labelled images"));
    }
    Ok(match weighting {
        ClassWeighting::None => vec![1.0; counts.len()],
        ClassWeighting::MinMaxCounts => {
            let min = *counts.iter().min().unwrap_or(&0) as f64;
            let max = *counts.iter().max().unwrap_or(&0) as f64;
            counts
                .iter()
                .map(|&n| {
                    if max > min {
                        0.2 + 0.8 * (n as f64 - min) / (max - min)
                    } else {
                        1.0
                    }
                })
                .map(|w| w as f32)
                .collect()
        }
        ClassWeighting::InverseFrequency => {
            let total: usize = counts.iter().sum();
            counts
                .iter()
                .map(|&n| (total as f64 / (counts.len() as f64 * n as f64)) as f32)
                .collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    use crate::testing::{device, rand_tensor, scalar};

    #[test]
    fn spec_class_weight_vector() {
        let w = class_weights(&[1321, 1457, 1595, 1339], ClassWeighting::MinMaxCounts).unwrap();
        let want = [0.2, 0.597_080_3, 1.0, 0.252_554_74];
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{w:?}");
        }
    }

    #[test]
    fn empty_class_is_an_error_naming_the_class() {
        let err = class_weights(&[3, 0, 2], ClassWeighting::InverseFrequency).unwrap_err();
        assert!(err.contains("class 1"), "{err}");
    }

    #[test]
    fn spec_focal_vector() {
        // CASS-SPEC section 7: the authors' form, alpha 1, gamma 2.
        let d = device();
        let logits = Tensor::<2>::from_floats([[2.0, -1.0, 0.5]], &d);
        let targets = Tensor::<1, Int>::from_ints([0], &d);
        let w = Tensor::<1>::from_floats([1.0, 0.5, 0.2], &d);
        let got = scalar(ClassificationLoss::paper().forward(logits, targets, w)) as f64;
        assert!((got - 0.029_538_303_920_242_714).abs() < 1e-7, "{got}");
    }

    #[test]
    fn focal_negatives_keep_weight_at_alpha_one() {
        // The regression: the old reading weighed negatives by 1 - alpha, i.e. zero here, so a
        // confidently wrong negative logit cost nothing.
        let d = device();
        let logits = Tensor::<2>::from_floats([[5.0, 5.0]], &d);
        let targets = Tensor::<1, Int>::from_ints([0], &d);
        let w = Tensor::<1>::ones([2], &d);
        let focal = scalar(ClassificationLoss::paper().forward(logits.clone(), targets.clone(), w.clone())) as f64;
        let p = 1.0 / (1.0 + (-5.0f64).exp());
        let pos = (1.0 - p).powi(2) * -(p + 1e-12).ln();
        let neg = p.powi(2) * -(1.0 - p + 1e-12).ln();
        assert!((focal - (pos + neg) / 2.0).abs() < 1e-5, "{focal}");
        let balanced = ClassificationLoss::FocalAlphaBalanced { alpha: 1.0, gamma: 2.0 };
        let only_pos = scalar(balanced.forward(logits, targets, w)) as f64;
        assert!((only_pos - pos / 2.0).abs() < 1e-7, "{only_pos}");
    }

    #[test]
    fn focal_is_finite_and_non_negative_for_batch_sizes_1_to_8() {
        let d = device();
        for batch in 1..=8 {
            let logits = rand_tensor([batch, 5], batch as u64, &d).mul_scalar(30.0);
            let targets = Tensor::<1, Int>::from_ints(
                TensorData::new((0..batch as i64).map(|i| i % 5).collect::<Vec<_>>(), [batch]),
                &d,
            );
            let w = Tensor::<1>::ones([5], &d);
            for loss in [
                ClassificationLoss::paper(),
                ClassificationLoss::FocalAlphaBalanced {
                    alpha: 0.25,
                    gamma: 2.0,
                },
            ] {
                let v = scalar(loss.forward(logits.clone(), targets.clone(), w.clone()));
                assert!(v.is_finite() && v >= 0.0, "{loss:?} at batch {batch}: {v}");
            }
        }
    }

    #[test]
    fn cross_entropy_matches_hand_computation() {
        let d = device();
        let logits = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], &d);
        let targets = Tensor::<1, Int>::from_ints([2, 0], &d);
        let w = Tensor::<1>::ones([3], &d);
        let got = scalar(ClassificationLoss::CrossEntropy.forward(logits, targets, w)) as f64;
        let l0 = -(3.0f64.exp() / (1f64.exp() + 2f64.exp() + 3f64.exp())).ln();
        let l1 = 3f64.ln();
        assert!((got - (l0 + l1) / 2.0).abs() < 1e-5);
    }
}
