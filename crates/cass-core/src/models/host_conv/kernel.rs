//! The convolution's three products on host memory (f32, NCHW, no groups or dilation, square
//! kernel, equal stride and zero padding on both axes): the output, the input gradient and the
//! weight gradient, each as matrix products per image (or per group of small images, their
//! patches side by side) over the unfolded patches.
//!
//! Per image `n`, with `patch = c_in * k * k` and `columns` the output positions on the wide
//! grid of `wide.rs` (`h_out * wq`, a few more than `h_out * w_out`):
//! - `col_n [patch, columns]`: the input's `k x k` windows, one column per output position
//!   (im2col, in NCHW order, so no layout copy is needed on either side);
//! - output: `y_n [c_out, columns] = W [c_out, patch] . col_n`, the extra columns dropped;
//! - input gradient: `dcol = W^T . dy_n`, folded back onto the image (col2im);
//! - weight gradient: `dW += dy_n . col_n^T`, summed over the images each thread owns.
//!
//! A 1x1 stride-1 unpadded convolution skips the unfolding: `col_n` is the image itself.
//! The products go to the `gemm` crate (runtime-selected AVX-512, AVX2 or scalar microkernels);
//! images are spread over the threads when there are at least as many images as threads, the
//! product is split across them otherwise (a single image, at prediction time).

use multiversion::multiversion;

use super::super::host_matmul::{Mat, matmul};
use super::batches::{over_groups, runs, split, sum_over_runs};
use super::shape::Geometry;
use super::wide::Wide;

/// Output columns a product should have at least, where small images allow it (see
/// [`forward`]).
const GROUP_COLUMNS: usize = 512;

/// What is applied to each image's output while it is still in cache: a per-channel affine map
/// (an evaluation-mode BatchNorm folded in), a residual added, a ReLU, in that order.
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// `(scale, shift)` per output channel.
    pub affine: Option<(&'a [f32], &'a [f32])>,
    /// A tensor of the output's shape.
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

/// `y = epilogue(conv(x, weight))`, NCHW.
pub fn forward(g: &Geometry, x: &[f32], weight: &[f32], epilogue: Epilogue) -> Vec<f32> {
    assert_eq!(x.len(), g.input_len(), "convolution input size");
    assert_eq!(weight.len(), g.weight_len(), "convolution weight size");
    if let Some((scale, shift)) = epilogue.affine {
        assert!(
            scale.len() == g.c_out && shift.len() == g.c_out,
            "one scale and shift per channel"
        );
    }
    if let Some(r) = epilogue.residual {
        assert_eq!(r.len(), g.output_len(), "residual size");
    }
    let (positions, patch) = (g.positions(), g.patch());
    let (_, wo) = g.out().expect("a valid geometry");
    let out_image = g.c_out * positions;
    let mut y = vec![0f32; g.output_len()];
    let (per_image, par) = split(g.batch);
    let wide = Wide::of(g);
    let columns = wide.columns(g);
    // Small images are multiplied several at a time (their patches side by side, `group *
    // columns` product columns): one product per image of `cpu-small` (down to 64 x 576 x 4 in
    // its last stage) is mostly the product's fixed costs. Measured (`forward_profile`,
    // `cpu-small`, three rounds, `bench/results/2026-12-06-vm-cpu-cnn-kernel-steps.json`):
    // batch 16 from 6,700-7,700 to 7,400-8,800 images/s, batch 64 from 8,100-8,700 to
    // 7,300-10,200; targets of 256 to 2,048 columns were within noise of 512 (and 2,048 and
    // 8,192 no faster on ResNet-18 at 96 px).
    let group = if per_image {
        (GROUP_COLUMNS / columns).clamp(1, g.batch.div_ceil(rayon::current_num_threads()))
    } else {
        1
    };
    let w = Mat::row_major(weight, g.c_out, patch);
    type Buffers = (Vec<f32>, Vec<f32>, Vec<f32>);
    let one = |(col, tmp, phases): &mut Buffers, (i, (y_g, x_g)): (usize, (&mut [f32], &[f32]))| {
        let images = x_g.len() / g.image();
        if images == 1 && g.pointwise() {
            // The image is its own unfolding, and the grid is not wider than the output.
            matmul(y_g, w, Mat::row_major(x_g, patch, positions), false, par);
        } else {
            let ld = images * columns;
            col.resize(patch * ld, 0.0);
            for (j, x_n) in x_g.chunks(g.image()).enumerate() {
                wide.phases(g, x_n, phases);
                wide.unfold(g, phases, col, ld, j * columns);
            }
            tmp.resize(g.c_out * ld, 0.0);
            matmul(tmp, w, Mat::row_major(col, patch, ld), false, par);
            // [c_out, images * ho * wq] -> [images, c_out, ho, wo]
            for (j, y_n) in y_g.chunks_mut(out_image).enumerate() {
                for (c, plane) in y_n.chunks_mut(positions).enumerate() {
                    let src = &tmp[c * ld + j * columns..][..columns];
                    for (out, wide_row) in plane.chunks_exact_mut(wo).zip(src.chunks(wide.wq)) {
                        for (o, v) in out.iter_mut().zip(wide_row) {
                            *o = *v;
                        }
                    }
                }
            }
        }
        for (j, y_n) in y_g.chunks_mut(out_image).enumerate() {
            let n = i * group + j;
            let residual = epilogue.residual.map(|r| &r[n * out_image..(n + 1) * out_image]);
            finish(y_n, positions, epilogue, residual);
        }
    };
    let init = || (Vec::new(), Vec::new(), Vec::new());
    over_groups((&mut y, out_image), (x, g.image()), (group, per_image), init, one);
    y
}

