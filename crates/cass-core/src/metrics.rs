//! Classification metrics, each named as reported: macro-F1, balanced accuracy (macro recall),
//! accuracy, per-class precision / recall / F1, confusion matrix, one-vs-rest AUROC, and the
//! authors' micro-F1 over `sigmoid(logit) > 0.5` against one-hot targets.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PerClass {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub num_samples: usize,
    pub accuracy: f64,
    pub balanced_accuracy: f64,
    pub macro_f1: f64,
    /// The authors' metric: micro-F1 over all (sample, class) pairs with `sigmoid > 0.5`.
    pub micro_f1_sigmoid05: f64,
    /// Mean of the one-vs-rest AUROCs of the classes that have both positives and negatives;
    /// `None` when no class does.
    pub macro_auroc: Option<f64>,
    pub auroc_per_class: Vec<Option<f64>>,
    pub per_class: Vec<PerClass>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 { num / den } else { 0.0 }
}

/// Area under the ROC curve by the rank statistic (ties count one half).
pub fn auroc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Average ranks over ties.
    let mut ranks = vec![0.0; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[order[k]] = avg;
        }
        i = j + 1;
    }
    let rank_sum: f64 = (0..scores.len()).filter(|&k| positive[k]).map(|k| ranks[k]).sum();
    Some((rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0) / (n_pos * n_neg) as f64)
}

/// Computes every metric from logits `[n][classes]` (row-major) and integer targets.
/// `scores` for AUROC are softmax probabilities when `softmax_scores`, else sigmoids.
pub fn compute(logits: &[f32], targets: &[usize], num_classes: usize, softmax_scores: bool) -> Metrics {
    let n = targets.len();
    assert_eq!(logits.len(), n * num_classes, "logits and targets disagree");
    let mut confusion = vec![vec![0usize; num_classes]; num_classes];
    let mut scores = vec![0f64; n * num_classes];
    let (mut tp, mut fp, mut fneg) = (0usize, 0usize, 0usize);
    for i in 0..n {
        let row = &logits[i * num_classes..(i + 1) * num_classes];
        let pred = (0..num_classes).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0);
        confusion[targets[i]][pred] += 1;
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        for c in 0..num_classes {
            let sig = 1.0 / (1.0 + (-(row[c] as f64)).exp());
            scores[i * num_classes + c] = if softmax_scores {
                (row[c] as f64 - max).exp() / z
            } else {
                sig
            };
            let predicted = sig > 0.5;
            let actual = targets[i] == c;
            match (predicted, actual) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fneg += 1,
                _ => {}
            }
        }
    }
    let per_class: Vec<PerClass> = (0..num_classes)
        .map(|c| {
            let tp = confusion[c][c] as f64;
            let support: usize = confusion[c].iter().sum();
            let predicted: usize = (0..num_classes).map(|t| confusion[t][c]).sum();
            let precision = ratio(tp, predicted as f64);
            let recall = ratio(tp, support as f64);
            PerClass {
                precision,
                recall,
                f1: ratio(2.0 * precision * recall, precision + recall),
                support,
            }
        })
        .collect();
    let present: Vec<&PerClass> = per_class.iter().filter(|p| p.support > 0).collect();
    let correct: usize = (0..num_classes).map(|c| confusion[c][c]).sum();
    let auroc_per_class: Vec<Option<f64>> = (0..num_classes)
        .map(|c| {
            let s: Vec<f64> = (0..n).map(|i| scores[i * num_classes + c]).collect();
            let p: Vec<bool> = targets.iter().map(|&t| t == c).collect();
            auroc(&s, &p)
        })
        .collect();
    let defined: Vec<f64> = auroc_per_class.iter().flatten().copied().collect();
    Metrics {
        num_samples: n,
        accuracy: ratio(correct as f64, n as f64),
        balanced_accuracy: ratio(present.iter().map(|p| p.recall).sum(), present.len() as f64),
        macro_f1: ratio(per_class.iter().map(|p| p.f1).sum(), num_classes as f64),
        micro_f1_sigmoid05: ratio(2.0 * tp as f64, (2 * tp + fp + fneg) as f64),
        macro_auroc: (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64),
        auroc_per_class,
        per_class,
        confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_three_class_case() {
        // targets 0,0,1,1,2,2 ; predictions 0,1,1,1,2,0 (argmax of the one-hot-ish logits)
        let preds = [0, 1, 1, 1, 2, 0];
        let targets = [0, 0, 1, 1, 2, 2];
        let mut logits = vec![-3.0f32; 18];
        for (i, &p) in preds.iter().enumerate() {
            logits[i * 3 + p] = 3.0;
        }
        let m = compute(&logits, &targets, 3, true);
        assert_eq!(m.confusion, vec![vec![1, 1, 0], vec![0, 2, 0], vec![1, 0, 1]]);
        assert!((m.accuracy - 4.0 / 6.0).abs() < 1e-12);
        // recalls 1/2, 1, 1/2 -> balanced accuracy 2/3
        assert!((m.balanced_accuracy - 2.0 / 3.0).abs() < 1e-12);
        // precisions 1/2, 2/3, 1 ; F1 = 1/2, 0.8, 2/3
        let f1 = [0.5, 0.8, 2.0 / 3.0];
        for c in 0..3 {
            assert!((m.per_class[c].f1 - f1[c]).abs() < 1e-12);
        }
        assert!((m.macro_f1 - f1.iter().sum::<f64>() / 3.0).abs() < 1e-12);
        // sigmoid(3) > 0.5 exactly at the predicted class: TP 4, FP 2, FN 2 -> 8 / 12
        assert!((m.micro_f1_sigmoid05 - 8.0 / 12.0).abs() < 1e-12);
    }

    #[test]
    fn auroc_by_hand_with_ties() {
        assert_eq!(auroc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]), Some(0.75));
        assert_eq!(auroc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(auroc(&[0.5, 0.2], &[true, true]), None);
    }
}
