//! The convolution's three products on host memory (f32, NCHW, no groups or dilation, square
//! kernel, equal stride and zero padding on both axes): the output, the input gradient and the
//! weight gradient, each as matrix products per image over the image's unfolded patches.
//!
//! Per image `n`, with `patch = c_in * k * k` and `positions = h_out * w_out`:
//! - `col_n [patch, positions]`: the input's `k x k` windows, one column per output position
//!   (im2col, in NCHW order, so no layout copy is needed on either side);
//! - output: `y_n [c_out, positions] = W [c_out, patch] . col_n`, written in place in NCHW;
//! - input gradient: `dcol = W^T . dy_n`, folded back onto the image (col2im);
//! - weight gradient: `dW += dy_n . col_n^T`, summed over the images each thread owns.
//!
//! A 1x1 stride-1 unpadded convolution skips the unfolding: `col_n` is the image itself.
//! The products go to the `gemm` crate (runtime-selected AVX-512, AVX2 or scalar microkernels);
//! images are spread over the threads when there are at least as many images as threads, the
//! product is split across them otherwise (a single image, at prediction time).

use gemm::Parallelism;
use rayon::prelude::*;

use super::shape::Geometry;
use super::wide::Wide;

/// Output columns a product should have at least, where small images allow it (see
/// [`forward`]).
const GROUP_COLUMNS: usize = 512;

/// How the work of a batch is split over the threads.
fn split(batch: usize) -> (bool, Parallelism) {
    let threads = rayon::current_num_threads();
    if batch >= threads || threads == 1 {
        (true, Parallelism::None)
    } else {
        (false, Parallelism::Rayon(threads))
    }
}

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
    // `cpu-small`, three alternated rounds): batch 16 from 6,700-7,700 to 7,400-8,800 images/s,
    // batch 64 from 8,100-8,700 to 7,300-10,400; targets of 256 to 2,048 columns were within
    // noise of 512.
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
    if per_image {
        y.par_chunks_mut(group * out_image)
            .zip(x.par_chunks(group * g.image()))
            .enumerate()
            .for_each_init(init, one);
    } else {
        let mut buffers = init();
        let images = y.chunks_mut(out_image).zip(x.chunks(g.image())).enumerate();
        images.for_each(|pair| one(&mut buffers, pair));
    }
    y
}

/// The epilogue on one image's output `[c_out, positions]`.
fn finish(y_n: &mut [f32], positions: usize, e: Epilogue, residual: Option<&[f32]>) {
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
    // Images per task: one contiguous run of images per thread, so each thread sums its own
    // weight gradient and the runs' sums are added once at the end.
    let tasks = if per_image {
        rayon::current_num_threads().min(g.batch)
    } else {
        1
    };
    let run = g.batch.div_ceil(tasks);
    let mut dx = want_input.then(|| vec![0f32; g.input_len()]);
    let mut dx_runs: Vec<Option<&mut [f32]>> = match dx.as_mut() {
        Some(dx) => dx.chunks_mut(run * g.image()).map(Some).collect(),
        None => (0..g.batch.div_ceil(run)).map(|_| None).collect(),
    };
    let work = |(t, dx_run): (usize, &mut Option<&mut [f32]>)| -> Option<Vec<f32>> {
        let mut dw = want_weight.then(|| vec![0f32; g.weight_len()]);
        let (mut col, mut dcol) = (Vec::new(), Vec::new());
        for (i, n) in (t * run..((t + 1) * run).min(g.batch)).enumerate() {
            let x_n = &x[n * g.image()..(n + 1) * g.image()];
            let dy_n = Mat::row_major(
                &dy[n * g.c_out * positions..(n + 1) * g.c_out * positions],
                g.c_out,
                positions,
            );
            if let Some(dw) = dw.as_mut() {
                let col = unfold_into(g, x_n, &mut col);
                // dW [c_out, patch] += dy_n [c_out, positions] . col_n^T [positions, patch]
                matmul(dw, dy_n, Mat::row_major(col, patch, positions).t(), i > 0, par);
            }
            if let Some(dx_run) = dx_run.as_mut() {
                let dx_n = &mut dx_run[i * g.image()..(i + 1) * g.image()];
                let w_t = Mat::row_major(weight, g.c_out, patch).t();
                if g.pointwise() {
                    matmul(dx_n, w_t, dy_n, false, par);
                } else {
                    dcol.resize(patch * positions, 0.0);
                    matmul(&mut dcol, w_t, dy_n, false, par);
                    fold_add(g, &dcol, dx_n);
                }
            }
        }
        dw
    };
    let sums: Vec<Option<Vec<f32>>> = if per_image {
        dx_runs.par_iter_mut().enumerate().map(work).collect()
    } else {
        dx_runs.iter_mut().enumerate().map(work).collect()
    };
    let dw = want_weight.then(|| {
        let mut sums = sums.into_iter().flatten();
        let mut total = sums.next().unwrap_or_else(|| vec![0f32; g.weight_len()]);
        for s in sums {
            total.iter_mut().zip(&s).for_each(|(t, s)| *t += s);
        }
        total
    });
    (dx, dw)
}

