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

    /// `f` summed over channel `c`'s values of `a` (and `b`, `d`, same layout), in f64.
    fn sum(&self, c: usize, f: impl Fn(usize, usize) -> f32) -> f64 {
        (0..self.batch)
            .map(|n| {
                let start = (n * self.channels + c) * self.plane;
                lanes(self.plane, |i| f(start, i)) as f64
            })
            .sum()
    }
}

/// `sum(f(0..len))` in 16 lanes.
#[inline(always)]
fn lanes(len: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let full = len / 16 * 16;
    for base in (0..full).step_by(16) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(base + l);
        }
    }
    let mut rest = 0f32;
    for i in full..len {
        rest += f(i);
    }
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
    assert!(gamma.len() == p.channels && beta.len() == p.channels, "one scale and shift per channel");
    if let Some(r) = residual {
        assert_eq!(r.len(), p.len(), "residual size");
    }
    let count = p.count().max(1) as f64;
    // Two sweeps for the statistics (the mean, then the squares about it), as PyTorch does:
    // one sweep's `E[x^2] - E[x]^2` loses the variance of inputs far from zero.
    let (mean, var): (Vec<f32>, Vec<f32>) = (0..p.channels)
        .into_par_iter()
        .map(|c| {
            let mean = p.sum(c, |s, i| x[s + i]) / count;
            let m = mean as f32;
            let var = p.sum(c, |s, i| {
                let d = x[s + i] - m;
                d * d
            }) / count;
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
    assert!(x.len() == p.len() && dy.len() == p.len(), "BatchNorm input and gradient sizes");
    if let Some(y) = y {
        assert_eq!(y.len(), p.len(), "BatchNorm output size");
    }
    // The gradient reaching the normalisation: the ReLU passes it where the output is positive.
    let dz = |i: usize| match y {
        Some(y) if y[i] <= 0.0 => 0.0,
        _ => dy[i],
    };
    // Per channel: sum(dz) (beta's gradient) and sum(dz * (x - mean)) (gamma's, times 1/std).
    let (sum_dz, sum_dzx): (Vec<f64>, Vec<f64>) = (0..p.channels)
        .into_par_iter()
        .map(|c| {
            let m = mean[c];
            (p.sum(c, |s, i| dz(s + i)), p.sum(c, |s, i| dz(s + i) * (x[s + i] - m)))
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
            let s = i * p.plane;
            for (j, d) in out.iter_mut().enumerate() {
                *d = dz(s + j) * k - x[s + j] * q + o;
            }
        });
        dx
    });
    let residual = want.residual.then(|| (0..p.len()).map(dz).collect());
    Backward {
        x: dx,
        gamma: want.gamma.then_some(d_gamma),
        beta: want.beta.then(|| sum_dz.iter().map(|v| *v as f32).collect()),
        residual,
    }
}
