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
//! per 2x2 outputs and channel, 4 per input value, where the unfolding of `kernel.rs` takes 9.
//!
//! Each plane is placed in a zeroed buffer covering every tile, split by row and column parity
//! ([`Quarters`]), so the transforms have no edge cases and run as contiguous element-wise
//! passes over a whole plane; the spare tile column ([`Tiles`]) and tiles past an odd output
//! edge compute values that are dropped (forward) or come from zero gradients (backward).

use multiversion::multiversion;
use rayon::prelude::*;

use super::super::host_matmul::{Mat, matmul};
use super::batches::{over_groups, runs, split, sum_over_runs};
use super::kernel::{Epilogue, finish};
use super::shape::Geometry;

/// Tiles per product at least, where small images allow it (several images per product, as in
/// `kernel.rs`). 1,024 (groups of up to 8 images on ResNet-18's 24 x 24 stage instead of 1)
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

// The one-dimensional maps of the kernel's transforms; `sandwich` applies one on both sides of
// a square block. (The windows' and the gradients' transforms are written out below, as passes
// over a whole plane.)
fn gk(k: [f32; 3]) -> [f32; 4] {
    [k[0], (k[0] + k[1] + k[2]) * 0.5, (k[0] - k[1] + k[2]) * 0.5, k[2]]
}
fn gt(u: [f32; 4]) -> [f32; 3] {
    [
        u[0] + (u[1] + u[2]) * 0.5,
        (u[1] - u[2]) * 0.5,
        (u[1] + u[2]) * 0.5 + u[3],
    ]
}

/// `F x Fᵀ` for the linear map `f` of matrix `F`.
#[inline(always)]
fn sandwich<const N: usize, const M: usize>(x: [[f32; N]; N], f: impl Fn([f32; N]) -> [f32; M]) -> [[f32; M]; M] {
    let columns: [[f32; M]; N] = std::array::from_fn(|j| f(std::array::from_fn(|i| x[i][j])));
    std::array::from_fn(|i| f(std::array::from_fn(|j| columns[j][i])))
}

/// The 16 matrices of a transformed tensor, one mutable slice each.
fn sixteen(data: &mut [f32]) -> [&mut [f32]; 16] {
    let size = data.len() / 16;
    let mut parts = data.chunks_exact_mut(size);
    std::array::from_fn(|_| parts.next().expect("16 parts"))
}

