//! Winograd's minimal filtering F(2x2, 3x3) for the stride-1 3x3 convolutions (Lavin and Gray,
//! "Fast Algorithms for Convolutional Neural Networks", CVPR 2016): each 2x2 block of outputs
//! from its 4x4 input window with 16 multiplications per pair of channels instead of 36, and the
//! same transforms, transposed, for both gradients.
//!
//! With `D` a 4x4 input window, `g` a 3x3 kernel and `dY` the 2x2 block of output gradient:
//! - output: `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ D B)] A`, summed over the input channels;
//! - weight gradient: `dg = Gᵀ [(A dY Aᵀ) ⊙ (Bᵀ D B)] G`, summed over the windows;
//! - input gradient: `dD = B [(G g Gᵀ) ⊙ (A dY Aᵀ)] Bᵀ`, the windows' overlaps added.
//!
//! (Each gradient transposes the linear maps of the output's formula.) Summed over channels,
//! each of the 16 element-wise products is a matrix product over the tiles `T` of a group of
//! images, with `U = G g Gᵀ`, `V = Bᵀ D B`, `Z = A dY Aᵀ` laid out as 16 matrices each:
//! `M_ξ [c_out, T] = U_ξ [c_out, c_in] . V_ξ [c_in, T]` for the output, `U_ξᵀ . Z_ξ` for the
//! input gradient, `Z_ξ . V_ξᵀ` for the weight gradient. The transformed windows take 16 values
//! per 2x2 outputs and channel, 4 per input value, where the unfolding of `host_conv/kernel.rs` takes 9.
//!
//! Each plane is placed in a zeroed buffer covering every tile, split by row and column parity
//! (`planes::Quarters`), so the transforms have no edge cases and run as contiguous element-wise
//! passes over a whole plane; the spare tile column ([`Tiles`]) and tiles past an odd output
//! edge compute values that are dropped (forward) or come from zero gradients (backward).

mod kernels;
mod planes;

use super::super::host_matmul::{Mat, matmul};
use super::batches::{over_groups, runs, split, sum_over_runs};
use super::kernel::{Epilogue, finish};
use super::shape::Geometry;
use kernels::{kernel_transform, weight_gradient};
use planes::{transform_input_gradient, transform_output_gradient, transform_products, transform_windows};

/// Tiles per product at least, where small images allow it (several images per product, as in
/// `host_conv/kernel.rs`). 1,024 (groups of up to 8 images on ResNet-18's 24 x 24 stage instead of 1)
/// was no faster: its evaluation forward pass at 96 px 157-180 against 165-210 images/s (four
/// alternated rounds, `bench_step`).
const GROUP_TILES: usize = 256;

/// Input and output channels a convolution needs at least to go through the transforms. At 16
/// (`cpu-small`'s 8 x 8 stage would take them) its evaluation forward pass was no faster:
/// ratios 0.96-1.59 at batch 16, 0.82-0.99 at 64, its step 0.94-1.17 (three alternated rounds,
/// `bench_step`).
const MIN_CHANNELS: usize = 32;

/// Output rows and columns a convolution needs at least. On smaller outputs the spare tile
/// column and the transformed kernel (16 values for 9) outweigh the saved products: ResNet-18
/// at 96 px, batch 16, alternated with the unfolding (`conv_profile`, three rounds, this
/// 2-core VM, two layers per stage): 24 x 24 (64 channels) output 4.4-6.1 -> 2.3-3.9 ms, input
/// gradient 4.4-6.6 -> 2.1-3.8; 12 x 12 (128) 4.1-6.2 -> 2.7-4.0 and 4.9-6.7 -> 2.4-4.4; but
/// 6 x 6 (256) 2.9-7.3 -> 3.9-4.5 and 3.6-7.3 -> 5.2-5.8, and 3 x 3 (512) 3.2-5.5 -> 6.4-11.6
/// and 5.4-10.4 -> 9.1-19.3. At 224 px the 14 x 14 stage (256) went from 16.3-26.3 to 9.3-12.9
/// ms (output) and 24.9-31.9 to 10.8-14.7 (input gradient). Raw figures:
/// `bench/results/2026-12-06-vm-cpu-cnn-round3-steps.json`.
const MIN_SIDE: usize = 8;

