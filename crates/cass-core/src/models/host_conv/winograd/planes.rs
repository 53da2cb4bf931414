//! The planes' side of Winograd's transforms: `V = Bᵀ D B` of every input window, `Aᵀ M A` of
//! every tile's products into the output, `Z = A dY Aᵀ` of the output gradient and
//! `B dV Bᵀ` back onto the input gradient, each as contiguous element-wise passes over a whole
//! plane split by row and column parity ([`Quarters`]).

use multiversion::multiversion;

use super::super::shape::Geometry;
use super::Tiles;

/// The 16 matrices of a transformed tensor, one mutable slice each.
fn sixteen(data: &mut [f32]) -> [&mut [f32]; 16] {
    let size = data.len() / 16;
    let mut parts = data.chunks_exact_mut(size);
    std::array::from_fn(|_| parts.next().expect("16 parts"))
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
pub(super) fn transform_windows(
    images: &[f32],
    channels: usize,
    (h, w, pad): (usize, usize, usize),
    t: &Tiles,
    out: &mut [f32],
) {
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
pub(super) fn transform_products(m: &[f32], g: &Geometry, t: &Tiles, y: &mut [f32]) {
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
pub(super) fn transform_output_gradient(dy: &[f32], g: &Geometry, t: &Tiles, z: &mut [f32]) {
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
pub(super) fn transform_input_gradient(dv: &[f32], g: &Geometry, t: &Tiles, dx: &mut [f32]) {
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