/// `U = G g Gᵀ` for every kernel, laid out `[c_out, 16, c_in]` so that each output channel's
/// values are one contiguous run (computed in parallel); `U_ξ` is the view of [`u_matrix`].
fn kernel_transform(g: &Geometry, weight: &[f32]) -> Vec<f32> {
    let c_in = g.c_in;
    let mut u = vec![0f32; 16 * g.c_out * c_in];
    u.par_chunks_mut(16 * c_in)
        .zip(weight.par_chunks(9 * c_in))
        .for_each(|(u_o, w_o)| {
            for (i, k) in w_o.chunks_exact(9).enumerate() {
                let k: [[f32; 3]; 3] = std::array::from_fn(|r| std::array::from_fn(|c| k[3 * r + c]));
                let t = sandwich(k, gk);
                for (r, row) in t.iter().enumerate() {
                    for (c, v) in row.iter().enumerate() {
                        u_o[(4 * r + c) * c_in + i] = *v;
                    }
                }
            }
        });
    u
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

/// `dg = Gᵀ dU G` for every kernel, from the 16 matrices `[c_out, c_in]`.
fn weight_gradient(g: &Geometry, du: &[f32]) -> Vec<f32> {
    let pairs = g.c_out * g.c_in;
    let mut dw = vec![0f32; pairs * 9];
    dw.par_chunks_mut(9 * g.c_in).enumerate().for_each(|(o, dw_o)| {
        for (i, k) in dw_o.chunks_exact_mut(9).enumerate() {
            let at = o * g.c_in + i;
            let m: [[f32; 4]; 4] = std::array::from_fn(|r| std::array::from_fn(|c| du[(4 * r + c) * pairs + at]));
            let t = sandwich(m, gt);
            for (r, row) in t.iter().enumerate() {
                k[3 * r..3 * r + 3].copy_from_slice(row);
            }
        }
    });
    dw
}

/// A padded plane split by row and column parity: `q[2 * pr + pc][a * cols + k]` is padded row
/// `2a + pr`, column `2k + pc`. A tile's window rows are then rows `ty` and `ty + 1` of the
/// even and odd quarters, its columns `k = tx` and `tx + 1`: at index `f = ty * cols + tx`,
/// every window value is one of the quarters at `f`, `f + 1`, `f + cols` or `f + cols + 1`.
struct Quarters {
    q: [Vec<f32>; 4],
    cols: usize,
}

impl Quarters {
    /// Zeroed, `th + 1` rows of `cols` each and one value more (the last tile's right
    /// neighbour).
    fn new(t: &Tiles) -> Self {
        Self {
            q: std::array::from_fn(|_| vec![0.0; (t.th + 1) * t.cols + 1]),
            cols: t.cols,
        }
    }

    /// The two quarters (and where in them) that padded row `py`'s values of even and odd
    /// image columns land in: column `x` is padded column `x + pad`.
    fn halves_of(&mut self, py: usize, pad: usize) -> [&mut [f32]; 2] {
        let (first, second) = (py % 2 * 2 + pad % 2, py % 2 * 2 + (pad + 1) % 2);
        let at = (py / 2) * self.cols;
        let [a, b] = self.q.get_disjoint_mut([first, second]).expect("two quarters");
        [&mut a[at + pad / 2..], &mut b[at + pad.div_ceil(2)..]]
    }

    /// The plane `[h, w]` at `(pad, pad)`; values outside it are left as they are (zero).
    #[inline(always)]
    fn place(&mut self, plane: &[f32], w: usize, pad: usize) {
        for (y, row) in plane.chunks_exact(w).enumerate() {
            let [a, b] = self.halves_of(y + pad, pad);
            let pairs = row.chunks_exact(2);
            if let [last] = pairs.remainder() {
                a[w / 2] = *last;
            }
            for (pair, (a, b)) in pairs.zip(a.iter_mut().zip(b.iter_mut())) {
                *a = pair[0];
                *b = pair[1];
            }
        }
    }

    /// The plane `[h, w]` read back from `(pad, pad)`.
    #[inline(always)]
    fn take(&mut self, plane: &mut [f32], w: usize, pad: usize) {
        for (y, row) in plane.chunks_exact_mut(w).enumerate() {
            let [a, b] = self.halves_of(y + pad, pad);
            if w % 2 == 1 {
                row[w - 1] = a[w / 2];
            }
            for (pair, (a, b)) in row.chunks_exact_mut(2).zip(a.iter().zip(b.iter())) {
                pair[0] = *a;
                pair[1] = *b;
            }
        }
    }

    fn zero(&mut self) {
        self.q.iter_mut().for_each(|q| q.fill(0.0));
    }
}

/// `Bᵀ D B` for every window of every plane of `images` (`[images, channels, h, w]`, padded
/// by `pad`), into 16 matrices `[channels, tiles]`.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn transform_windows(images: &[f32], channels: usize, (h, w, pad): (usize, usize, usize), t: &Tiles, out: &mut [f32]) {
    let (cols, per_image) = (t.cols, t.per_image());
    let tiles = images.len() / (h * w) / channels * per_image;
    let mut quarters = Quarters::new(t);
    let mut parts = sixteen(out);
    // `Bᵀ` over the window's rows: four rows, each split by column parity (and one value more).
    let mut rows = vec![0f32; 8 * (per_image + 1)];
    for (p, plane) in images.chunks_exact(h * w).enumerate() {
        let (n, c) = (p / channels, p % channels);
        quarters.place(plane, w, pad);
        for (pc, r) in rows.chunks_exact_mut(4 * (per_image + 1)).enumerate() {
            // Window rows 0 and 2 are the even quarter at `f` and `f + cols`, 1 and 3 the odd.
            let (even, odd) = (&quarters.q[pc], &quarters.q[2 + pc]);
            let (d0, d1, d2, d3) = (&even[..], &odd[..], &even[cols..], &odd[cols..]);
            let [r0, r1, r2, r3] = quarters_of(r);
            zip2(r0, d0, d2, |a, b| a - b);
            zip2(r1, d1, d2, |a, b| a + b);
            zip2(r2, d2, d1, |a, b| a - b);
            zip2(r3, d1, d3, |a, b| a - b);
        }
        let (even, odd) = rows.split_at(4 * (per_image + 1));
        let base = c * tiles + n * per_image;
        for (i, (e, o)) in even
            .chunks_exact(per_image + 1)
            .zip(odd.chunks_exact(per_image + 1))
            .enumerate()
        {
            // Window columns 0 and 2 are the even half at `f` and `f + 1`, 1 and 3 the odd.
            let (e0, e1, o0, o1) = (&e[..per_image], &e[1..], &o[..per_image], &o[1..]);
            let [v0, v1, v2, v3] = parts_of(&mut parts, i, base, per_image);
            zip2(v0, e0, e1, |a, b| a - b);
            zip2(v1, o0, e1, |a, b| a + b);
            zip2(v2, e1, o0, |a, b| a - b);
            zip2(v3, o0, o1, |a, b| a - b);
        }
    }
}

