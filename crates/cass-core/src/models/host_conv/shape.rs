//! The shape of one convolution, shared by the kernels and the wide unfolding.

/// The shape of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Geometry {
    /// Output height and width; `None` when the padded input is smaller than the kernel or a
    /// size is zero.
    pub fn out(&self) -> Option<(usize, usize)> {
        let (h, w) = (self.h + 2 * self.pad, self.w + 2 * self.pad);
        if self.k == 0 || self.stride == 0 || h < self.k || w < self.k {
            return None;
        }
        Some(((h - self.k) / self.stride + 1, (w - self.k) / self.stride + 1))
    }

    pub fn positions(&self) -> usize {
        let (ho, wo) = self.out().expect("a valid geometry");
        ho * wo
    }

    pub fn patch(&self) -> usize {
        self.c_in * self.k * self.k
    }

    pub fn image(&self) -> usize {
        self.c_in * self.h * self.w
    }

    /// Whether the unfolded image is the image itself.
    pub fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }

    pub fn input_len(&self) -> usize {
        self.batch * self.image()
    }

    pub fn weight_len(&self) -> usize {
        self.c_out * self.patch()
    }

    pub fn output_len(&self) -> usize {
        self.batch * self.c_out * self.positions()
    }
}
