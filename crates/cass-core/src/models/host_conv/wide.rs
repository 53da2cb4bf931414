//! The forward pass's unfolding on a "wide" output grid, where every patch row of an image is
//! one contiguous copy.
//!
//! The padded image is split into `s x s` phase planes (rows and columns of one residue modulo
//! the stride `s`; one plane when `s` is 1), each `hq x wq`. The input pixel that output
//! `(oy, ox)` reads at kernel offset `(ky, kx)` is then
//! `phase[ky % s][kx % s][(oy + ky / s) * wq + ox + kx / s]`: for a fixed `(c, ky, kx)` and the
//! output laid out `wq` wide (`ho x wq`, the columns from `wo` on discarded), the whole patch row
//! is `ho * wq` consecutive values of one plane. So the unfolding is one copy per row instead of
//! `ho` short runs with padding logic, at the price of `wq / wo` more product columns (19/16 on
//! `cpu-small`'s stem, 10/8 on its 8x8 stage, 26/24 on ResNet-18's 24x24 one).
//!
//! Measured against the row-by-row unfolding (`forward_profile`, three alternated rounds, this
//! 2-core VM, `bench/results/2026-12-06-vm-cpu-cnn-kernel-steps.json`): `cpu-small`'s evaluation
//! forward pass 1.35-1.49x faster at batch 16 and 1.23-1.48x at batch 64; ResNet-18 at 96 px
//! 0.81-1.07x, and using the wide grid only for rows narrower than 8, 16 or 32 outputs made no
//! consistent difference there (nor at 224 px).
//!
//! Where the extra columns cost more than the exact unfolding (many output channels, narrow
//! rows) the grid is the exact one instead ([`EXACT_ABOVE`]): columns are the output positions,
//! each read through a table of input indices built once per call (padding reads a zero kept
//! after the image). Alternated against the wide grid everywhere (this VM, 2026-12-06): with
//! the exact grid as row-by-row copies on every stage with `c_out * (wq - wo) > 64`, ResNet-18's
//! last stage at 96 px had its input gradients in 26-35 ms against 43-45 (`conv_profile --only
//! layer4`, three rounds) and the ResNet-18 + ViT-Ti CASS step ran at 23.7 against 22.5
//! images/s (medians of five rounds, `bench_step`). The table and the rule below then took the
//! evaluation forward pass (`forward_profile`, medians of four rounds) of `cpu-small` from
//! 7,508 to 8,749 images/s at batch 16 and 8,887 to 11,632 at 64, ResNet-18 at 96 px from 140
//! to 151; the steps from 21.9 to 23.0 (ResNet-18 + ViT-Ti), 491 to 504 (`cpu-small`) and 207
//! to 222 (two views): the copies of one to three values had been a quarter of `cpu-small`'s
//! forward pass (`perf`). Raw figures: `bench/results/2026-12-06-vm-cpu-cnn-round2-steps.json`.

use super::shape::Geometry;

/// The layout of one geometry's unfolding: the wide grid, or the exact one where the wide
/// grid's extra columns would cost more products than the short copies of the exact unfolding.
#[derive(Clone, Debug)]
pub struct Wide {
    s: usize,
    pad: usize,
    /// Output grid width: the phase plane width, or `wo` on the exact grid.
    pub wq: usize,
    /// Values per phase plane: `hq * wq` and room for the last row's reads past its end (on the
    /// exact grid, the image and the zero after it).
    plane: usize,
    /// On the exact grid (columns are the output positions, the "phases" the image with one
    /// zero after it): for each patch row and output position, the image value it reads, or the
    /// zero where it reads padding. Built once per call, shared by the batch's images.
    exact: Option<Vec<u32>>,
}

/// The exact grid is used where the wide grid's extra product work per patch row and output
/// row (`c_out` times its extra columns) exceeds this many times the exact unfolding's (one
/// table lookup per output): on ResNet-18 at 96 px every stage from 12 x 12 down, on
/// `cpu-small` its 4 x 4 stage and below.
const EXACT_ABOVE: usize = 8;

impl Wide {
    pub fn of(g: &Geometry) -> Self {
        let s = g.stride;
        let (hq, wq) = ((g.h + 2 * g.pad).div_ceil(s), (g.w + 2 * g.pad).div_ceil(s));
        let (_, wo) = g.out().expect("a valid geometry");
        if g.c_out * (wq - wo) > EXACT_ABOVE * wo && g.image() < u32::MAX as usize {
            return Self {
                s,
                pad: g.pad,
                wq: wo,
                plane: g.image() + 1,
                exact: Some(exact_index(g)),
            };
        }
        Self {
            s,
            pad: g.pad,
            wq,
            plane: hq * wq + g.k.div_ceil(s),
            exact: None,
        }
    }

    /// Output columns per image on the wide grid.
    pub fn columns(&self, g: &Geometry) -> usize {
        g.out().expect("a valid geometry").0 * self.wq
    }

    /// The image's phase planes, `[c_in][s][s][plane]`, zero where the padding is.
    pub fn phases(&self, g: &Geometry, x_n: &[f32], out: &mut Vec<f32>) {
        out.clear();
        if self.exact.is_some() {
            out.extend_from_slice(x_n);
            out.push(0.0);
            return;
        }
        out.resize(g.c_in * self.s * self.s * self.plane, 0.0);
        self.for_each_run(g, |from, to, len| {
            let dst = &mut out[to..to + len];
            if self.s == 1 {
                dst.copy_from_slice(&x_n[from..from + len]);
            } else {
                dst.iter_mut()
                    .zip(x_n[from..].iter().step_by(self.s))
                    .for_each(|(d, v)| *d = *v);
            }
        });
    }

