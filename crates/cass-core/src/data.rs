//! Images reach the engine decoded, as uint8 RGB of one fixed size: either in memory or in a
//! dataset cache file (written by the TypeScript pipeline) that is memory-mapped here. Batches
//! are assembled on a prefetch thread, so the training thread never waits on the host for data.
//!
//! Cache file layout (little endian):
//! ```text
//! 0   magic  b"CASSDS01"
//! 8   u32    format version (1)
//! 12  u32    number of images n
//! 16  u32    height
//! 20  u32    width
//! 24  u32    channels (3)
//! 28  u32    reserved (0)
//! 32  u64    byte offset of the index (JSON)
//! 40  u64    byte length of the index
//! 48  ..64   zero padding
//! 64  n * height * width * channels bytes, images back to back, HWC, row-major
//! ..  index: JSON {"names": [..], "labels": [..]} (either may be absent)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use memmap2::Mmap;
use serde::Deserialize;

use crate::error::CassError;

pub const CACHE_MAGIC: &[u8; 8] = b"CASSDS01";
pub const CACHE_VERSION: u32 = 1;
pub const CACHE_HEADER_LEN: usize = 64;

enum Storage {
    Memory(Vec<u8>),
    Mapped(Mmap),
}

/// The optional index stored at the end of a cache file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CacheIndex {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub labels: Vec<i64>,
}

/// A set of decoded images of one size.
pub struct ImageSet {
    storage: Storage,
    offset: usize,
    pub len: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub index: CacheIndex,
    pub source: Option<PathBuf>,
}

impl std::fmt::Debug for ImageSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ImageSet({} x {}x{}x{})",
            self.len, self.height, self.width, self.channels
        )
    }
}

impl ImageSet {
    /// Images given in memory, `[n, height, width, 3]` uint8.
    pub fn from_memory(bytes: Vec<u8>, len: usize, height: usize, width: usize) -> Result<Self, CassError> {
        let want = len * height * width * 3;
        if len == 0 || height == 0 || width == 0 {
            return Err(CassError::config(
                "data",
                "an image set needs at least one image of non-zero size",
            ));
        }
        if bytes.len() != want {
            return Err(CassError::config(
                "data.images",
                format!(
                    "expected {len} x {height} x {width} x 3 = {want} bytes, got {}",
                    bytes.len()
                ),
            ));
        }
        Ok(Self {
            storage: Storage::Memory(bytes),
            offset: 0,
            len,
            height,
            width,
            channels: 3,
            index: CacheIndex::default(),
            source: None,
        })
    }