/// Whether a convolution goes through Winograd's transforms: 3x3, stride 1, padding at most 2
/// (so a window never starts past the image), enough channels and outputs for the products to
/// dominate.
pub fn applies(g: &Geometry) -> bool {
    g.k == 3
        && g.stride == 1
        && g.pad <= 2
        && g.c_in.min(g.c_out) >= MIN_CHANNELS
        && g.out().is_some_and(|(ho, wo)| ho.min(wo) >= MIN_SIDE)
}

/// The tile grid of one geometry. Tiles are numbered row by row with one spare column per
/// row (`cols = tw + 1` per tile row): the transforms below then run as passes over a whole
/// plane, each tile's neighbour to the right one index on. The spare tiles' products are
/// computed and dropped (forward) or come from zero gradients (backward); at 24 x 24 outputs
/// that is 1 product column in 13.
#[derive(Clone, Copy)]
struct Tiles {
    /// Tile rows: half the output's, rounded up.
    th: usize,
    /// Tile columns with the spare one: half the output's, rounded up, and one.
    cols: usize,
}

impl Tiles {
    fn of(g: &Geometry) -> Self {
        let (ho, wo) = g.out().expect("a valid geometry");
        Self {
            th: ho.div_ceil(2),
            cols: wo.div_ceil(2) + 1,
        }
    }

    /// Product columns per image.
    fn per_image(&self) -> usize {
        self.th * self.cols
    }
}

/// `U_ξ [c_out, c_in]` in the layout of [`kernel_transform`].
fn u_matrix<'a>(u: &'a [f32], g: &Geometry, xi: usize) -> Mat<'a> {
    Mat {
        data: &u[xi * g.c_in..],
        rows: g.c_out,
        cols: g.c_in,
        rs: 16 * g.c_in,
        cs: 1,
    }
}

/// Images per product: enough tiles for the product, no more than a thread's share.
fn group(t: &Tiles, cap: usize) -> usize {
    (GROUP_TILES / t.per_image()).clamp(1, cap.max(1))
}

/// `y = epilogue(conv(x, weight))`, NCHW; the geometry must satisfy [`applies`].
pub fn forward(g: &Geometry, x: &[f32], weight: &[f32], epilogue: Epilogue) -> Vec<f32> {
    assert!(applies(g), "a stride-1 3x3 convolution");
    assert_eq!(x.len(), g.input_len(), "convolution input size");
    assert_eq!(weight.len(), g.weight_len(), "convolution weight size");
    if let Some(r) = epilogue.residual {
        assert_eq!(r.len(), g.output_len(), "residual size");
    }
    let t = Tiles::of(g);
    let (c_in, c_out) = (g.c_in, g.c_out);
    let positions = g.positions();
    let out_image = c_out * positions;
    let u = kernel_transform(g, weight);
    let (per_image, par) = split(g.batch);
    let group = if per_image {
        group(&t, g.batch.div_ceil(rayon::current_num_threads()))
    } else {
        1
    };
    let mut y = vec![0f32; g.output_len()];
    type Buffers = (Vec<f32>, Vec<f32>);
    let one = |(v, m): &mut Buffers, (i, (y_g, x_g)): (usize, (&mut [f32], &[f32]))| {
        let tiles = x_g.len() / g.image() * t.per_image();
        v.resize(16 * c_in * tiles, 0.0);
        transform_windows(x_g, c_in, (g.h, g.w, g.pad), &t, v);
        m.resize(16 * c_out * tiles, 0.0);
        for (xi, (m_xi, v_xi)) in m
            .chunks_exact_mut(c_out * tiles)
            .zip(v.chunks_exact(c_in * tiles))
            .enumerate()
        {
            let v_xi = Mat::row_major(v_xi, c_in, tiles);
            matmul(m_xi, u_matrix(&u, g, xi), v_xi, false, par);
        }
        transform_products(m, g, &t, y_g);
        for (j, y_n) in y_g.chunks_mut(out_image).enumerate() {
            let n = i * group + j;
            let residual = epilogue.residual.map(|r| &r[n * out_image..(n + 1) * out_image]);
            finish(y_n, positions, epilogue, residual);
        }
    };
    let init = || (Vec::new(), Vec::new());
    over_groups((&mut y, out_image), (x, g.image()), (group, per_image), init, one);
    y
}

