//! Exact (erf) GELU for the ViT's MLP, `gelu(x) = x Φ(x)`.
//!
//! On the CPU, burn's Flex backend evaluates `erf` with one scalar `libm` call per element, in
//! the forward and again in the backward, which made GELU the largest single cost of a small
//! ViT's step (`cargo run --example vit_ops`: 4.8-6.2 ms forward, 7.8-10 ms backward on
//! `[64, 17, 384]`, more than the two linear layers around it). Here, on the CPU, `Φ(x)` and
//! `x φ(x)` are computed once, in parallel, on the host, with the Chebyshev fit of `erfc` of
//! Numerical Recipes (6.2; relative error below 1.2e-7) and an inlined `exp`, in single precision
//! (checked against double-precision references: relative error below 1e-5 down to x = -12; at
//! x = -5 burn's `x (1 + erf(x / √2)) / 2` is 4 % off, from cancellation), and the tensor is
//! assembled so that autodiff gives the derivative `Φ(x) + x φ(x)`:
//!
//! `y = x · Φ(x) + (x - detach(x)) · xφ(x)`, where `Φ(x)` and `xφ(x)` are constants.
//!
//! The second term is zero in value, and its gradient is `xφ(x)`. Measured (`vit_ops`): 7.5 ms
//! forward and 1.8 ms backward; the `cpu-small` step at batch 64
//! went from 250-264 to 307-326 images/s (`bench_step`, the two builds alternated three times).
//! GPU backends use burn's GELU.

use burn::prelude::*;
use burn::tensor::{TensorData, activation};
use multiversion::multiversion;
use rayon::prelude::*;

use super::host_tensor::on_host;

/// Elements per parallel chunk.
const CHUNK: usize = 4096;

/// `gelu(x) = x Φ(x)` with `Φ` the standard normal CDF (erf-exact, like PyTorch's default).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !on_host(&x) {
        return activation::gelu(x);
    }
    let shape = x.shape();
    let device = x.device();
    let values = x
        .clone()
        .inner()
        .into_data()
        .try_into_vec::<f32>()
        .expect("an f32 tensor reads back as f32");
    let with_derivative = x.is_tracked();
    let mut cdf = vec![0f32; values.len()];
    let mut xpdf = vec![0f32; if with_derivative { values.len() } else { 0 }];
    if with_derivative {
        cdf.par_chunks_mut(CHUNK)
            .zip(xpdf.par_chunks_mut(CHUNK))
            .zip(values.par_chunks(CHUNK))
            .for_each(|((c, p), v)| cdf_and_x_pdf(c, p, v));
    } else {
        cdf.par_chunks_mut(CHUNK)
            .zip(values.par_chunks(CHUNK))
            .for_each(|(c, v)| cdf_only(c, v));
    }
    let constant = |v: Vec<f32>| Tensor::<D>::from_data(TensorData::new(v, shape.clone()), &device);
    let y = x.clone() * constant(cdf);
    if !with_derivative {
        return y;
    }
    y + (x.clone() - x.detach()) * constant(xpdf)
}

// The element loops, compiled for AVX-512 and AVX2 as well as the baseline and chosen at run
// time (`multiversion`): the crate is built for baseline x86-64, where they ran 4 wide (SSE).
// `perf` of `cpu-small`'s ViT forward pass (`bench_step --what fwd-vit`, 600 steps): GELU's
// loop 13.5-15.9 % of the samples before, 6.3 % with the AVX-512 clone. Plain zipped iterators
// (no indexing) so the loops vectorise; no reductions, so every width gives the same values.

#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn cdf_and_x_pdf(cdf: &mut [f32], x_pdf: &mut [f32], x: &[f32]) {
    for ((c, p), &v) in cdf.iter_mut().zip(x_pdf.iter_mut()).zip(x) {
        (*c, *p) = phi_and_x_pdf(v);
    }
}

