//! Which granted directories lie wholly on filesystems that answer from this machine, read
//! from `/proc/self/mountinfo`: the file service calls those inline and sends the others
//! (network, FUSE, unknown) to the blocking pool.

use std::path::{Path, PathBuf};

/// Filesystems served by this machine's kernel from a local device or memory: a call on
/// them returns in microseconds unless the disk itself fails. Everything else (NFS, SMB,
/// Ceph, 9p, FUSE, autofs, types this list does not know) may wait on a network.
#[rustfmt::skip]
const LOCAL: &[&str] = &[
    // disks
    "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs", "bcachefs", "jfs", "reiserfs",
    "nilfs2", "vfat", "msdos", "exfat", "ntfs", "ntfs3", "hfsplus", "udf", "iso9660",
    "squashfs", "erofs", "overlay",
    // memory
    "tmpfs", "ramfs", "devtmpfs",
    // kernel interfaces that may sit below a root such as `/`
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs", "tracefs",
    "securityfs", "pstore", "bpf", "hugetlbfs", "configfs", "efivarfs", "binfmt_misc",
    "fusectl", "nsfs", "selinuxfs", "rpc_pipefs",
];

/// One line of mountinfo: where a filesystem is mounted and its type.
#[derive(Debug, PartialEq)]
struct Mount {
    point: PathBuf,
    fs_type: String,
}

/// Whether `dir` and every filesystem mounted below it are local. Unknown (mountinfo
/// unreadable, the path not resolvable): no.
pub fn wholly_local(dir: &Path) -> bool {
    match (
        std::fs::canonicalize(dir),
        std::fs::read_to_string("/proc/self/mountinfo"),
    ) {
        (Ok(dir), Ok(table)) => local_in(&parse(&table), &dir),
        _ => false,
    }
}

/// `dir` (absolute, resolved) on `mounts`: the filesystem holding it (the longest mount
/// point above it) and every one mounted below it are local.
fn local_in(mounts: &[Mount], dir: &Path) -> bool {
    let holding = mounts
        .iter()
        .filter(|m| dir.starts_with(&m.point))
        .max_by_key(|m| m.point.components().count());
    let below = mounts.iter().filter(|m| m.point.starts_with(dir));
    holding.is_some()
        && holding
            .into_iter()
            .chain(below)
            .all(|m| is_local(&m.fs_type))
}

fn is_local(fs_type: &str) -> bool {
    LOCAL.contains(&fs_type)
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`:
/// the fifth field is the mount point (octal escapes for space, tab, newline and
/// backslash); the type follows the ` - ` separator after the optional fields.
fn parse(table: &str) -> Vec<Mount> {
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?;
            let separator = fields.iter().position(|f| *f == "-")?;
            Some(Mount {
                point: PathBuf::from(unescape(point)),
                fs_type: fields.get(separator + 1)?.to_string(),
            })
        })
        .collect()
}

fn unescape(field: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                out.push(
                    digits
                        .iter()
                        .fold(0u8, |n, d| n.wrapping_mul(8) + (d - b'0')),
                );
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
23 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw
30 22 0:26 / /srv rw shared:5 - xfs /dev/vdb1 rw
31 30 0:40 / /srv/remote rw,relatime shared:20 - fuse.sshfs backup@host:/ rw,user_id=0
32 22 0:41 / /mnt/nas\\040share rw shared:21 master:3 - nfs4 nas:/export rw,vers=4.2
33 22 0:42 / /home rw shared:22 - btrfs /dev/vdc rw
";

    fn verdict(dir: &str) -> bool {
        local_in(&parse(TABLE), Path::new(dir))
    }

    #[test]
    fn mount_points_and_types_are_read_with_escapes() {
        let mounts = parse(TABLE);
        assert_eq!(mounts.len(), 6);
        assert_eq!(
            mounts[4],
            Mount {
                point: PathBuf::from("/mnt/nas share"),
                fs_type: "nfs4".into()
            }
        );
        assert_eq!(mounts[3].fs_type, "fuse.sshfs");
    }

    #[test]
    fn a_root_is_local_only_when_nothing_below_it_is_remote() {
        assert!(verdict("/home/alice"));
        assert!(
            verdict("/srv/www"),
            "xfs, and the sshfs mount is not below it"
        );
        assert!(!verdict("/srv"), "an sshfs mount sits below /srv");
        assert!(!verdict("/srv/remote/data"), "inside the sshfs mount");
        assert!(!verdict("/mnt/nas share/x"), "on NFS");
        assert!(!verdict("/"), "NFS and sshfs are mounted below /");
        assert!(verdict("/proc/self"));
    }

    #[test]
    fn an_unresolvable_directory_is_not_called_local() {
        assert!(!wholly_local(Path::new("/no/such/directory/here")));
    }
}
