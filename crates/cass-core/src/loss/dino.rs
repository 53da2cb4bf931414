//! The DINO loss (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers",
//! ICCV 2021, eq. 1 and section 3.1): for every pair of a global view `a` seen by the teacher
//! and another view `v` seen by the student,
//! `H(P_t(a), P_s(v)) = - sum_k P_t(a)_k log P_s(v)_k` with
//! `P_t = softmax((g_t - c) / tau_t)` and `P_s = softmax(g_s / tau_s)`, averaged over the batch
//! and over the pairs `v != a`. `c`, the centre, is an EMA of the teacher's mean output
//! (`c <- m c + (1 - m) mean_b g_t`); centring and sharpening (`tau_t < tau_s`) together keep the
//! teacher from collapsing to one dimension or to the uniform distribution.

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};

/// Centre and temperatures of the DINO loss.
#[derive(Debug, Clone)]
pub struct DinoLoss {
    /// EMA of the teacher's mean output. `[out_dim]`
    pub center: Tensor<1>,
    pub center_momentum: f64,
    pub student_temp: f64,
}

impl DinoLoss {
    /// A zero centre on `device` (on the plain device: it never carries gradients).
    pub fn new(out_dim: usize, center_momentum: f64, student_temp: f64, device: &Device) -> Self {
        Self {
            center: Tensor::zeros([out_dim], &device.clone().inner()),
            center_momentum,
            student_temp,
        }
    }

    /// The loss over all (teacher global view, other student view) pairs.
    ///
    /// # Shapes
    /// `student`: `[views * batch, out_dim]`, the global views first, then the local ones, each
    /// view a block of `batch` rows; `teacher`: `[globals * batch, out_dim]`, detached.
    /// -> `[1]`
    pub fn forward(&self, student: Tensor<2>, teacher: Tensor<2>, globals: usize, teacher_temp: f64) -> Tensor<1> {
        let [rows, k] = student.dims();
        let batch = teacher.dims()[0] / globals;
        let views = rows / batch;
        let center = self.center.clone().to_device(&teacher.device()).reshape([1, k]);
        let t = softmax((teacher - center).div_scalar(teacher_temp), 1); // [globals * batch, k]
        let s = log_softmax(student.div_scalar(self.student_temp), 1); // [views * batch, k]
        let mut total: Option<Tensor<1>> = None;
        let mut pairs = 0usize;
        for a in 0..globals {
            let q = t.clone().narrow(0, a * batch, batch); // [batch, k]
            for v in (0..views).filter(|&v| v != a) {
                let log_p = s.clone().narrow(0, v * batch, batch); // [batch, k]
                let h = (q.clone() * log_p).sum_dim(1).neg().mean(); // [1]
                total = Some(match total {
                    None => h,
                    Some(acc) => acc + h,
                });
                pairs += 1;
            }
        }
        total.expect("DINO needs at least two views").div_scalar(pairs as f64)
    }

