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
//! Where the extra columns cost more than short copies (many output channels, narrow rows) the
//! grid is the exact one instead ([`EXACT_ABOVE`]): columns are the output positions and each
//! patch row is copied output row by output row. Against the wide grid everywhere, alternated
//! (this VM, 2026-12-06): ResNet-18's last stage at 96 px, input gradients 26-35 ms against
//! 43-45 (`conv_profile --only layer4`, three rounds), the ResNet-18 + ViT-Ti CASS step at 96
//! px 23.7 against 22.5 images/s (medians of five rounds, `bench_step`); the evaluation
//! forward pass and `cpu-small`'s step within noise.

use super::shape::Geometry;

/// The layout of one geometry's unfolding: the wide grid, or the exact one where the wide
/// grid's extra columns would cost more products than the short copies of the exact unfolding.
#[derive(Clone, Copy, Debug)]
pub struct Wide {
    s: usize,
    pad: usize,
    /// Output grid width: the phase plane width, or `wo` on the exact grid.
    pub wq: usize,
    /// Values per phase plane: `hq * wq` and room for the last row's reads past its end.
    plane: usize,
    /// The exact grid: columns are the output positions, the "phases" the image itself.
    exact: bool,
}

/// Extra product work per patch row and output row on the wide grid (`c_out` times its extra
/// columns) above which the exact unfolding is used: each of its patch rows is `ho` short
/// copies with padding logic. The exact grid takes ResNet-18's 3x3 and 6x6 stages at 96 px
/// (a 3x3 output is 15 wide columns for 9 positions) and `cpu-small`'s last two; see the module
/// documentation for what it changed.
const EXACT_ABOVE: usize = 64;

impl Wide {
    pub fn of(g: &Geometry) -> Self {
        let s = g.stride;
        let (hq, wq) = ((g.h + 2 * g.pad).div_ceil(s), (g.w + 2 * g.pad).div_ceil(s));
        let (_, wo) = g.out().expect("a valid geometry");
        if g.c_out * (wq - wo) > EXACT_ABOVE {
            return Self {
                s,
                pad: g.pad,
                wq: wo,
                plane: g.h * g.w,
                exact: true,
            };
        }
        Self {
            s,
            pad: g.pad,
            wq,
            plane: hq * wq + g.k.div_ceil(s),
            exact: false,
        }
    }

    /// Output columns per image on the wide grid.
    pub fn columns(&self, g: &Geometry) -> usize {
        g.out().expect("a valid geometry").0 * self.wq
    }

    /// The image's phase planes, `[c_in][s][s][plane]`, zero where the padding is.
    pub fn phases(&self, g: &Geometry, x_n: &[f32], out: &mut Vec<f32>) {
        out.clear();
        if self.exact {
            out.extend_from_slice(x_n);
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
        if self.exact {
            let s = self.s;
            self.for_each_run_exact(g, ld, at, |start, len, src| {
                let dst = &mut col[start..start + len];
                match src {
                    None => dst.fill(0.0),
                    Some(src) if s == 1 => dst.copy_from_slice(&phases[src..src + len]),
                    Some(src) => dst.iter_mut().zip(phases[src..].iter().step_by(s)).for_each(|(d, v)| *d = *v),
                }
            });
            return;
        }
        let (s, k) = (self.s, g.k);
        let n = self.columns(g);
        let mut rows = col.chunks_mut(ld);
        for c in 0..g.c_in {
            for ky in 0..k {
                for kx in 0..k {
                    let plane = (c * s + ky % s) * s + kx % s;
                    let start = plane * self.plane + (ky / s) * self.wq + kx / s;
                    let row = rows.next().expect("patch rows");
                    row[at..at + n].copy_from_slice(&phases[start..start + n]);
                }
            }
        }
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
        let (s, k) = (self.s, g.k);
        let n = self.columns(g);
        phases.clear();
        if self.exact {
            phases.resize(g.image(), 0.0);
            self.for_each_run_exact(g, ld, at, |start, len, dst| {
                let src = &col[start..start + len];
                match dst {
                    None => {}
                    Some(dst) if s == 1 => phases[dst..dst + len].iter_mut().zip(src).for_each(|(d, v)| *d += v),
                    Some(dst) => phases[dst..].iter_mut().step_by(s).zip(src).for_each(|(d, v)| *d += v),
                }
            });
            return;
        }
        phases.resize(g.c_in * s * s * self.plane, 0.0);
        let mut rows = col.chunks(ld);
        for c in 0..g.c_in {
            for ky in 0..k {
                for kx in 0..k {
                    let plane = (c * s + ky % s) * s + kx % s;
                    let start = plane * self.plane + (ky / s) * self.wq + kx / s;
                    let row = &rows.next().expect("patch rows")[at..at + n];
                    for (d, v) in phases[start..start + n].iter_mut().zip(row) {
                        *d += v;
                    }
                }
            }
        }
    }

    /// The image's gradient from its phase planes' gradients, padding dropped: the reverse of
    /// [`Self::phases`].
    pub fn unphase(&self, g: &Geometry, phases: &[f32], dx_n: &mut [f32]) {
        if self.exact {
            dx_n.copy_from_slice(phases);
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

    /// The exact grid's unfolding as runs of columns: for every patch row `(c, ky, kx)` and
    /// output row `oy`, `f(start, len, source)` for the columns `start..start + len` of `col`
    /// (row-major `[patch, ld]`, from column `at`) and `Some(i)`, the image index of the first
    /// input pixel they read (the next ones `stride` apart), or `None` where they read padding.
    fn for_each_run_exact(&self, g: &Geometry, ld: usize, at: usize, mut f: impl FnMut(usize, usize, Option<usize>)) {
        let (ho, wo) = g.out().expect("a valid geometry");
        let (s, k, p) = (g.stride, g.k, g.pad);
        let mut row = 0;
        for c in 0..g.c_in {
            for ky in 0..k {
                for kx in 0..k {
                    let (lo, hi) = super::kernel::valid(wo, s, kx, p, g.w);
                    for oy in 0..ho {
                        let start = row * ld + at + oy * wo;
                        let iy = (oy * s + ky).wrapping_sub(p);
                        if iy >= g.h || lo == hi {
                            f(start, wo, None);
                            continue;
                        }
                        if lo > 0 {
                            f(start, lo, None);
                        }
                        f(start + lo, hi - lo, Some((c * g.h + iy) * g.w + lo * s + kx - p));
                        if hi < wo {
                            f(start + hi, wo - hi, None);
                        }
                    }
                    row += 1;
                }
            }
        }
    }
}
