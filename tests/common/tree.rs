//! Generated file trees for backup tests, and an exact comparison of two trees.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use super::Prng;

/// Builds the tree the issue asks for under `root`: nested and empty directories, relative
/// and absolute symlinks, hard links, modes 0600/0755/4755/1777, unicode and non-UTF-8
/// names, a 0-byte file, `big` bytes in one file and `small` small files.
pub fn generate(root: &Path, big: u64, small: usize) {
    let mut prng = Prng::new(42);
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir_all(root.join("empty/inner-empty")).unwrap();
    std::fs::write(root.join("a/b/c/deep.txt"), prng.mixed(5000)).unwrap();
    std::fs::write(root.join("zero-bytes"), b"").unwrap();
    std::fs::write(root.join("ünïcødé ✓.txt"), "unicode name\n").unwrap();
    std::fs::write(
        root.join(OsStr::from_bytes(b"latin1-\xe9t\xe9.bin")),
        b"not utf-8 name",
    )
    .unwrap();
    for (name, mode) in [
        ("private", 0o600),
        ("script.sh", 0o755),
        ("setuid-tool", 0o4755),
    ] {
        let path = root.join(name);
        std::fs::write(&path, format!("{name}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::create_dir(root.join("shared-tmp")).unwrap();
    std::fs::set_permissions(
        root.join("shared-tmp"),
        std::fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
    symlink("a/b/c/deep.txt", root.join("relative-link")).unwrap();
    symlink("/etc/hostname", root.join("absolute-link")).unwrap();
    symlink("does/not/exist", root.join("dangling-link")).unwrap();
    std::fs::write(root.join("a/original"), b"hard linked content").unwrap();
    std::fs::hard_link(root.join("a/original"), root.join("a/b/second-name")).unwrap();
    std::fs::hard_link(root.join("a/original"), root.join("third-name")).unwrap();
    if small > 0 {
        let dir = root.join("many");
        std::fs::create_dir(&dir).unwrap();
        for i in 0..small {
            let sub = dir.join(format!("{:03}", i % 100));
            if i < 100 {
                std::fs::create_dir(&sub).unwrap();
            }
            std::fs::write(
                sub.join(format!("file-{i:05}.txt")),
                format!("small file {i}\n").repeat(1 + i % 7),
            )
            .unwrap();
        }
    }
    if big > 0 {
        let mut file =
            std::io::BufWriter::new(std::fs::File::create(root.join("big.bin")).unwrap());
        let mut chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        while written < big {
            let n = (big - written).min(chunk.len() as u64) as usize;
            prng.fill(&mut chunk[..n]);
            if (written >> 20) % 3 == 0 {
                chunk[..n / 2].fill(b'z');
            }
            std::io::Write::write_all(&mut file, &chunk[..n]).unwrap();
            written += n as u64;
        }
    }
    // Distinct mtimes (with nanoseconds) everywhere, directories last so writes don't bump them.
    let mut paths = Vec::new();
    walk(root, &mut |p| paths.push(p.to_path_buf()));
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, path) in paths.iter().enumerate() {
        let time = libc_timespec(
            1_600_000_000 + i as i64 * 3671,
            (i as i64 * 7919) % 1_000_000_000,
        );
        set_times(path, time);
    }
}

fn libc_timespec(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

fn set_times(path: &Path, time: libc::timespec) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let times = [time, time];
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

fn walk(dir: &Path, each: &mut dyn FnMut(&Path)) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        each(&path);
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            walk(&path, each);
        }
    }
}

/// What a tree holds, path by path: kind, mode, owner, mtime, content digest or link target,
/// and which paths share an inode.
pub fn describe(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut entries = BTreeMap::new();
    let mut inodes: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut paths = Vec::new();
    walk(root, &mut |p| paths.push(p.to_path_buf()));
    paths.sort();
    for path in paths {
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let kind = if meta.file_type().is_symlink() {
            format!("link -> {}", std::fs::read_link(&path).unwrap().display())
        } else if meta.is_dir() {
            "dir".to_string()
        } else {
            let digest = blake3::hash(&std::fs::read(&path).unwrap())
                .to_hex()
                .to_string();
            let link = if meta.nlink() > 1 {
                let first = inodes.entry(meta.ino()).or_insert_with(|| rel.clone());
                format!(" hardlink-group={}", first.display())
            } else {
                String::new()
            };
            format!("file {} bytes {digest}{link}", meta.len())
        };
        let mode = if meta.file_type().is_symlink() {
            String::new()
        } else {
            format!(" mode={:o}", meta.mode() & 0o7777)
        };
        entries.insert(
            rel,
            format!(
                "{kind}{mode} uid={} gid={} mtime={}.{:09}",
                meta.uid(),
                meta.gid(),
                meta.mtime(),
                meta.mtime_nsec()
            ),
        );
    }
    entries
}

/// Asserts two trees are identical, listing the first differences.
pub fn assert_same(original: &Path, restored: &Path) {
    let (a, b) = (describe(original), describe(restored));
    let mut differences = Vec::new();
    for (path, left) in &a {
        match b.get(path) {
            None => differences.push(format!("missing: {}", path.display())),
            Some(right) if right != left => differences.push(format!(
                "{}:\n   original {left}\n   restored {right}",
                path.display()
            )),
            _ => {}
        }
    }
    for path in b.keys().filter(|p| !a.contains_key(*p)) {
        differences.push(format!("extra: {}", path.display()));
    }
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