#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn cdf_only(cdf: &mut [f32], x: &[f32]) {
    for (c, &v) in cdf.iter_mut().zip(x) {
        *c = phi_and_x_pdf(v).0;
    }
}

/// `(Φ(x), x φ(x))` for the standard normal distribution, in single precision, written so the
/// compiler vectorises it (no calls, no branches).
#[inline(always)]
fn phi_and_x_pdf(x: f32) -> (f32, f32) {
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    // Φ(x) = erfc(-x / √2) / 2, computed for |z| and reflected: accurate in relative terms in
    // the lower tail, where GELU's output is small.
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.5 * a);
    let poly = -1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204 + t * (1.488_515_9 + t * (-0.822_152_2 + t * 0.170_872_77))))))));
    let gauss = exp_nonpositive(-a * a); // exp(-x² / 2)
    let erfc_a = t * exp_nonpositive(poly - a * a);
    let cdf = if z >= 0.0 { 1.0 - 0.5 * erfc_a } else { 0.5 * erfc_a };
    (cdf, x * FRAC_1_SQRT_2PI * gauss)
}

/// `exp(x)` for `x <= 0` (results below `f32::MIN_POSITIVE` flush to zero): `2^n · e^r` with
/// `|r| <= ln 2 / 2` and a degree-7 Taylor polynomial (relative error about 1e-8 before rounding).
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so `n · LN2_HI` is exact for the n that occur (Cody and Waite).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer without a call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let k = x * LOG2E + ROUND;
    let n = k - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // n as an integer, read from the bits of k (no float-to-int conversion), and 2^n built from
    // it; wrapping, so that overflow checks (on in test builds) do not stop vectorisation.
    let n_int = k.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;

    #[test]
    fn matches_burns_gelu_in_value_and_gradient() {
        let d = Device::flex().autodiff();
        // Both tails and the centre, where the approximation and the derivative matter.
        let x = Tensor::<2>::random([64, 96], Distribution::Normal(0.0, 3.0), &d).require_grad();
        let probe = Tensor::<2>::random([64, 96], Distribution::Default, &d);
        let ours = gelu(x.clone());
        let theirs = activation::gelu(x.clone());
        let err = (ours.clone() - theirs.clone()).abs().max().into_scalar::<f32>();
        assert!(err < 2e-6, "values differ by {err}");
        let g_ours = x.grad(&(ours * probe.clone()).sum().backward()).unwrap();
        let g_theirs = x.grad(&(theirs * probe).sum().backward()).unwrap();
        let err = (g_ours - g_theirs).abs().max().into_scalar::<f32>();
        assert!(err < 2e-6, "gradients differ by {err}");
    }

    /// Against `x * erfc(-x / √2) / 2` in double precision (Python's `math.erfc`), relative
    /// error, including the lower tail where `1 + erf(x / √2)` in single precision cancels.
    /// The centre is also checked exhaustively against burn's GELU above.
    #[test]
    fn evaluation_path_matches_double_precision_references() {
        let d = Device::flex();
        let cases: [(f32, f64); 7] = [
            (-12.0, -2.131_778_534_493_242_4e-32),
            (-5.0, -1.433_257_859_395_973_1e-6),
            (-1.0, -0.158_655_253_931_457_07),
            (0.0, 0.0),
            (0.5, 0.345_731_230_637_006_56),
            (3.0, 2.995_950_305_905_11),
            (12.0, 12.0),
        ];
        let x = Tensor::<1>::from_floats(cases.map(|c| c.0), &d);
        let ours = gelu(x).into_data().try_into_vec::<f32>().unwrap();
        for ((x, want), got) in cases.iter().zip(&ours) {
            let rel = ((*got as f64) - want).abs() / want.abs().max(1e-300);
            // x² in single precision limits the far tail to about 1e-5 relative.
            let tol = if x.abs() >= 4.0 { 1e-5 } else { 1e-6 };
            assert!(
                rel < tol || *want == 0.0 && *got == 0.0,
                "gelu({x}) = {got}, want {want}"
            );
        }
    }
}