    /// Moves the centre towards the batch mean of the teacher's outputs (all global views).
    ///
    /// # Shapes
    /// `teacher`: `[globals * batch, out_dim]`
    pub fn update_center(&mut self, teacher: Tensor<2>) {
        let mean = teacher
            .detach()
            .mean_dim(0)
            .squeeze_dim::<1>(0)
            .to_device(&self.center.device());
        let m = self.center_momentum;
        self.center = self.center.clone().mul_scalar(m) + mean.mul_scalar(1.0 - m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{device, scalar};

    fn rows<const K: usize>(v: &[[f64; K]]) -> Tensor<2> {
        let flat: Vec<f32> = v.iter().flat_map(|r| r.iter().map(|&x| x as f32)).collect();
        Tensor::<1>::from_floats(flat.as_slice(), &device()).reshape([v.len(), K])
    }

    /// `H(softmax(t / tt), softmax(s / ts))` for one pair of rows, in f64.
    fn cross_entropy(t: &[f64], s: &[f64], tt: f64, ts: f64) -> f64 {
        let soft = |x: &[f64], tau: f64| {
            let m = x.iter().cloned().fold(f64::MIN, f64::max) / tau;
            let e: Vec<f64> = x.iter().map(|v| (v / tau - m).exp()).collect();
            let z: f64 = e.iter().sum();
            e.into_iter().map(|v| v / z).collect::<Vec<_>>()
        };
        let (q, p) = (soft(t, tt), soft(s, ts));
        -q.iter().zip(&p).map(|(q, p)| q * p.ln()).sum::<f64>()
    }

    #[test]
    fn matches_a_hand_computation_over_the_view_pairs() {
        // Batch 1, 2 global views and 1 local one, 3 outputs, zero centre.
        let loss = DinoLoss::new(3, 0.9, 0.1, &device());
        let s: [[f64; 3]; 3] = [[0.2, -0.1, 0.4], [0.0, 0.3, -0.2], [0.5, 0.1, 0.1]];
        let t: [[f64; 3]; 2] = [[0.1, 0.0, -0.1], [-0.3, 0.2, 0.05]];
        let got = f64::from(scalar(loss.forward(rows(&s), rows(&t), 2, 0.04)));
        // Pairs: teacher view 0 with student views 1, 2; teacher view 1 with student views 0, 2.
        let want = (cross_entropy(&t[0], &s[1], 0.04, 0.1)
            + cross_entropy(&t[0], &s[2], 0.04, 0.1)
            + cross_entropy(&t[1], &s[0], 0.04, 0.1)
            + cross_entropy(&t[1], &s[2], 0.04, 0.1))
            / 4.0;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn is_the_entropy_when_student_equals_teacher_and_is_never_below_it() {
        // With equal temperatures and the same logits, H(q, q) is the entropy of q: the minimum
        // of H(q, .) over student distributions.
        let loss = DinoLoss::new(4, 0.9, 0.5, &device());
        let x = rows(&[[1.0, 0.0, -1.0, 0.5], [0.0, 2.0, 0.0, -1.0]]);
        let same = f64::from(scalar(loss.forward(x.clone(), x.clone(), 2, 0.5)));
        let swapped = rows(&[[0.0, 2.0, 0.0, -1.0], [1.0, 0.0, -1.0, 0.5]]);
        // With two global views, view 0 of the student is compared with view 1 of the teacher.
        let entropy = |r: &[f64]| cross_entropy(r, r, 0.5, 0.5);
        let matched = f64::from(scalar(loss.forward(swapped, x.clone(), 2, 0.5)));
        let want = (entropy(&[1.0, 0.0, -1.0, 0.5]) + entropy(&[0.0, 2.0, 0.0, -1.0])) / 2.0;
        assert!((matched - want).abs() < 1e-5, "{matched} vs {want}");
        assert!(same > matched, "a mismatched student costs more: {same} vs {matched}");
    }

    #[test]
    fn the_centre_is_an_ema_of_the_teacher_mean_and_shifts_the_teacher() {
        let mut loss = DinoLoss::new(2, 0.9, 0.1, &device());
        let t = rows(&[[1.0, 3.0], [3.0, 5.0]]); // mean [2, 4]
        loss.update_center(t.clone());
        let c = loss.center.clone().into_data().try_into_vec::<f32>().unwrap();
        assert!((c[0] - 0.2).abs() < 1e-6 && (c[1] - 0.4).abs() < 1e-6, "{c:?}");
        loss.update_center(t);
        let c = loss.center.clone().into_data().try_into_vec::<f32>().unwrap();
        assert!((c[0] - 0.38).abs() < 1e-6 && (c[1] - 0.76).abs() < 1e-6, "{c:?}");
        // Subtracting a centre that equals a constant shift of every teacher output changes
        // nothing (softmax is shift-invariant per row); a per-dimension centre does.
        let s = rows(&[[0.3, -0.2], [0.1, 0.4]]);
        let teacher = rows(&[[1.0, 0.5], [0.2, 0.1]]);
        let plain = DinoLoss::new(2, 0.9, 0.1, &device());
        let mut shifted = plain.clone();
        shifted.center = Tensor::from_floats([7.0, 7.0], &device().inner());
        let mut tilted = plain.clone();
        tilted.center = Tensor::from_floats([1.0, 0.0], &device().inner());
        let base = f64::from(scalar(plain.forward(s.clone(), teacher.clone(), 2, 0.04)));
        assert!((f64::from(scalar(shifted.forward(s.clone(), teacher.clone(), 2, 0.04))) - base).abs() < 1e-5);
        assert!((f64::from(scalar(tilted.forward(s, teacher, 2, 0.04))) - base).abs() > 1e-3);
    }
}
