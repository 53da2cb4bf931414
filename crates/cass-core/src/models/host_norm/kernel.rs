//! Training-mode BatchNorm on host memory (f32, `[batch, channels, plane]`), with the residual
//! add and the ReLU that follow it in a ResNet block: the forward pass in two sweeps (the
//! channels' statistics, then the output), the backward pass in two (the channels' gradient
//! sums, then the input gradient). burn's default training BatchNorm is composed of about
//! fifteen tensor operations, two of them full transposing copies, and the ReLU and the add are
//! more.
//!
//! Each plane (one image's channel) is summed in 16 f32 lanes, so the loop vectorises; the
//! planes' sums are added in f64.

use rayon::prelude::*;

/// The layout: `batch` images of `channels` planes of `plane` values.
#[derive(Clone, Copy, Debug)]
pub struct Planes {
    pub batch: usize,
    pub channels: usize,
    pub plane: usize,
}

impl Planes {
    pub fn len(&self) -> usize {
        self.batch * self.channels * self.plane
    }

    /// Values per channel.
    fn count(&self) -> usize {
        self.batch * self.plane
    }

    /// `f(a[i], b[i], c[i])` summed over channel `ch`'s values, in f64 across planes.
    fn sum(&self, ch: usize, (a, b, c): (&[f32], &[f32], &[f32]), f: impl Fn(f32, f32, f32) -> f32 + Copy) -> f64 {
        (0..self.batch)
            .map(|n| {
                let r = (n * self.channels + ch) * self.plane..(n * self.channels + ch + 1) * self.plane;
                lanes(&a[r.clone()], &b[r.clone()], &c[r], f) as f64
            })
            .sum()
    }
}

/// `sum(f(a[i], b[i], c[i]))` in 16 lanes (fixed-size chunks, so the loop vectorises).
#[inline(always)]
fn lanes(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let (a16, b16, c16) = (a.chunks_exact(16), b.chunks_exact(16), c.chunks_exact(16));
    let (ar, br, cr) = (a16.remainder(), b16.remainder(), c16.remainder());
    for ((a, b), c) in a16.zip(b16).zip(c16) {
        for l in 0..16 {
            acc[l] += f(a[l], b[l], c[l]);
        }
    }
    let rest: f32 = ar.iter().zip(br).zip(cr).map(|((a, b), c)| f(*a, *b, *c)).sum();
    acc.iter().sum::<f32>() + rest
}

