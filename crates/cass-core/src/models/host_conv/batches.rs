//! How a convolution's batch is spread over the threads, shared by the unfolding (`kernel.rs`)
//! and Winograd's transforms (`winograd/`): in the forward pass groups of images, each its
//! own products; in the backward pass one contiguous run of images per thread, so that each
//! thread sums its own weight gradient and the runs' sums are added once at the end.

use gemm::Parallelism;
use rayon::prelude::*;

/// How the work of a batch is split over the threads: by images (`true`, each product on one
/// thread) when there are at least as many images as threads, across each product otherwise
/// (a single image, at prediction time).
pub fn split(batch: usize) -> (bool, Parallelism) {
    let threads = rayon::current_num_threads();
    if batch >= threads || threads == 1 {
        (true, Parallelism::None)
    } else {
        (false, Parallelism::Rayon(threads))
    }
}

/// Calls `one(buffers, (index, (outputs, inputs)))` for each group of `group` images: their
/// outputs (`out_image` values each) and inputs (`image` values each); the groups in parallel
/// with per-task buffers from `init`, or in order.
pub fn over_groups<B, I, F>(
    (y, out_image): (&mut [f32], usize),
    (x, image): (&[f32], usize),
    (group, parallel): (usize, bool),
    init: I,
    one: F,
) where
    I: Fn() -> B + Sync + Send,
    F: Fn(&mut B, (usize, (&mut [f32], &[f32]))) + Sync + Send,
{
    if parallel {
        y.par_chunks_mut(group * out_image)
            .zip(x.par_chunks(group * image))
            .enumerate()
            .for_each_init(init, one);
    } else {
        let mut buffers = init();
        let groups = y.chunks_mut(group * out_image).zip(x.chunks(group * image));
        groups.enumerate().for_each(|pair| one(&mut buffers, pair));
    }
}

/// The backward pass's runs: images per run, and each run's part of the input gradient (`None`
/// where it is not asked for).
pub fn runs(batch: usize, image: usize, parallel: bool, dx: Option<&mut Vec<f32>>) -> (usize, Vec<Option<&mut [f32]>>) {
    let tasks = if parallel {
        rayon::current_num_threads().min(batch)
    } else {
        1
    };
    let run = batch.div_ceil(tasks.max(1)).max(1);
    let parts = match dx {
        Some(dx) => dx.chunks_mut(run * image).map(Some).collect(),
        None => (0..batch.div_ceil(run)).map(|_| None).collect(),
    };
    (run, parts)
}

/// Calls `work((index, input gradient part))` on every run, in parallel or in order, and adds
/// up the weight-gradient sums (`len` values each) the runs return, where `want`.
pub fn sum_over_runs<F>(
    parts: &mut [Option<&mut [f32]>],
    parallel: bool,
    (want, len): (bool, usize),
    work: F,
) -> Option<Vec<f32>>
where
    F: Fn((usize, &mut Option<&mut [f32]>)) -> Option<Vec<f32>> + Sync + Send,
{
    let sums: Vec<Option<Vec<f32>>> = if parallel {
        parts.par_iter_mut().enumerate().map(work).collect()
    } else {
        parts.iter_mut().enumerate().map(work).collect()
    };
    want.then(|| {
        let mut sums = sums.into_iter().flatten();
        let mut total = sums.next().unwrap_or_else(|| vec![0f32; len]);
        for s in sums {
            total.iter_mut().zip(&s).for_each(|(t, s)| *t += s);
        }
        total
    })
}
