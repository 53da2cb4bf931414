//! The kernel's side of Winograd's transforms: `U = G g Gᵀ` for every 3x3 kernel before the
//! products, and `dg = Gᵀ dU G` after them for the weight gradient.

use rayon::prelude::*;

use super::super::shape::Geometry;

// The one-dimensional maps of the kernel's transforms; `sandwich` applies one on both sides of
// a square block. (The windows' and the gradients' transforms are in `planes.rs`, as passes over
// a whole plane.)
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

/// `U = G g Gᵀ` for every kernel, laid out `[c_out, 16, c_in]` so that each output channel's
/// values are one contiguous run (computed in parallel); `U_ξ` is the view of `super::u_matrix`.
pub(super) fn kernel_transform(g: &Geometry, weight: &[f32]) -> Vec<f32> {
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

/// `dg = Gᵀ dU G` for every kernel, from the 16 matrices `[c_out, c_in]`.
pub(super) fn weight_gradient(g: &Geometry, du: &[f32]) -> Vec<f32> {
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
