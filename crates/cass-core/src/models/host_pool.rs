//! The ResNet stem's max pooling on the CPU backend, with its own backward pass.
//!
//! burn's Flex max pooling took 7-16 % of an evaluation-mode ResNet forward pass on this 2-core
//! VM, the more the faster the convolutions (`forward_profile`: 16-17 ms for ResNet-18 at 96 px,
//! batch 16, `bench/results/2026-12-06-vm-cpu-cnn-kernel-steps.json`). Here each `(image, channel)` plane is pooled by one thread
//! in one pass; in training the position of each window's maximum is kept, and the backward
//! pass adds each output gradient to that input position (the first maximum of a window, in
//! row-major order, as PyTorch picks). Only Flex devices call it ([`max_pool2d`] decides).

use std::sync::Arc;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::nn::pool::MaxPool2d;
use burn::prelude::*;
use burn::tensor::TensorData;
use multiversion::multiversion;
use rayon::prelude::*;

use super::conv::symmetric_padding;
use super::host_conv::valid_columns;
use super::host_tensor::{dims4, on_host, values};

/// Square window `k`, stride `s`, padding `p` (padding never wins a maximum).
#[derive(Clone, Copy, Debug)]
struct Window {
    k: usize,
    s: usize,
    p: usize,
}

#[backend_extension(Flex, Autodiff)]
pub trait HostPool: Backend {
    fn host_max_pool2d(x: FloatTensor<Self>, k: usize, s: usize, p: usize) -> FloatTensor<Self>;
}

/// Input values per parallel task at least: `cpu-small`'s 16 x 16 planes one per task spent
/// more time in the scheduler than in pooling.
const TASK_VALUES: usize = 1 << 14;

/// Pools every plane of `x` (`planes` of `h x w`), writing maxima and, if asked, the index of
/// each maximum within its plane.
fn pool(x: &[f32], [h, w]: [usize; 2], win: Window, want_index: bool) -> (Vec<f32>, Vec<u32>, [usize; 2]) {
    let ho = (h + 2 * win.p - win.k) / win.s + 1;
    let wo = (w + 2 * win.p - win.k) / win.s + 1;
    let planes = x.len() / (h * w);
    let (image, out) = (h * w, ho * wo);
    let per_task = TASK_VALUES.div_ceil(image).max(1);
    let mut y = vec![0f32; planes * out];
    let mut at = vec![0u32; if want_index { planes * out } else { 0 }];
    let rows = |oy: usize| ((oy * win.s).saturating_sub(win.p), (oy * win.s + win.k - win.p).min(h));
    if want_index {
        x.par_chunks(image * per_task)
            .zip(y.par_chunks_mut(out * per_task).zip(at.par_chunks_mut(out * per_task)))
            .for_each(|(x, (y, at))| {
                let planes = x.chunks(image).zip(y.chunks_mut(out).zip(at.chunks_mut(out)));
                for (plane, (y, at)) in planes {
                    for (oy, (row, row_at)) in y.chunks_mut(wo).zip(at.chunks_mut(wo)).enumerate() {
                        max_rows_indexed(plane, w, rows(oy), win, row, row_at);
                    }
                }
            });
    } else {
        x.par_chunks(image * per_task)
            .zip(y.par_chunks_mut(out * per_task))
            .for_each_init(Vec::new, |column, (x, y)| {
                for (plane, y) in x.chunks(image).zip(y.chunks_mut(out)) {
                    for (oy, row) in y.chunks_mut(wo).enumerate() {
                        max_rows(plane, w, rows(oy), win, row, column);
                    }
                }
            });
    }
    (y, at, [ho, wo])
}

/// `a` or `b`, whichever is larger, a NaN winning (as in PyTorch).
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() { b } else { a }
}

/// Maxima of one output row over input rows `y0..y1`: first the rows' maximum per input column
/// (`column`, contiguous, so it vectorises), then each window's maximum along it, one strided
/// pass per window column. Against one strided pass per window row and column (and one plane
/// per task), three alternated rounds of `forward_profile` (2026-12-06, this VM): ResNet-18's
/// pooling at 96 px, batch 16, 2.6-3.0 ms against 5.0-7.0; `cpu-small`'s 0.13-0.15 against
/// 0.24-0.27 (`bench/results/2026-12-06-vm-cpu-cnn-round2-steps.json`).
// Compiled for AVX-512 and AVX2 as well as the baseline (`multiversion`, as in `gelu.rs`);
// maxima only, so every width gives the same values.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn max_rows(plane: &[f32], w: usize, (y0, y1): (usize, usize), win: Window, row: &mut [f32], column: &mut Vec<f32>) {
    column.clear();
    column.extend_from_slice(&plane[y0 * w..(y0 + 1) * w]);
    for iy in y0 + 1..y1 {
        for (m, &v) in column.iter_mut().zip(&plane[iy * w..(iy + 1) * w]) {
            *m = nan_max(*m, v);
        }
    }
    row.fill(f32::NEG_INFINITY);
    for kx in 0..win.k {
        let (lo, hi) = valid_columns(row.len(), win.s, kx, win.p, w);
        if lo == hi {
            continue;
        }
        let first = lo * win.s + kx - win.p;
        for (m, &v) in row[lo..hi].iter_mut().zip(column[first..].iter().step_by(win.s)) {
            *m = nan_max(*m, v);
        }
    }
}