/// The image's patches as `[patch, positions]` in `col` (resized), or the image itself for a
/// pointwise convolution.
fn unfold_into<'a>(g: &Geometry, x_n: &'a [f32], col: &'a mut Vec<f32>) -> &'a [f32] {
    if g.pointwise() {
        return x_n;
    }
    col.resize(g.patch() * g.positions(), 0.0);
    unfold_at(g, x_n, col, g.positions(), 0);
    col
}

/// The image's patches written into columns `at..at + positions` of `col`, a row-major
/// `[patch, ld]` matrix (several images side by side when `ld` is a multiple of `positions`).
fn unfold_at(g: &Geometry, x_n: &[f32], col: &mut [f32], ld: usize, at: usize) {
    let (ho, wo) = g.out().expect("a valid geometry");
    let positions = ho * wo;
    if g.pointwise() {
        for (r, row) in col.chunks_mut(ld).enumerate() {
            row[at..at + positions].copy_from_slice(&x_n[r * positions..(r + 1) * positions]);
        }
        return;
    }
    let (k, s, pad, h, w) = (g.k, g.stride, g.pad, g.h, g.w);
    // The output rows whose input row `oy * s + ky - pad` is inside the image, per `ky`.
    let rows = |ky: usize| valid(ho, s, ky, pad, h);
    let mut rows_of = col.chunks_mut(ld);
    for c in 0..g.c_in {
        let plane = &x_n[c * h * w..(c + 1) * h * w];
        for ky in 0..k {
            let (y_lo, y_hi) = rows(ky);
            for kx in 0..k {
                let row = &mut rows_of.next().expect("patch rows")[at..at + positions];
                let (lo, hi) = valid(wo, s, kx, pad, w);
                // Rows outside the image are zero; inside, zero before `lo` and after `hi`
                // and the input in between, in plain element loops with no division or bounds
                // logic per row: `cpu-small`'s rows are 2 to 16 outputs long, and its unfolding
                // was 61 % of its batch-64 forward pass (`perf`). This loop order made that
                // forward pass 5-8 % faster (`forward_profile`, three alternated rounds); the
                // unfolding is still about 60 % of it, at 3-4 cycles per element.
                row[..y_lo * wo].iter_mut().for_each(|o| *o = 0.0);
                row[y_hi * wo..].iter_mut().for_each(|o| *o = 0.0);
                for oy in y_lo..y_hi {
                    let out = &mut row[oy * wo..(oy + 1) * wo];
                    let src = &plane[(oy * s + ky - pad) * w..][..w];
                    for o in &mut out[..lo] {
                        *o = 0.0;
                    }
                    for o in &mut out[hi..] {
                        *o = 0.0;
                    }
                    if lo < hi {
                        let first = lo * s + kx - pad;
                        let dst = &mut out[lo..hi];
                        if s == 1 {
                            let src = &src[first..first + dst.len()];
                            for (o, v) in dst.iter_mut().zip(src) {
                                *o = *v;
                            }
                        } else {
                            let mut ix = first;
                            for o in dst.iter_mut() {
                                *o = src[ix];
                                ix = ix.wrapping_add(s);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `dx_n += fold(dcol)`: each patch entry added back onto the input pixel it was read from.
fn fold_add(g: &Geometry, dcol: &[f32], dx_n: &mut [f32]) {
    let (_, wo) = g.out().expect("a valid geometry");
    for (r, row) in dcol.chunks(g.positions()).enumerate() {
        let (c, ky, kx) = (r / (g.k * g.k), r / g.k % g.k, r % g.k);
        let plane = &mut dx_n[c * g.h * g.w..(c + 1) * g.h * g.w];
        let (lo, hi) = valid(wo, g.stride, kx, g.pad, g.w);
        for (oy, grad) in row.chunks(wo).enumerate() {
            let iy = (oy * g.stride + ky).wrapping_sub(g.pad);
            if iy >= g.h || lo >= hi {
                continue;
            }
            let dst = &mut plane[iy * g.w..(iy + 1) * g.w];
            let first = lo * g.stride + kx - g.pad;
            for (d, s) in dst[first..].iter_mut().step_by(g.stride).zip(&grad[lo..hi]) {
                *d += s;
            }
        }
    }
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

/// A read-only matrix view: element `(i, j)` at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Whether every element the view names lies inside its slice.
    fn in_bounds(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst (row-major [a.rows, b.cols]) = a . b`, or `+=` with `accumulate`.
fn matmul(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool, par: Parallelism) {
    assert_eq!(a.cols, b.rows, "inner dimensions");
    assert_eq!(dst.len(), a.rows * b.cols, "destination size");
    assert!(a.in_bounds() && b.in_bounds(), "matrix views inside their data");
    if dst.is_empty() {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: the three views were checked above to lie inside their slices (every index
    // `i * rs + j * cs` for `i < rows`, `j < cols`), `dst` is exclusively borrowed and does not
    // overlap the shared inputs, and `gemm` reads and writes only those indices.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst.as_mut_ptr(),
            1,
            b.cols as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}