/// The epilogue on one image's output `[c_out, positions]`, compiled for AVX-512 and AVX2 as
/// well as the baseline (`multiversion`, as in `gelu.rs`; no reductions, the same values).
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(super) fn finish(y_n: &mut [f32], positions: usize, e: Epilogue, residual: Option<&[f32]>) {
    for (c, row) in y_n.chunks_mut(positions).enumerate() {
        if let Some((scale, shift)) = e.affine {
            let (a, b) = (scale[c], shift[c]);
            row.iter_mut().for_each(|v| *v = *v * a + b);
        }
        if let Some(r) = residual {
            row.iter_mut()
                .zip(&r[c * positions..(c + 1) * positions])
                .for_each(|(v, r)| *v += r);
        }
        if e.relu {
            row.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
}

/// The gradients of `sum(dy * conv(x, weight))` with respect to the input and to the weight,
/// each computed only where asked for.
pub fn backward(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    want_input: bool,
    want_weight: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    assert_eq!(x.len(), g.input_len(), "convolution input size");
    assert_eq!(weight.len(), g.weight_len(), "convolution weight size");
    assert_eq!(dy.len(), g.output_len(), "convolution output gradient size");
    let (positions, patch) = (g.positions(), g.patch());
    let (per_image, par) = split(g.batch);
    let mut dx = want_input.then(|| vec![0f32; g.input_len()]);
    let (run, mut dx_runs) = runs(g.batch, g.image(), per_image, dx.as_mut());
    // On the wide grid (see `wide.rs`): the output gradient is widened with zeros in the extra
    // columns, so they add nothing to either gradient. One unfolding for both passes; against
    // the row-by-row unfolding and fold it replaced, the CASS step was within this VM's noise
    // (`bench/results/2026-12-06-vm-wide-backward-ab.json`).
    let wide = Wide::of(g);
    let columns = wide.columns(g);
    let out_image = g.c_out * positions;
    // Small images go through the products several at a time, as in the forward pass: per
    // image, ResNet-18's last stage at 96 px (3 x 5 wide columns) re-read its whole weight
    // (512 x 4,608) for 15 columns, and its input gradient ran at a quarter of its output's
    // speed (`bench/results/2026-12-06-vm-cpu-cnn-round2-steps.json`).
    let group = if per_image {
        (GROUP_COLUMNS / columns).clamp(1, run)
    } else {
        1
    };
    let work = |(t, dx_run): (usize, &mut Option<&mut [f32]>)| -> Option<Vec<f32>> {
        let mut dw = want_weight.then(|| vec![0f32; g.weight_len()]);
        let (mut col, mut dcol, mut dyw, mut phases) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let w_t = Mat::row_major(weight, g.c_out, patch).t();
        let first = t * run;
        let images = first..((t + 1) * run).min(g.batch);
        for start in images.clone().step_by(group) {
            let batch = start..(start + group).min(images.end);
            let accumulate = start > first;
            let x_of = |n: usize| &x[n * g.image()..(n + 1) * g.image()];
            let dx_of = |n: usize| (n - first) * g.image()..(n - first + 1) * g.image();
            if batch.len() == 1 && g.pointwise() {
                // The image is its own unfolding and the grid is the output's.
                let n = start;
                let dy_n = Mat::row_major(&dy[n * out_image..(n + 1) * out_image], g.c_out, positions);
                if let Some(dw) = dw.as_mut() {
                    matmul(dw, dy_n, Mat::row_major(x_of(n), patch, positions).t(), accumulate, par);
                }
                if let Some(dx_run) = dx_run.as_mut() {
                    matmul(&mut dx_run[dx_of(n)], w_t, dy_n, false, par);
                }
                continue;
            }
            let ld = batch.len() * columns;
            dyw.resize(g.c_out * ld, 0.0);
            for (j, n) in batch.clone().enumerate() {
                wide.widen(g, &dy[n * out_image..(n + 1) * out_image], &mut dyw, ld, j * columns);
            }
            let dy_g = Mat::row_major(&dyw, g.c_out, ld);
            if let Some(dw) = dw.as_mut() {
                col.resize(patch * ld, 0.0);
                for (j, n) in batch.clone().enumerate() {
                    wide.phases(g, x_of(n), &mut phases);
                    wide.unfold(g, &phases, &mut col, ld, j * columns);
                }
                // dW [c_out, patch] += dy [c_out, images * columns] . col^T [images * columns, patch]
                matmul(dw, dy_g, Mat::row_major(&col, patch, ld).t(), accumulate, par);
            }
            if let Some(dx_run) = dx_run.as_mut() {
                dcol.resize(patch * ld, 0.0);
                matmul(&mut dcol, w_t, dy_g, false, par);
                for (j, n) in batch.clone().enumerate() {
                    wide.fold(g, &dcol, ld, j * columns, &mut phases);
                    wide.unphase(g, &phases, &mut dx_run[dx_of(n)]);
                }
            }
        }
        dw
    };
    let dw = sum_over_runs(&mut dx_runs, per_image, (want_weight, g.weight_len()), work);
    drop(dx_runs);
    (dx, dw)
}

/// The output columns `lo..hi` whose input column `o * stride + kx - pad` lies inside `0..w`.
pub fn valid(wo: usize, stride: usize, kx: usize, pad: usize, w: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(kx).div_ceil(stride).min(wo);
    let hi = if w + pad > kx {
        (w + pad - kx).div_ceil(stride).min(wo)
    } else {
        0
    };
    (lo, hi.max(lo))
}
