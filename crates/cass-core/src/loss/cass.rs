//! The CASS agreement loss (Singh, Sizikova and Cirrone, "CASS: Cross Architectural
//! Self-Supervision for Medical Image Analysis", arXiv 2206.04170):
//! `L = mean_b (2 - 2 <F(r_b), F(t_b)>)` with `F(v) = v / max(||v||_2, 1e-12)`, where `r` and `t`
//! are the head outputs of the CNN and of the transformer for the same augmented view.

use burn::prelude::*;

const NORM_EPS: f64 = 1e-12;

/// L2-normalises each row, as `torch.nn.functional.normalize(v, dim=1)`.
///
/// # Shapes
/// `[batch, dim] -> [batch, dim]`
pub fn l2_normalize(v: Tensor<2>) -> Tensor<2> {
    let norm = v.clone().square().sum_dim(1).sqrt().clamp_min(NORM_EPS); // [batch, 1]
    v / norm
}

/// Mean over the batch of `2 - 2 cos(r_b, t_b)`; lies in `[0, 4]`.
///
/// # Shapes
/// `r`, `t`: `[batch, dim]` -> `[1]`
pub fn cass_loss(r: Tensor<2>, t: Tensor<2>) -> Tensor<1> {
    let cos = (l2_normalize(r) * l2_normalize(t)).sum_dim(1); // [batch, 1]
    cos.mul_scalar(-2.0).add_scalar(2.0).mean()
}

/// How spread the L2-normalised outputs are across the batch: `sqrt(dim) * mean_d std_b F(v)`.
/// About 1 for outputs spread like random directions, 0 when every image maps to the same
/// vector: the collapse that an agreement loss without negatives can fall into.
///
/// # Shapes
/// `v`: `[batch, dim]` -> `[1]`
pub fn output_spread(v: Tensor<2>) -> Tensor<1> {
    let [_, d] = v.dims();
    let f = l2_normalize(v);
    let centred = f.clone() - f.mean_dim(0); // [batch, dim]
    centred.square().mean_dim(0).sqrt().mean().mul_scalar((d as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{device, rand_tensor, scalar};

    #[test]
    fn spec_test_vectors() {
        let d = device();
        let x = Tensor::<2>::from_floats([[1.0, 2.0, -3.0], [0.5, 0.0, 4.0]], &d);
        assert!(scalar(cass_loss(x.clone(), x.clone())).abs() < 1e-6);
        assert!((scalar(cass_loss(x.clone(), x.clone().neg())) - 4.0).abs() < 1e-6);
        let a = Tensor::<2>::from_floats([[1.0, 0.0], [0.0, 3.0]], &d);
        let b = Tensor::<2>::from_floats([[0.0, 5.0], [-2.0, 0.0]], &d);
        assert!((scalar(cass_loss(a, b)) - 2.0).abs() < 1e-6);
    }

    #[test]
    fn symmetric_bounded_and_finite_for_batch_sizes_1_to_8() {
        let d = device();
        for batch in 1..=8 {
            let r = rand_tensor([batch, 16], batch as u64, &d);
            let t = rand_tensor([batch, 16], 100 + batch as u64, &d);
            let ab = scalar(cass_loss(r.clone(), t.clone()));
            let ba = scalar(cass_loss(t, r));
            assert!(ab.is_finite());
            assert!((0.0..=4.0).contains(&ab), "loss {ab} outside [0, 4]");
            assert!((ab - ba).abs() < 1e-6, "asymmetric: {ab} vs {ba}");
        }
    }

    #[test]
    fn spread_is_zero_for_collapsed_outputs_and_near_one_for_random_ones() {
        let d = device();
        let same = rand_tensor([1, 64], 4, &d).repeat_dim(0, 16);
        assert!(scalar(output_spread(same)) < 1e-3);
        let random = rand_tensor([256, 64], 5, &d);
        let s = scalar(output_spread(random));
        assert!((0.8..1.1).contains(&s), "spread {s}");
    }

    #[test]
    fn scale_invariant_and_zero_vector_stays_finite() {
        let d = device();
        let r = rand_tensor([4, 8], 1, &d);
        let t = rand_tensor([4, 8], 2, &d);
        let base = scalar(cass_loss(r.clone(), t.clone()));
        let scaled = scalar(cass_loss(r.mul_scalar(37.0), t.clone().mul_scalar(0.01)));
        assert!((base - scaled).abs() < 1e-5);
        // A zero head output has no direction: F(0) = 0, so its term is exactly 2.
        let z = Tensor::<2>::zeros([1, 8], &d);
        let one = rand_tensor([1, 8], 3, &d);
        assert!((scalar(cass_loss(z, one)) - 2.0).abs() < 1e-6);
    }
}
