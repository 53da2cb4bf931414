//! Matrix products on host slices through the `gemm` crate (runtime-selected AVX-512, AVX2 or
//! scalar microkernels), with the views checked to lie inside their slices: shared by the
//! CPU's own convolution (`host_conv`) and attention (`host_attention`).

use gemm::Parallelism;

/// A read-only matrix view: element `(i, j)` at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    pub fn t(self) -> Self {
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
pub fn matmul(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool, par: Parallelism) {
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
