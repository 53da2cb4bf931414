//! Tests of atomic files, the output lock and the recovery of a torn publish.

use std::os::unix::fs::FileTypeExt;

use super::*;

/// A PID no process has: above the kernel's limit (`pid_max` is at most 2^22).
const GONE: u32 = 4_194_400;

fn checkpoint(dir: &Path, step: u32) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("state.json"), format!("{{\"step\":{step}}}")).unwrap();
}

/// An export `--out` naming a FIFO, a symlink or a folder used to replace it with a regular
/// file (rc 0); now it is refused and left as it was.
#[test]
fn atomic_writes_refuse_to_replace_special_files_and_symlinks() {
    let dir = std::env::temp_dir().join(format!("cass-atomic-special-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let target = dir.join("target");
    fs::write(&target, b"keep").unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let sub = dir.join("sub");
    fs::create_dir_all(&sub).unwrap();
    for p in [&fifo, &link, &sub] {
        assert_eq!(
            write_atomic(p, b"new").unwrap_err().code(),
            "not-a-file",
            "{}",
            p.display()
        );
    }
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(fs::read(&target).unwrap(), b"keep");
    write_atomic(&target, b"replaced").unwrap(); // a regular file may be replaced
    assert_eq!(fs::read(&target).unwrap(), b"replaced");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn atomic_writes_remove_temporary_files_of_killed_writers() {
    let dir = std::env::temp_dir().join(format!("cass-atomic-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let target = dir.join("out.safetensors");
    let stale = dir.join(format!(".out.safetensors.tmp-{GONE}"));
    let live = dir.join(format!(".out.safetensors.tmp-{}", std::process::id()));
    fs::write(&stale, b"half").unwrap();
    fs::write(dir.join(".other.tmp-1"), b"not ours").unwrap();
    write_atomic(&target, b"whole").unwrap();
    assert_eq!(fs::read(&target).unwrap(), b"whole");
    assert!(!stale.exists());
    assert!(!live.exists(), "its own temporary file was renamed");
    assert!(
        dir.join(".other.tmp-1").exists(),
        "another file's temporaries are not touched"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_job_per_output_folder_and_a_dead_holder_is_taken_over() {
    let dir = std::env::temp_dir().join(format!("cass-lock-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let held = OutputLock::acquire(&dir).unwrap();
    let e = OutputLock::acquire(&dir).unwrap_err();
    assert_eq!(e.code(), "output-in-use");
    assert!(e.to_string().contains(&std::process::id().to_string()), "{e}");
    drop(held);
    assert!(!dir.join(".lock").exists());
    // A lock file left by a killed job, and one naming a live process that holds no lock
    // (PID 1 always runs: a reused PID, or this container's own after a restart). Both
    // used to be judged by the number; neither holds the OS lock, so both are taken over.
    for left in [GONE, 1] {
        fs::write(dir.join(".lock"), left.to_string()).unwrap();
        let taken = OutputLock::acquire(&dir).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join(".lock")).unwrap(),
            std::process::id().to_string()
        );
        drop(taken);
    }
    fs::remove_dir_all(&dir).unwrap();
}

/// Another process holding the folder's lock keeps it, whatever its lock file says.
#[test]
fn a_lock_held_by_another_process_is_respected() {
    let dir = std::env::temp_dir().join(format!("cass-lock-other-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(".lock"), GONE.to_string()).unwrap();
    // `-o`: the lock stays with flock itself, not its `sleep`, so killing flock frees it.
    let mut other = std::process::Command::new("flock")
        .arg("-o")
        .arg(dir.join(".lock"))
        .args(["sleep", "30"])
        .spawn()
        .expect("util-linux flock");
    // Wait until it holds the lock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let f = fs::File::open(dir.join(".lock")).unwrap();
        if f.try_lock().is_err() {
            break;
        }
        drop(f);
        assert!(std::time::Instant::now() < deadline, "flock never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(OutputLock::acquire(&dir).unwrap_err().code(), "output-in-use");
    assert_eq!(OutputLock::check_free(&dir).unwrap_err().code(), "output-in-use");
    other.kill().unwrap();
    other.wait().unwrap();
    // Freed once its holder is gone. Under a loaded parallel `cargo test` the lock was twice
    // still seen right after `wait` (2 full runs in 5): poll, as the start of the test does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while OutputLock::check_free(&dir).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock outlived its holder by 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(OutputLock::acquire(&dir).unwrap());
    OutputLock::check_free(&dir).unwrap();
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_writer_killed_between_the_two_renames_leaves_its_previous_checkpoint_restorable() {
    let root = std::env::temp_dir().join(format!("cass-recover-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let ck = root.join("checkpoint");
    // Killed after moving the old checkpoint aside, before publishing the new one.
    checkpoint(&root.join(format!("checkpoint.old-{GONE}")), 7);
    checkpoint(&root.join(format!(".checkpoint.partial-{GONE}")), 8);
    // A live writer's staging folder (this process) is not touched.
    let mine = root.join(format!(".checkpoint.partial-{}", std::process::id()));
    checkpoint(&mine, 9);
    recover(&ck).unwrap();
    assert_eq!(fs::read_to_string(ck.join("state.json")).unwrap(), r#"{"step":7}"#);
    assert!(!root.join(format!(".checkpoint.partial-{GONE}")).exists());
    assert!(!root.join(format!("checkpoint.old-{GONE}")).exists());
    assert!(mine.exists());

    // With a complete checkpoint in place, a leftover old copy is only removed.
    checkpoint(&root.join(format!("checkpoint.old-{GONE}")), 3);
    recover(&ck).unwrap();
    assert_eq!(fs::read_to_string(ck.join("state.json")).unwrap(), r#"{"step":7}"#);
    assert!(!root.join(format!("checkpoint.old-{GONE}")).exists());

    // A corrupt checkpoint in place does not cost the good old copy (it used to be deleted):
    // the good one is restored, the corrupt one kept aside.
    fs::write(ck.join("state.json"), "{ torn").unwrap();
    checkpoint(&root.join(format!("checkpoint.old-{GONE}")), 5);
    recover(&ck).unwrap();
    assert_eq!(fs::read_to_string(ck.join("state.json")).unwrap(), r#"{"step":5}"#);
    let aside = root.join(format!("checkpoint.corrupt-{}", std::process::id()));
    assert_eq!(fs::read_to_string(aside.join("state.json")).unwrap(), "{ torn");
    fs::remove_dir_all(&root).unwrap();
}
