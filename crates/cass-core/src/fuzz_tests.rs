//! Random bytes and random mutations of valid files thrown at the engine's readers (the dataset
//! cache, safetensors weights, `state.json`): each must return a value or an error naming the
//! problem, never panic, and never allocate more than the file's claims allow. Seeded, and bounded
//! in time, so it runs in every `cargo test`.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::{Checkpoint, read_safetensors};
use crate::data::ImageSet;

/// One random change: flip bytes, cut the end, or insert random bytes.
fn mutate(rng: &mut ChaCha8Rng, valid: &[u8]) -> Vec<u8> {
    let mut b = valid.to_vec();
    match rng.random_range(0..4) {
        0 => {
            for _ in 0..rng.random_range(1..8) {
                if !b.is_empty() {
                    let i = rng.random_range(0..b.len());
                    b[i] = rng.random();
                }
            }
        }
        1 => b.truncate(rng.random_range(0..=b.len())),
        2 => {
            let at = rng.random_range(0..=b.len());
            let junk: Vec<u8> = (0..rng.random_range(1..64)).map(|_| rng.random()).collect();
            b.splice(at..at, junk);
        }
        _ => b = (0..rng.random_range(0..256)).map(|_| rng.random()).collect(),
    }
    b
}

/// Feeds mutations of `valid` to `read` for `budget`, in `dir/name`; returns how many it tried.
fn fuzz<T, E: std::fmt::Display>(
    dir: &Path,
    name: &str,
    valid: &[u8],
    budget: Duration,
    read: impl Fn(&Path) -> Result<T, E>,
) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(name.len() as u64 * 7919);
    let file = dir.join(name);
    let started = Instant::now();
    let mut tried = 0;
    while started.elapsed() < budget {
        let bytes = mutate(&mut rng, valid);
        std::fs::write(&file, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&file)));
        match outcome {
            Err(_) => panic!(
                "{name}: the reader panicked on {} bytes: {:?}",
                bytes.len(),
                &bytes[..bytes.len().min(64)]
            ),
            Ok(Err(e)) => assert!(!e.to_string().is_empty(), "{name}: an empty error"),
            Ok(Ok(_)) => {}
        }
        tried += 1;
    }
    tried
}

#[test]
fn readers_survive_random_and_mutated_files() {
    let dir = std::env::temp_dir().join(format!("cass-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let budget = Duration::from_millis(700);

    let cache = dir.join("valid.cassds");
    ImageSet::write_cache(
        &cache,
        &[3u8; 4 * 6 * 6 * 3],
        4,
        6,
        6,
        br#"{"names":["a","b","c","d"]}"#,
    )
    .unwrap();
    let n = fuzz(&dir, "cache.cassds", &std::fs::read(&cache).unwrap(), budget, |p| {
        ImageSet::open_cache(p).map(|s| {
            // A cache that opens must serve every image it claims.
            for i in 0..s.len {
                assert_eq!(s.image(i).len(), 6 * 6 * 3);
            }
        })
    });
    assert!(n > 50, "only {n} cache cases");

    let weights = dir.join("valid.safetensors");
    let tensors = [(
        "a.weight".to_string(),
        crate::checkpoint::HostTensor {
            shape: vec![3, 2],
            data: vec![1.0; 6],
        },
    )]
    .into_iter()
    .collect();
    crate::checkpoint::write_atomic(&weights, &crate::checkpoint::safetensors_bytes(&tensors, &[], None)).unwrap();
    let n = fuzz(
        &dir,
        "w.safetensors",
        &std::fs::read(&weights).unwrap(),
        budget,
        read_safetensors,
    );
    assert!(n > 50, "only {n} safetensors cases");

    let ck = dir.join("checkpoint");
    std::fs::create_dir_all(&ck).unwrap();
    let state = br#"{"kind":"cass-pretrain","config":{"image_size":32},"step":3,"completed":false}"#;
    let n = fuzz(&ck, "state.json", state, budget, |_| Checkpoint::open(&dir));
    assert!(n > 50, "only {n} state.json cases");
    std::fs::remove_dir_all(&dir).unwrap();
}
