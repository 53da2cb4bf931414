//! The covariance penalty of VICReg (Bardes, Ponce and LeCun, "VICReg: Variance-Invariance-
//! Covariance Regularization for Self-Supervised Learning", ICLR 2022), on the same scaled,
//! L2-normalised outputs as [`super::variance`]: `z = sqrt(D) F(v)`, `C = z_c^T z_c / N` with `z_c`
//! centred over the batch, and `P(v) = sum_{i != j} C_ij^2 / D`.
//!
//! The variance hinge alone can be met by outputs whose dimensions all carry the same one or two
//! directions; this term pushes the dimensions to carry different information. The covariance is
//! the biased batch estimate (divided by `N`), like the hinge's variance, so a batch of one is
//! finite (and gives 0).

use burn::prelude::*;

use super::cass::l2_normalize;

/// `sum_{i != j} C_ij^2 / D` of `z = sqrt(D) F(v)`; 0 for uncorrelated dimensions.
///
/// # Shapes
/// `v`: `[batch, dim]` -> `[1]`
pub fn covariance_penalty(v: Tensor<2>) -> Tensor<1> {
    let [_, d] = v.dims();
    let z = l2_normalize(v).mul_scalar((d as f64).sqrt()); // [batch, dim]
    off_diagonal_covariance(z, false)
}

/// `sum_{i != j} C_ij^2 / D` of `z` as given, the covariance term of VICReg itself
/// ([`super::vicreg`]: raw expander outputs, `C = z_c^T z_c / (N - 1)`); `unbiased` divides by
/// `N - 1`, else by `N` (the guard's form above).
///
/// # Shapes
/// `z`: `[batch, dim]` -> `[1]`
pub fn off_diagonal_covariance(z: Tensor<2>, unbiased: bool) -> Tensor<1> {
    let [n, d] = z.dims();
    let centred = z.clone() - z.mean_dim(0); // [batch, dim]
    let divisor = if unbiased { (n as f64 - 1.0).max(1.0) } else { n as f64 };
    let cov = centred.clone().transpose().matmul(centred).div_scalar(divisor); // [dim, dim]
    let off_diagonal = cov.clone().square().sum().sub(diagonal_square_sum(cov)); // [1]
    off_diagonal.div_scalar(d as f64)
}

/// `sum_i C_ii^2` of a square matrix.
fn diagonal_square_sum(cov: Tensor<2>) -> Tensor<1> {
    let [d, _] = cov.dims();
    let eye = Tensor::<2>::eye(d, &cov.device());
    (cov * eye).square().sum()
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;

    use super::*;
    use crate::testing::{device, rand_tensor, scalar};

    #[test]
    fn zero_for_uncorrelated_and_large_for_one_shared_direction() {
        let d = device();
        // Rows +-e_i: every pair of dimensions has zero covariance.
        let mut rows = Vec::new();
        for i in 0..4 {
            for sign in [1.0f32, -1.0] {
                rows.extend((0..4).map(|k| if k == i { sign } else { 0.0 }));
            }
        }
        let v = Tensor::<2>::from_data(TensorData::new(rows, [8, 4]), &d);
        assert!(scalar(covariance_penalty(v)).abs() < 1e-6);
        // Every dimension equal: one direction shared by all of them.
        let s = rand_tensor([16, 1], 3, &d).repeat_dim(1, 8);
        let shared = scalar(covariance_penalty(s));
        let random = scalar(covariance_penalty(rand_tensor([16, 8], 4, &d)));
        assert!(shared > 5.0 * random, "shared {shared}, random {random}");
    }

    #[test]
    fn finite_non_negative_and_scale_invariant_for_batch_sizes_1_to_8() {
        let d = device();
        for batch in 1..=8 {
            let v = rand_tensor([batch, 6], batch as u64, &d);
            let p = scalar(covariance_penalty(v.clone()));
            assert!(p.is_finite() && p >= -1e-6, "batch {batch}: {p}");
            let scaled = scalar(covariance_penalty(v.mul_scalar(20.0)));
            assert!(
                (p - scaled).abs() < 1e-4 * p.abs().max(1.0),
                "batch {batch}: {p} vs {scaled}"
            );
        }
    }
}