/// The gradients of `sum(dy * conv(x, weight))` with respect to the input and to the weight,
/// each computed only where asked for; the geometry must satisfy [`applies`].
pub fn backward(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    want_input: bool,
    want_weight: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    assert!(applies(g), "a stride-1 3x3 convolution");
    assert_eq!(x.len(), g.input_len(), "convolution input size");
    assert_eq!(weight.len(), g.weight_len(), "convolution weight size");
    assert_eq!(dy.len(), g.output_len(), "convolution output gradient size");
    let t = Tiles::of(g);
    let (c_in, c_out) = (g.c_in, g.c_out);
    let out_image = c_out * g.positions();
    let u = want_input.then(|| kernel_transform(g, weight));
    let (per_image, par) = split(g.batch);
    // One contiguous run of images per thread (`batches.rs`): each thread sums its own
    // transformed weight gradient, the sums are added once and transformed back once (the
    // transform is linear).
    let mut dx = want_input.then(|| vec![0f32; g.input_len()]);
    let (run, mut dx_runs) = runs(g.batch, g.image(), per_image, dx.as_mut());
    let group = if per_image { group(&t, run) } else { 1 };
    let work = |(r, dx_run): (usize, &mut Option<&mut [f32]>)| -> Option<Vec<f32>> {
        let mut du = want_weight.then(|| vec![0f32; 16 * c_out * c_in]);
        let (mut z, mut v, mut dv) = (Vec::new(), Vec::new(), Vec::new());
        let first = r * run;
        let images = first..((r + 1) * run).min(g.batch);
        for start in images.clone().step_by(group) {
            let batch = start..(start + group).min(images.end);
            let tiles = batch.len() * t.per_image();
            z.resize(16 * c_out * tiles, 0.0);
            transform_output_gradient(&dy[batch.start * out_image..batch.end * out_image], g, &t, &mut z);
            if let Some(du) = du.as_mut() {
                v.resize(16 * c_in * tiles, 0.0);
                let x_g = &x[batch.start * g.image()..batch.end * g.image()];
                transform_windows(x_g, c_in, (g.h, g.w, g.pad), &t, &mut v);
                for ((du_xi, z_xi), v_xi) in du
                    .chunks_exact_mut(c_out * c_in)
                    .zip(z.chunks_exact(c_out * tiles))
                    .zip(v.chunks_exact(c_in * tiles))
                {
                    let z_xi = Mat::row_major(z_xi, c_out, tiles);
                    let v_xi = Mat::row_major(v_xi, c_in, tiles).t();
                    matmul(du_xi, z_xi, v_xi, start > first, par);
                }
            }
            if let (Some(dx_run), Some(u)) = (dx_run.as_mut(), u.as_ref()) {
                dv.resize(16 * c_in * tiles, 0.0);
                for (xi, (dv_xi, z_xi)) in dv
                    .chunks_exact_mut(c_in * tiles)
                    .zip(z.chunks_exact(c_out * tiles))
                    .enumerate()
                {
                    let u_xi = u_matrix(u, g, xi).t();
                    matmul(dv_xi, u_xi, Mat::row_major(z_xi, c_out, tiles), false, par);
                }
                let range = (batch.start - first) * g.image()..(batch.end - first) * g.image();
                transform_input_gradient(&dv, g, &t, &mut dx_run[range]);
            }
        }
        du
    };
    let du = sum_over_runs(&mut dx_runs, per_image, (want_weight, 16 * c_out * c_in), work);
    drop(dx_runs);
    (dx, du.map(|du| weight_gradient(g, &du)))
}