/// What the forward pass returns: the output and the batch's mean and biased variance per
/// channel.
pub struct Forward {
    pub y: Vec<f32>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

/// `relu?((x - mean) / sqrt(var + eps) * gamma + beta + residual)` with the batch's statistics.
pub fn forward(
    p: Planes,
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    residual: Option<&[f32]>,
    eps: f32,
    relu: bool,
) -> Forward {
    assert_eq!(x.len(), p.len(), "BatchNorm input size");
    assert!(
        gamma.len() == p.channels && beta.len() == p.channels,
        "one scale and shift per channel"
    );
    if let Some(r) = residual {
        assert_eq!(r.len(), p.len(), "residual size");
    }
    let count = p.count().max(1) as f64;
    // Two sweeps for the statistics (the mean, then the squares about it), as PyTorch does:
    // one sweep's `E[x^2] - E[x]^2` loses the variance of inputs far from zero.
    let (mean, var): (Vec<f32>, Vec<f32>) = (0..p.channels)
        .into_par_iter()
        .map(|c| {
            let mean = p.sum(c, (x, x, x), |v, _, _| v) / count;
            let m = mean as f32;
            let var = p.sum(c, (x, x, x), |v, _, _| (v - m) * (v - m)) / count;
            (m, var as f32)
        })
        .unzip();
    let (scale, shift): (Vec<f32>, Vec<f32>) = (0..p.channels)
        .map(|c| {
            let scale = gamma[c] / (var[c] + eps).sqrt();
            (scale, beta[c] - mean[c] * scale)
        })
        .unzip();
    let mut y = vec![0f32; p.len()];
    y.par_chunks_mut(p.plane.max(1)).enumerate().for_each(|(i, out)| {
        let c = i % p.channels;
        let (a, b) = (scale[c], shift[c]);
        let src = &x[i * p.plane..(i + 1) * p.plane];
        match residual {
            Some(r) => {
                let r = &r[i * p.plane..(i + 1) * p.plane];
                for ((o, v), r) in out.iter_mut().zip(src).zip(r) {
                    *o = v * a + b + r;
                }
            }
            None => {
                for (o, v) in out.iter_mut().zip(src) {
                    *o = v * a + b;
                }
            }
        }
        if relu {
            out.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    });
    Forward { y, mean, var }
}

/// What the backward pass returns, each where asked for.
pub struct Backward {
    pub x: Option<Vec<f32>>,
    pub gamma: Option<Vec<f32>>,
    pub beta: Option<Vec<f32>>,
    pub residual: Option<Vec<f32>>,
}

/// Which gradients to compute.
#[derive(Clone, Copy)]
pub struct Wanted {
    pub x: bool,
    pub gamma: bool,
    pub beta: bool,
    pub residual: bool,
}

/// The gradients of `sum(dy * forward(...))`, with `mean` and `var` the forward pass's
/// statistics and `y` its output (which the ReLU's gradient needs).
pub fn backward(
    p: Planes,
    (x, y, dy): (&[f32], Option<&[f32]>, &[f32]),
    gamma: &[f32],
    (mean, var): (&[f32], &[f32]),
    eps: f32,
    want: Wanted,
) -> Backward {
    assert!(
        x.len() == p.len() && dy.len() == p.len(),
        "BatchNorm input and gradient sizes"
    );
    if let Some(y) = y {
        assert_eq!(y.len(), p.len(), "BatchNorm output size");
    }
    // The gradient reaching the normalisation, `dz`: the ReLU passes it where the output is
    // positive. Per channel: sum(dz) (beta's gradient) and sum(dz * (x - mean)) (gamma's, times
    // 1/std).
    let dz = |dy: f32, y: f32| if y > 0.0 { dy } else { 0.0 };
    let (sum_dz, sum_dzx): (Vec<f64>, Vec<f64>) = (0..p.channels)
        .into_par_iter()
        .map(|c| {
            let m = mean[c];
            match y {
                Some(y) => (
                    p.sum(c, (dy, y, x), |d, y, _| dz(d, y)),
                    p.sum(c, (dy, y, x), |d, y, x| dz(d, y) * (x - m)),
                ),
                None => (
                    p.sum(c, (dy, dy, dy), |d, _, _| d),
                    p.sum(c, (dy, x, x), |d, x, _| d * (x - m)),
                ),
            }
        })
        .unzip();
    let inv: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let d_gamma: Vec<f32> = (0..p.channels).map(|c| (sum_dzx[c] * inv[c] as f64) as f32).collect();
    let count = p.count().max(1) as f32;
    let dx = want.x.then(|| {
        // dx = k * (dz - mean(dz) - x_hat * d_gamma / count), k = gamma / std, written per
        // channel as dz * k - x * q + o.
        let coef: Vec<(f32, f32, f32)> = (0..p.channels)
            .map(|c| {
                let k = gamma[c] * inv[c];
                let q = k * inv[c] * d_gamma[c] / count;
                (k, q, q * mean[c] - k * (sum_dz[c] as f32) / count)
            })
            .collect();
        let mut dx = vec![0f32; p.len()];
        dx.par_chunks_mut(p.plane.max(1)).enumerate().for_each(|(i, out)| {
            let (k, q, o) = coef[i % p.channels];
            let r = i * p.plane..(i + 1) * p.plane;
            let (dy, x) = (&dy[r.clone()], &x[r.clone()]);
            match y {
                Some(y) => {
                    for (((d, dy), x), y) in out.iter_mut().zip(dy).zip(x).zip(&y[r]) {
                        *d = dz(*dy, *y) * k - x * q + o;
                    }
                }
                None => {
                    for ((d, dy), x) in out.iter_mut().zip(dy).zip(x) {
                        *d = dy * k - x * q + o;
                    }
                }
            }
        });
        dx
    });
    let residual = want.residual.then(|| match y {
        Some(y) => dy.iter().zip(y).map(|(d, y)| dz(*d, *y)).collect(),
        None => dy.to_vec(),
    });
    Backward {
        x: dx,
        gamma: want.gamma.then_some(d_gamma),
        beta: want.beta.then(|| sum_dz.iter().map(|v| *v as f32).collect()),
        residual,
    }
}