/// [`max_rows`], also writing where each maximum is in the plane: candidates are visited in
/// row-major order and only a strictly larger value replaces one, so the first maximum wins.
fn max_rows_indexed(plane: &[f32], w: usize, (y0, y1): (usize, usize), win: Window, row: &mut [f32], at: &mut [u32]) {
    row.fill(f32::NEG_INFINITY);
    at.fill(u32::MAX);
    for iy in y0..y1 {
        let src = &plane[iy * w..(iy + 1) * w];
        for kx in 0..win.k {
            let (lo, hi) = valid_columns(row.len(), win.s, kx, win.p, w);
            if lo == hi {
                continue;
            }
            let first = lo * win.s + kx - win.p;
            let cells = row[lo..hi].iter_mut().zip(at[lo..hi].iter_mut());
            for (i, ((m, a), &v)) in cells.zip(src[first..].iter().step_by(win.s)).enumerate() {
                let better = v > *m || (v.is_nan() && !m.is_nan()) || *a == u32::MAX;
                *m = if better { v } else { *m };
                *a = if better {
                    (iy * w + first + i * win.s) as u32
                } else {
                    *a
                };
            }
        }
    }
}

fn dims(t: &FlexTensor) -> [usize; 4] {
    dims4(t.layout().shape())
}

impl HostPool for Flex {
    fn host_max_pool2d(x: FlexTensor, k: usize, s: usize, p: usize) -> FlexTensor {
        let [b, c, h, w] = dims(&x);
        let (y, _, [ho, wo]) = pool(&values(&x), [h, w], Window { k, s, p }, false);
        FlexTensor::from_data(TensorData::new(y, [b, c, ho, wo]))
    }
}

/// Where each output's maximum came from, and the input's shape.
#[derive(Debug, Clone)]
struct Argmax {
    at: Arc<Vec<u32>>,
    input: [usize; 4],
}

#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    type State = Argmax;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let Some(node) = node else { return };
        let [b, c, h, w] = ops.state.input;
        let dy = values(&dy);
        let out = dy.len() / (b * c);
        let mut dx = vec![0f32; b * c * h * w];
        dx.par_chunks_mut(h * w)
            .zip(dy.par_chunks(out).zip(ops.state.at.par_chunks(out)))
            .for_each(|(dx, (dy, at))| {
                for (g, &i) in dy.iter().zip(at) {
                    dx[i as usize] += g;
                }
            });
        grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, [b, c, h, w])));
    }
}

impl<C: CheckpointStrategy> HostPool for Autodiff<Flex, C> {
    fn host_max_pool2d(x: FloatTensor<Self>, k: usize, s: usize, p: usize) -> FloatTensor<Self> {
        match MaxPoolBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                let [b, c, h, w] = dims(&x);
                let (y, at, [ho, wo]) = pool(&values(&x), [h, w], Window { k, s, p }, true);
                let y = FlexTensor::from_data(TensorData::new(y, [b, c, ho, wo]));
                prep.finish(
                    Argmax {
                        at: Arc::new(at),
                        input: [b, c, h, w],
                    },
                    y,
                )
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::host_max_pool2d(x.into_primitive(), k, s, p)),
        }
    }
}

/// `pool.forward(x)`, computed here on a Flex device (f32, square window and stride, symmetric
/// padding of at most half the window, no dilation), by burn elsewhere.
///
/// # Shapes
/// `[batch, c, h, w] -> [batch, c, h_out, w_out]`
pub fn max_pool2d(pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let [k, kw] = pool.kernel_size;
    let [s, sw] = pool.stride;
    match symmetric_padding(&pool.padding) {
        Some(p)
            if k == kw
                && s == sw
                && s > 0
                && 2 * p <= k
                && pool.dilation == [1, 1]
                && !pool.ceil_mode
                && h + 2 * p >= k
                && w + 2 * p >= k
                && on_host(&x) =>
        {
            Tensor::from_dispatch(<Dispatch as HostPool>::host_max_pool2d(x.into_dispatch(), k, s, p))
        }
        _ => pool.forward(x),
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::PaddingConfig2d;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::Distribution;

    use super::*;

    /// Against burn's max pooling, values and input gradient, for the stem's 3x3 stride-2
    /// padding-1 window and others (odd sizes, no padding, a window as large as the input).
    #[test]
    fn matches_burns_max_pooling_in_value_and_gradient() {
        let d = Device::flex().autodiff();
        for (k, s, p, h, w) in [
            (3, 2, 1, 8, 8),
            (3, 2, 1, 7, 5),
            (2, 2, 0, 6, 7),
            (3, 1, 1, 4, 4),
            (3, 3, 0, 3, 3),
        ] {
            let pool = MaxPool2dConfig::new([k, k])
                .with_strides([s, s])
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .init();
            let x = Tensor::<4>::random([3, 5, h, w], Distribution::Normal(0.0, 1.0), &d).require_grad();
            let ours = max_pool2d(&pool, x.clone());
            let theirs = pool.forward(x.clone());
            assert_eq!(ours.dims(), theirs.dims(), "k{k} s{s} p{p} {h}x{w}");
            let err = (ours.clone() - theirs.clone()).abs().max().into_scalar::<f32>();
            assert!(err == 0.0, "k{k} s{s} p{p} {h}x{w}: values differ by {err}");
            let probe = Tensor::<4>::random(theirs.dims(), Distribution::Normal(0.0, 1.0), &d);
            let g_ours = x.grad(&(ours * probe.clone()).sum().backward()).unwrap();
            let g_theirs = x.grad(&(theirs * probe).sum().backward()).unwrap();
            let err = (g_ours - g_theirs).abs().max().into_scalar::<f32>();
            assert!(err < 1e-6, "k{k} s{s} p{p} {h}x{w}: gradients differ by {err}");
            // And on a plain device (evaluation).
            let plain = x.inner();
            let err = (max_pool2d(&pool.clone(), plain.clone()) - pool.forward(plain))
                .abs()
                .max();
            assert!(err.into_scalar::<f32>() == 0.0);
        }
    }
}