    /// Every run of input pixels that lands contiguously in one phase plane: `f(from, to, len)`
    /// for the input row's pixels `from, from + s, ...` (indices into the image) and the phase
    /// buffer's `to..to + len`. One input row gives `s` runs, one per column residue.
    fn for_each_run(&self, g: &Geometry, mut f: impl FnMut(usize, usize, usize)) {
        let s = self.s;
        for c in 0..g.c_in {
            for iy in 0..g.h {
                let py = iy + self.pad;
                let (ry, qy) = (py % s, py / s);
                for rx in 0..s {
                    // Input columns ix with (ix + pad) % s == rx land at (ix + pad) / s.
                    let first = (rx + s - self.pad % s) % s;
                    if first >= g.w {
                        continue;
                    }
                    let plane = (c * s + ry) * s + rx;
                    let to = plane * self.plane + qy * self.wq + (first + self.pad) / s;
                    f((c * g.h + iy) * g.w + first, to, (g.w - first).div_ceil(s));
                }
            }
        }
    }

    /// Patch rows from the phase planes into columns `at..at + columns` of `col`, row-major
    /// `[patch, ld]`.
    pub fn unfold(&self, g: &Geometry, phases: &[f32], col: &mut [f32], ld: usize, at: usize) {
        if let Some(index) = &self.exact {
            let n = self.columns(g);
            for (row, index) in col.chunks_mut(ld).zip(index.chunks_exact(n)) {
                for (d, &i) in row[at..at + n].iter_mut().zip(index) {
                    *d = phases[i as usize];
                }
            }
            return;
        }
        let n = self.columns(g);
        for (row, start) in col.chunks_mut(ld).zip(self.row_starts(g)) {
            row[at..at + n].copy_from_slice(&phases[start..start + n]);
        }
    }

    /// Where each patch row `(c, ky, kx)`, in order, starts in the phase planes (wide grid).
    fn row_starts(&self, g: &Geometry) -> impl Iterator<Item = usize> + '_ {
        let (s, k) = (self.s, g.k);
        (0..g.c_in * k * k).map(move |r| {
            let (c, ky, kx) = (r / (k * k), r / k % k, r % k);
            let plane = (c * s + ky % s) * s + kx % s;
            plane * self.plane + (ky / s) * self.wq + kx / s
        })
    }

    /// The output gradient of one image, `[c_out, ho, wo]`, on the wide grid: into columns
    /// `at..at + ho * wq` of `out`, row-major `[c_out, ld]`, zero in the extra columns.
    pub fn widen(&self, g: &Geometry, dy_n: &[f32], out: &mut [f32], ld: usize, at: usize) {
        let (ho, wo) = g.out().expect("a valid geometry");
        let n = ho * self.wq;
        for (src, dst) in dy_n.chunks_exact(ho * wo).zip(out.chunks_mut(ld)) {
            for (s, d) in src.chunks_exact(wo).zip(dst[at..at + n].chunks_exact_mut(self.wq)) {
                d[..wo].copy_from_slice(s);
                d[wo..].fill(0.0);
            }
        }
    }

    /// The patch-row gradients in columns `at..at + ho * wq` of `col` (row-major `[patch, ld]`)
    /// added back onto the phase planes they were read from (`phases`, resized and zeroed): the
    /// reverse of [`Self::unfold`].
    pub fn fold(&self, g: &Geometry, col: &[f32], ld: usize, at: usize, phases: &mut Vec<f32>) {
        let n = self.columns(g);
        phases.clear();
        if let Some(index) = &self.exact {
            phases.resize(self.plane, 0.0);
            for (row, index) in col.chunks(ld).zip(index.chunks_exact(n)) {
                for (v, &i) in row[at..at + n].iter().zip(index) {
                    phases[i as usize] += v;
                }
            }
            return;
        }
        phases.resize(g.c_in * self.s * self.s * self.plane, 0.0);
        for (row, start) in col.chunks(ld).zip(self.row_starts(g)) {
            for (d, v) in phases[start..start + n].iter_mut().zip(&row[at..at + n]) {
                *d += v;
            }
        }
    }

    /// The image's gradient from its phase planes' gradients, padding dropped: the reverse of
    /// [`Self::phases`].
    pub fn unphase(&self, g: &Geometry, phases: &[f32], dx_n: &mut [f32]) {
        if self.exact.is_some() {
            dx_n.copy_from_slice(&phases[..dx_n.len()]);
            return;
        }
        self.for_each_run(g, |from, to, len| {
            let src = &phases[to..to + len];
            if self.s == 1 {
                dx_n[from..from + len].copy_from_slice(src);
            } else {
                dx_n[from..]
                    .iter_mut()
                    .step_by(self.s)
                    .zip(src)
                    .for_each(|(d, v)| *d = *v);
            }
        });
    }
}

/// The exact grid's table: for patch row `(c, ky, kx)` and output `(oy, ox)`, the index of input
/// pixel `(c, oy * s + ky - pad, ox * s + kx - pad)` in the image, or `image()` (the zero after
/// it) where that pixel is padding.
fn exact_index(g: &Geometry) -> Vec<u32> {
    let (ho, wo) = g.out().expect("a valid geometry");
    let (s, k, p) = (g.stride, g.k, g.pad);
    let zero = g.image() as u32;
    let mut index = Vec::with_capacity(g.patch() * ho * wo);
    for c in 0..g.c_in {
        for ky in 0..k {
            for kx in 0..k {
                for oy in 0..ho {
                    let iy = (oy * s + ky).wrapping_sub(p);
                    for ox in 0..wo {
                        let ix = (ox * s + kx).wrapping_sub(p);
                        let inside = iy < g.h && ix < g.w;
                        index.push(if inside {
                            ((c * g.h + iy) * g.w + ix) as u32
                        } else {
                            zero
                        });
                    }
                }
            }
        }
    }
    index
}