// Element-wise passes over slices at least as long as `out`, written as zipped iterators so
// that they vectorise (indexed loops over slices of unproven equal length kept their bounds
// checks and compiled to scalar code). The transforms that call them are compiled for AVX-512
// and AVX2 as well as the baseline (`multiversion`, as in `gelu.rs`); additions and
// subtractions only, so every width gives the same values.
#[inline(always)]
fn zip2(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) {
    debug_assert!(a.len() >= out.len() && b.len() >= out.len());
    for (o, (a, b)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = f(*a, *b);
    }
}
#[inline(always)]
fn zip3(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) {
    debug_assert!(a.len() >= out.len() && b.len() >= out.len() && c.len() >= out.len());
    for (o, ((a, b), c)) in out.iter_mut().zip(a.iter().zip(b).zip(c)) {
        *o = f(*a, *b, *c);
    }
}
/// `out += f(a, b, c)`.
#[inline(always)]
fn add3(out: &mut [f32], a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) {
    debug_assert!(a.len() >= out.len() && b.len() >= out.len() && c.len() >= out.len());
    for (o, ((a, b), c)) in out.iter_mut().zip(a.iter().zip(b).zip(c)) {
        *o += f(*a, *b, *c);
    }
}

/// The four slices `base..base + len` of matrices `4i .. 4i + 4`.
fn parts_of<'a>(parts: &'a mut [&mut [f32]; 16], i: usize, base: usize, len: usize) -> [&'a mut [f32]; 4] {
    let [a, b, c, d] = &mut parts[4 * i..4 * i + 4] else {
        unreachable!("four matrices")
    };
    [
        &mut a[base..base + len],
        &mut b[base..base + len],
        &mut c[base..base + len],
        &mut d[base..base + len],
    ]
}

/// A buffer split in four equal parts.
fn quarters_of(data: &mut [f32]) -> [&mut [f32]; 4] {
    let size = data.len() / 4;
    let mut parts = data.chunks_exact_mut(size);
    std::array::from_fn(|_| parts.next().expect("4 parts"))
}

