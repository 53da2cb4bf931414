//! Multi-head scaled dot-product attention on host slices, from the `qkv` projection's output
//! `[batch, tokens, 3 * dim]` (queries, keys and values side by side, the heads side by side in
//! each) straight to the heads' outputs side by side `[batch, tokens, dim]`, and its backward
//! pass. Per image and head, with `scale = 1 / sqrt(head_dim)`:
//! `S = scale Q Kᵀ`, `P = softmax(S)` by rows, `O = P V`; backward `dV = Pᵀ dO`,
//! `dP = dO Vᵀ`, `dS = P ⊙ (dP - rowsum(dP ⊙ P))`, `dQ = scale dS K`, `dK = scale dSᵀ Q`.
//! The products are `gemm` calls on strided views of the rows, so no head is copied out.

use gemm::Parallelism;
use rayon::prelude::*;

use super::super::host_matmul::{Mat, matmul};

/// The attention's sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub batch: usize,
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl Shape {
    pub fn dim(&self) -> usize {
        self.heads * self.head_dim
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

/// The output and the attention weights `P` (`[batch, heads, tokens, tokens]`, kept for the
/// backward pass).
pub struct Forward {
    pub out: Vec<f32>,
    pub probs: Vec<f32>,
}

/// Head `h`'s part `which` (0 queries, 1 keys, 2 values) of one image's `qkv` rows.
fn part(x: &[f32], s: Shape, which: usize, h: usize) -> Mat<'_> {
    Mat {
        data: &x[which * s.dim() + h * s.head_dim..],
        rows: s.tokens,
        cols: s.head_dim,
        rs: 3 * s.dim(),
        cs: 1,
    }
}

/// Copies a head's `[tokens, head_dim]` block into rows of width `width` at column `at`.
fn scatter(block: &[f32], head_dim: usize, rows: &mut [f32], width: usize, at: usize) {
    for (src, dst) in block.chunks_exact(head_dim).zip(rows.chunks_exact_mut(width)) {
        dst[at..at + head_dim].copy_from_slice(src);
    }
}

/// `softmax(scale * row)` in place, with the maximum subtracted first.
fn softmax(row: &mut [f32], scale: f32) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) * scale;
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v * scale - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// The attention of every image and head; images in parallel.
pub fn forward(s: Shape, qkv: &[f32]) -> Forward {
    let (n, d) = (s.tokens, s.dim());
    assert_eq!(qkv.len(), s.batch * n * 3 * d, "attention input size");
    let mut out = vec![0f32; s.batch * n * d];
    let mut probs = vec![0f32; s.batch * s.heads * n * n];
    if out.is_empty() {
        return Forward { out, probs };
    }
    let image = |((o, p), x): ((&mut [f32], &mut [f32]), &[f32])| {
        let mut head_out = vec![0f32; n * s.head_dim];
        for (h, p) in p.chunks_exact_mut(n * n).enumerate() {
            let (q, k, v) = (part(x, s, 0, h), part(x, s, 1, h), part(x, s, 2, h));
            matmul(p, q, k.t(), false, Parallelism::None);
            p.chunks_exact_mut(n).for_each(|row| softmax(row, s.scale()));
            matmul(&mut head_out, Mat::row_major(p, n, n), v, false, Parallelism::None);
            scatter(&head_out, s.head_dim, o, d, h * s.head_dim);
        }
    };
    out.par_chunks_mut(n * d)
        .zip(probs.par_chunks_mut(s.heads * n * n))
        .zip(qkv.par_chunks(n * 3 * d))
        .for_each(image);
    Forward { out, probs }
}

/// The gradient with respect to `qkv` of `sum(d_out * attention(qkv))`.
pub fn backward(s: Shape, qkv: &[f32], probs: &[f32], d_out: &[f32]) -> Vec<f32> {
    let (n, d, hd) = (s.tokens, s.dim(), s.head_dim);
    assert_eq!(qkv.len(), s.batch * n * 3 * d, "attention input size");
    assert_eq!(probs.len(), s.batch * s.heads * n * n, "attention weights size");
    assert_eq!(d_out.len(), s.batch * n * d, "attention output gradient size");
    let mut dqkv = vec![0f32; qkv.len()];
    if dqkv.is_empty() {
        return dqkv;
    }
    // One image's gradient rows, with its input rows, attention weights and output gradient.
    type Image<'a> = (((&'a mut [f32], &'a [f32]), &'a [f32]), &'a [f32]);
    let image = |(((dx, x), p), dy): Image| {
        let (mut ds, mut block) = (vec![0f32; n * n], vec![0f32; n * hd]);
        for (h, p) in p.chunks_exact(n * n).enumerate() {
            let (q, k, v) = (part(x, s, 0, h), part(x, s, 1, h), part(x, s, 2, h));
            let dy = Mat {
                data: &dy[h * hd..],
                rows: n,
                cols: hd,
                rs: d,
                cs: 1,
            };
            let p_mat = Mat::row_major(p, n, n);
            // dV = Pᵀ dO
            matmul(&mut block, p_mat.t(), dy, false, Parallelism::None);
            scatter(&block, hd, dx, 3 * d, 2 * d + h * hd);
            // dS = P ⊙ (dP - rowsum(dP ⊙ P)) with dP = dO Vᵀ, the scale folded in.
            matmul(&mut ds, dy, v.t(), false, Parallelism::None);
            for (ds_row, p_row) in ds.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
                let c: f32 = ds_row.iter().zip(p_row).map(|(g, p)| g * p).sum();
                for (g, p) in ds_row.iter_mut().zip(p_row) {
                    *g = p * (*g - c) * s.scale();
                }
            }
            let ds_mat = Mat::row_major(&ds, n, n);
            matmul(&mut block, ds_mat, k, false, Parallelism::None);
            scatter(&block, hd, dx, 3 * d, h * hd);
            matmul(&mut block, ds_mat.t(), q, false, Parallelism::None);
            scatter(&block, hd, dx, 3 * d, d + h * hd);
        }
    };
    dqkv.par_chunks_mut(n * 3 * d)
        .zip(qkv.par_chunks(n * 3 * d))
        .zip(probs.par_chunks(s.heads * n * n))
        .zip(d_out.par_chunks(n * d))
        .for_each(image);
    dqkv
}