    /// Opens (memory-maps) a dataset cache file, checking its header and size.
    pub fn open_cache(path: &Path) -> Result<Self, CassError> {
        let (file, _) = crate::checkpoint::open_regular(path)?;
        // SAFETY: the cache is written once by the pipeline and only read here; a concurrent
        // truncation by another process would be a misuse we cannot guard against with mmap.
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(|e| CassError::io(path, e))?;
        let bad = |msg: String| CassError::data("bad-cache", msg, Some(path));
        if map.len() < CACHE_HEADER_LEN || &map[0..8] != CACHE_MAGIC {
            return Err(bad("not a cass dataset cache (bad magic)".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(map[o..o + 4].try_into().expect("4 bytes")) as usize;
        let u64_at = |o: usize| u64::from_le_bytes(map[o..o + 8].try_into().expect("8 bytes")) as usize;
        let version = u32_at(8);
        if version != CACHE_VERSION as usize {
            return Err(bad(format!(
                "cache format version {version}, this engine reads {CACHE_VERSION}"
            )));
        }
        let (len, height, width, channels) = (u32_at(12), u32_at(16), u32_at(20), u32_at(24));
        if channels != 3 || height == 0 || width == 0 {
            return Err(bad(format!("unsupported image geometry {height}x{width}x{channels}")));
        }
        // Sizes from the header are checked arithmetic: a crafted header (2^21 x 2^21 images,
        // an index past the end) is a clear error, not an overflow.
        let pixels_end = len
            .checked_mul(height)
            .and_then(|v| v.checked_mul(width))
            .and_then(|v| v.checked_mul(channels))
            .and_then(|v| v.checked_add(CACHE_HEADER_LEN))
            .ok_or_else(|| bad(format!("header sizes overflow: {len} images of {height}x{width}")))?;
        let (index_offset, index_len) = (u64_at(32), u64_at(40));
        let index_end = index_offset
            .checked_add(index_len)
            .ok_or_else(|| bad(format!("index at {index_offset} of {index_len} bytes overflows")))?;
        if map.len() < pixels_end || (index_len > 0 && index_end > map.len()) {
            return Err(bad(format!(
                "truncated: {} bytes, header promises {} images of {height}x{width}",
                map.len(),
                len
            )));
        }
        let index = if index_len > 0 {
            serde_json::from_slice(&map[index_offset..index_offset + index_len])
                .map_err(|e| bad(format!("unreadable index: {e}")))?
        } else {
            CacheIndex::default()
        };
        Ok(Self {
            storage: Storage::Mapped(map),
            offset: CACHE_HEADER_LEN,
            len,
            height,
            width,
            channels,
            index,
            source: Some(path.to_path_buf()),
        })
    }

    /// Bytes of one image (HWC).
    pub fn image(&self, i: usize) -> &[u8] {
        let size = self.height * self.width * self.channels;
        let bytes: &[u8] = match &self.storage {
            Storage::Memory(v) => v,
            Storage::Mapped(m) => m,
        };
        let start = self.offset + i * size;
        &bytes[start..start + size]
    }

    /// Checks that sample indices are in range, naming the first bad one.
    pub fn check_indices(&self, indices: &[usize], field: &str) -> Result<(), CassError> {
        if let Some((pos, &i)) = indices.iter().enumerate().find(|(_, i)| **i >= self.len) {
            return Err(CassError::config(
                format!("{field}[{pos}]"),
                format!("image index {i} is out of range (the set has {} images)", self.len),
            ));
        }
        Ok(())
    }

    /// Writes the images as a cache file (used by tests and benchmarks; the TS pipeline
    /// writes the same format).
    pub fn write_cache(
        path: &Path,
        images: &[u8],
        len: usize,
        height: usize,
        width: usize,
        index_json: &[u8],
    ) -> Result<(), CassError> {
        let mut out = Vec::with_capacity(CACHE_HEADER_LEN + images.len() + index_json.len());
        out.extend_from_slice(CACHE_MAGIC);
        for v in [CACHE_VERSION, len as u32, height as u32, width as u32, 3, 0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let index_offset = (CACHE_HEADER_LEN + images.len()) as u64;
        out.extend_from_slice(&index_offset.to_le_bytes());
        out.extend_from_slice(&(index_json.len() as u64).to_le_bytes());
        out.resize(CACHE_HEADER_LEN, 0);
        out.extend_from_slice(images);
        out.extend_from_slice(index_json);
        crate::checkpoint::write_atomic(path, &out)
    }
}

/// One batch on the host: `[batch, 3, height, width]` floats in [0, 1] (CHW), plus labels.
pub struct HostBatch {
    pub pixels: Vec<f32>,
    pub labels: Vec<i64>,
    pub size: usize,
}

/// Converts the chosen images to a CHW float batch.
pub fn assemble(set: &ImageSet, indices: &[usize], labels: Option<&[i64]>) -> HostBatch {
    let (h, w) = (set.height, set.width);
    let plane = h * w;
    let mut pixels = vec![0f32; indices.len() * 3 * plane];
    for (b, &i) in indices.iter().enumerate() {
        let img = set.image(i);
        let dst = &mut pixels[b * 3 * plane..(b + 1) * 3 * plane];
        for p in 0..plane {
            for c in 0..3 {
                dst[c * plane + p] = img[p * 3 + c] as f32 * (1.0 / 255.0);
            }
        }
    }
    HostBatch {
        pixels,
        labels: labels.map(|l| l.to_vec()).unwrap_or_default(),
        size: indices.len(),
    }
}

/// Uploads a host batch as `[batch, 3, h, w]`.
pub fn upload(batch: &HostBatch, set: &ImageSet, device: &burn::prelude::Device) -> burn::prelude::Tensor<4> {
    burn::prelude::Tensor::from_data(
        burn::tensor::TensorData::new(batch.pixels.clone(), [batch.size, 3, set.height, set.width]),
        device,
    )
}

/// A prefetch thread yielding batches of `batches` (lists of sample positions) in order.
pub struct Prefetcher {
    rx: Receiver<HostBatch>,
    handle: Option<JoinHandle<()>>,
}

impl Prefetcher {
    /// `samples[k]` is an image index, `labels[k]` its label (if any); `batches` lists positions
    /// into `samples`. Keeps `depth` batches ready ahead of the consumer.
    pub fn spawn(
        set: Arc<ImageSet>,
        samples: Arc<Vec<usize>>,
        labels: Option<Arc<Vec<i64>>>,
        batches: Vec<Vec<usize>>,
        depth: usize,
    ) -> Self {
        let (tx, rx) = sync_channel(depth.max(1));
        let handle = std::thread::Builder::new()
            .name("cass-prefetch".into())
            .spawn(move || {
                for positions in batches {
                    let idx: Vec<usize> = positions.iter().map(|&p| samples[p]).collect();
                    let lab: Option<Vec<i64>> = labels.as_ref().map(|l| positions.iter().map(|&p| l[p]).collect());
                    let batch = assemble(&set, &idx, lab.as_deref());
                    if tx.send(batch).is_err() {
                        return; // consumer stopped (cancel or error)
                    }
                }
            })
            .expect("spawn prefetch thread");
        Self {
            rx,
            handle: Some(handle),
        }
    }
}

impl Iterator for Prefetcher {
    type Item = HostBatch;
    fn next(&mut self) -> Option<HostBatch> {
        self.rx.recv().ok()
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        // Dropping the receiver first makes a blocked sender return, so the join cannot hang.
        let (_tx, rx) = sync_channel(0);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Splits `0..n` (already permuted) into batches of `batch` positions; `drop_last` drops a final
/// short batch.
pub fn batch_positions(n: usize, batch: usize, drop_last: bool) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = (0..n).collect::<Vec<_>>().chunks(batch).map(|c| c.to_vec()).collect();
    if drop_last && out.last().is_some_and(|b| b.len() < batch) {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crafted_cache_header_with_huge_sizes_is_an_error_not_an_overflow() {
        let dir = std::env::temp_dir().join(format!("cass-cache-crafted-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.cache");
        ImageSet::write_cache(&good, &[7u8; 2 * 4 * 4 * 3], 2, 4, 4, b"{}").unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let craft = |name: &str, edit: &dyn Fn(&mut Vec<u8>)| {
            let mut b = bytes.clone();
            edit(&mut b);
            let p = dir.join(name);
            std::fs::write(&p, b).unwrap();
            ImageSet::open_cache(&p).unwrap_err()
        };
        // height = width = 2^21 and 2^32 - 1 images: the product overflows 64 bits.
        let e = craft("huge.cache", &|b| {
            b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
            b[16..20].copy_from_slice(&(1u32 << 21).to_le_bytes());
            b[20..24].copy_from_slice(&(1u32 << 21).to_le_bytes());
        });
        assert_eq!(e.code(), "bad-cache");
        assert!(
            e.to_string().contains("overflow") || e.to_string().contains("truncated"),
            "{e}"
        );
        // An index whose end overflows.
        let e = craft("index.cache", &|b| {
            b[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
            b[40..48].copy_from_slice(&16u64.to_le_bytes());
        });
        assert_eq!(e.code(), "bad-cache");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cache_round_trip_and_truncation_is_reported() {
        let dir = std::env::temp_dir().join(format!("cass-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("set.cassds");
        let images: Vec<u8> = (0..2 * 4 * 4 * 3).map(|i| i as u8).collect();
        ImageSet::write_cache(&path, &images, 2, 4, 4, br#"{"labels":[0,1]}"#).unwrap();
        let set = ImageSet::open_cache(&path).unwrap();
        assert_eq!((set.len, set.height, set.width), (2, 4, 4));
        assert_eq!(set.image(1), &images[48..96]);
        assert_eq!(set.index.labels, vec![0, 1]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..100]).unwrap();
        let err = ImageSet::open_cache(&path).unwrap_err();
        assert_eq!(err.code(), "bad-cache");
        assert!(err.to_string().contains("truncated"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn prefetcher_yields_batches_in_order_as_chw() {
        let images: Vec<u8> = (0..3 * 2 * 2 * 3).map(|i| i as u8).collect();
        let set = Arc::new(ImageSet::from_memory(images, 3, 2, 2).unwrap());
        let batches = batch_positions(3, 2, false);
        let got: Vec<HostBatch> =
            Prefetcher::spawn(set, Arc::new(vec![2, 0, 1]), Some(Arc::new(vec![7, 8, 9])), batches, 2).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].labels, vec![7, 8]);
        // image 2 starts at byte 24; channel 0 of its first pixel is 24, channel 1 is 25.
        assert!((got[0].pixels[0] - 24.0 / 255.0).abs() < 1e-7);
        assert!((got[0].pixels[4] - 25.0 / 255.0).abs() < 1e-7);
        assert_eq!(got[1].size, 1);
    }
}
