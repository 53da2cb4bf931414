//! A linear layer's three products on host slices: `y = x W + b` with `x [rows, d_in]` (the
//! leading dimensions flattened), `W [d_in, d_out]` as burn stores it; backward
//! `dx = dy Wᵀ`, `dW = xᵀ dy`, `db` the column sums of `dy`.

use gemm::Parallelism;

use super::super::host_matmul::{Mat, matmul};

/// The sizes of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub rows: usize,
    pub d_in: usize,
    pub d_out: usize,
}

/// Products below this many multiply-adds run on the calling thread: spreading a few thousand
/// over the threads costs more than it saves.
const PARALLEL_ABOVE: usize = 1 << 18;

fn parallelism(rows: usize, inner: usize, cols: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && rows * inner * cols > PARALLEL_ABOVE {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// `x W + b`: the bias written first, the product added onto it.
pub fn forward(d: Dims, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    assert_eq!(x.len(), d.rows * d.d_in, "linear input size");
    assert_eq!(w.len(), d.d_in * d.d_out, "linear weight size");
    let mut y = vec![0f32; d.rows * d.d_out];
    if let Some(b) = bias {
        assert_eq!(b.len(), d.d_out, "linear bias size");
        y.chunks_exact_mut(d.d_out).for_each(|row| row.copy_from_slice(b));
    }
    let par = parallelism(d.rows, d.d_in, d.d_out);
    let (x, w) = (Mat::row_major(x, d.rows, d.d_in), Mat::row_major(w, d.d_in, d.d_out));
    matmul(&mut y, x, w, bias.is_some(), par);
    y
}

/// The gradients `(dx, dW, db)`, each where asked for.
pub type Grads = (Option<Vec<f32>>, Option<Vec<f32>>, Option<Vec<f32>>);

/// The gradients asked for.
pub fn backward(d: Dims, (x, w, dy): (&[f32], &[f32], &[f32]), (want_x, want_w, want_b): (bool, bool, bool)) -> Grads {
    assert_eq!(dy.len(), d.rows * d.d_out, "linear output gradient size");
    let dy_mat = Mat::row_major(dy, d.rows, d.d_out);
    let dx = want_x.then(|| {
        let mut dx = vec![0f32; d.rows * d.d_in];
        let w_t = Mat::row_major(w, d.d_in, d.d_out).t();
        matmul(&mut dx, dy_mat, w_t, false, parallelism(d.rows, d.d_out, d.d_in));
        dx
    });
    let dw = want_w.then(|| {
        let mut dw = vec![0f32; d.d_in * d.d_out];
        let x_t = Mat::row_major(x, d.rows, d.d_in).t();
        matmul(&mut dw, x_t, dy_mat, false, parallelism(d.d_in, d.rows, d.d_out));
        dw
    });
    let db = want_b.then(|| {
        let mut db = vec![0f32; d.d_out];
        for row in dy.chunks_exact(d.d_out) {
            db.iter_mut().zip(row).for_each(|(s, v)| *s += v);
        }
        db
    });
    (dx, dw, db)
}