/// The slices `base..base + len` of the 16 matrices of a transformed tensor.
fn slices(data: &[f32], base: usize, len: usize) -> [&[f32]; 16] {
    let size = data.len() / 16;
    std::array::from_fn(|xi| &data[xi * size + base..][..len])
}

/// `Aᵀ M A` for every tile, written into the output `[images, c_out, ho, wo]`.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn transform_products(m: &[f32], g: &Geometry, t: &Tiles, y: &mut [f32]) {
    let (ho, wo) = g.out().expect("a valid geometry");
    let (cols, per_image) = (t.cols, t.per_image());
    let tiles = y.len() / (ho * wo) / g.c_out * per_image;
    // `Aᵀ` over the rows (two rows of four columns), then over the columns: each output row
    // parity's even and odd columns.
    let mut p = vec![0f32; 8 * per_image];
    let mut eo = vec![0f32; 4 * per_image];
    for (q, plane) in y.chunks_exact_mut(ho * wo).enumerate() {
        let (n, c) = (q / g.c_out, q % g.c_out);
        let s = slices(m, c * tiles + n * per_image, per_image);
        let (first, second) = p.split_at_mut(4 * per_image);
        let pairs = first
            .chunks_exact_mut(per_image)
            .zip(second.chunks_exact_mut(per_image));
        for (j, (p0, p1)) in pairs.enumerate() {
            zip3(p0, s[j], s[4 + j], s[8 + j], |a, b, c| a + b + c);
            zip3(p1, s[4 + j], s[8 + j], s[12 + j], |a, b, c| a - b - c);
        }
        for (pr, eo) in p.chunks_exact(4 * per_image).zip(eo.chunks_exact_mut(2 * per_image)) {
            let [p0, p1, p2, p3] = std::array::from_fn(|j| &pr[j * per_image..(j + 1) * per_image]);
            let (e, o) = eo.split_at_mut(per_image);
            zip3(e, p0, p1, p2, |a, b, c| a + b + c);
            zip3(o, p1, p2, p3, |a, b, c| a - b - c);
        }
        for (oy, row) in plane.chunks_exact_mut(wo).enumerate() {
            let at = (oy % 2) * 2 * per_image + (oy / 2) * cols;
            let (e, o) = (&eo[at..], &eo[at + per_image..]);
            for (pair, (e, o)) in row.chunks_exact_mut(2).zip(e.iter().zip(o)) {
                pair[0] = *e;
                pair[1] = *o;
            }
            if wo % 2 == 1 {
                row[wo - 1] = e[wo / 2];
            }
        }
    }
}

/// `A dY Aᵀ` for every tile of the output gradient `[images, c_out, ho, wo]` (zero past its
/// edges and on the spare tiles), into 16 matrices `[c_out, tiles]`.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn transform_output_gradient(dy: &[f32], g: &Geometry, t: &Tiles, z: &mut [f32]) {
    let (ho, wo) = g.out().expect("a valid geometry");
    let (cols, per_image) = (t.cols, t.per_image());
    let tiles = dy.len() / (ho * wo) / g.c_out * per_image;
    let mut parts = sixteen(z);
    // The plane split by row and column parity (`[e0, o0, e1, o1]`, tile-indexed; what no
    // output reaches stays zero), then `A` over the rows: four rows of two halves.
    let mut split = vec![0f32; 4 * per_image];
    let mut rows = vec![0f32; 8 * per_image];
    for (q, plane) in dy.chunks_exact(ho * wo).enumerate() {
        let (n, c) = (q / g.c_out, q % g.c_out);
        for (oy, row) in plane.chunks_exact(wo).enumerate() {
            let at = (oy % 2) * 2 * per_image + (oy / 2) * cols;
            let (e, o) = split[at..].split_at_mut(per_image);
            for (pair, (e, o)) in row.chunks_exact(2).zip(e.iter_mut().zip(o.iter_mut())) {
                *e = pair[0];
                *o = pair[1];
            }
            if wo % 2 == 1 {
                e[wo / 2] = row[wo - 1];
            }
        }
        let [e0, o0, e1, o1] = std::array::from_fn(|j| &split[j * per_image..(j + 1) * per_image]);
        for (half, (y0, y1)) in [(e0, e1), (o0, o1)].into_iter().enumerate() {
            let r = &mut rows[half * 4 * per_image..(half + 1) * 4 * per_image];
            let [a0, a1, a2, a3] = quarters_of(r);
            a0.copy_from_slice(y0);
            zip2(a1, y0, y1, |a, b| a + b);
            zip2(a2, y0, y1, |a, b| a - b);
            zip2(a3, y1, y1, |_, b| -b);
        }
        let (even, odd) = rows.split_at(4 * per_image);
        let base = c * tiles + n * per_image;
        for (i, (e, o)) in even
            .chunks_exact(per_image)
            .zip(odd.chunks_exact(per_image))
            .enumerate()
        {
            let [z0, z1, z2, z3] = parts_of(&mut parts, i, base, per_image);
            z0.copy_from_slice(e);
            zip2(z1, e, o, |a, b| a + b);
            zip2(z2, e, o, |a, b| a - b);
            zip2(z3, o, o, |_, b| -b);
        }
    }
}

/// `B dV Bᵀ` for every tile, the overlapping windows added, the padding dropped: the input
/// gradient `[images, c_in, h, w]`. The spare tiles' `dV` is zero (their `Z` is).
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn transform_input_gradient(dv: &[f32], g: &Geometry, t: &Tiles, dx: &mut [f32]) {
    let (cols, per_image) = (t.cols, t.per_image());
    let tiles = dx.len() / (g.h * g.w) / g.c_in * per_image;
    let mut quarters = Quarters::new(t);
    // `B` over the columns of each window row `i`, by column parity: even at `f` and `f + 1`
    // (window columns 0 and 2), odd likewise (1 and 3); one value more for the shift.
    let n_rows = per_image + 1;
    let mut rows = vec![0f32; 8 * n_rows];
    for (q, plane) in dx.chunks_exact_mut(g.h * g.w).enumerate() {
        let (n, c) = (q / g.c_in, q % g.c_in);
        let s = slices(dv, c * tiles + n * per_image, per_image);
        for (i, r) in rows.chunks_exact_mut(2 * n_rows).enumerate() {
            let (e, o) = r.split_at_mut(n_rows);
            let (v0, v1, v2, v3) = (s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]);
            e[..per_image].copy_from_slice(v0);
            e[per_image] = 0.0;
            zip3(&mut o[..per_image], v1, v2, v3, |a, b, c| a - b + c);
            o[per_image] = 0.0;
            add3(&mut e[1..], v1, v2, v0, |a, b, c| a + b - c);
            add3(&mut o[1..], v3, v3, v3, |a, _, _| -a);
        }
        // `B` over the rows, added onto the quarters: window rows 0 and 2 are the even row
        // quarter at `f` and `f + cols`, 1 and 3 the odd.
        quarters.zero();
        for pc in 0..2 {
            let row = |i: usize| &rows[(2 * i + pc) * n_rows..(2 * i + pc + 1) * n_rows];
            let (q0, q1, q2, q3) = (row(0), row(1), row(2), row(3));
            let [ee, eo, oe, oo] = &mut quarters.q;
            let (even, odd) = if pc == 0 { (ee, oe) } else { (eo, oo) };
            add3(&mut even[..n_rows], q0, q0, q0, |a, _, _| a);
            add3(&mut odd[..n_rows], q1, q2, q3, |a, b, c| a - b + c);
            add3(&mut even[cols..cols + n_rows], q1, q2, q0, |a, b, c| a + b - c);
            add3(&mut odd[cols..cols + n_rows], q3, q3, q3, |a, _, _| -a);
        }
        quarters.take(plane, g.w, g.pad);
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
