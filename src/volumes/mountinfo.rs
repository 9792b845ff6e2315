//! The mount table as `/proc/self/mountinfo` shows it: which mount points lie under a
//! directory, so a pod's directory is never removed across a mount the agent no longer
//! remembers making (a pod deleted while the agent was down).

use std::path::{Path, PathBuf};

/// The mount table of the agent's mount namespace.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of the mount table (the fields the agent uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    /// Where it is mounted (absolute, as the kernel spells it: no symlinks).
    pub path: PathBuf,
    /// The filesystem type (`tmpfs`, `ext4`, ...).
    pub fs_type: String,
}

/// Reads the agent's mount table.
pub fn read() -> std::io::Result<Vec<MountPoint>> {
    Ok(parse(&std::fs::read_to_string(MOUNTINFO)?))
}

/// Parses mountinfo text (see proc(5)): `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS
/// [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`. Lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<MountPoint> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountPoint> {
    let (left, right) = line.split_once(" - ")?;
    let mount_point = left.split(' ').nth(4)?;
    let fs_type = right.split(' ').next().filter(|t| !t.is_empty())?;
    Some(MountPoint { path: PathBuf::from(unescape(mount_point)), fs_type: unescape(fs_type) })
}

/// The kernel writes space, tab, newline and backslash in paths as `\040`, `\011`, `\012`
/// and `\134` (three octal digits).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points at or below `dir` (absolute, canonical), deepest first: the order they
/// must be unmounted in.
pub fn below(table: &[MountPoint], dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> =
        table.iter().filter(|m| m.path.starts_with(dir)).map(|m| m.path.clone()).collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
25 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
90 22 0:45 / /var/lib/kw/pods/u1/volumes/token rw,nosuid,nodev,noexec,relatime shared:50 - tmpfs tmpfs rw,size=65536k,mode=700
91 22 0:46 / /var/lib/kw/pods/u1/volumes/with\\040space rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,size=4k,mode=700
92 90 0:47 / /var/lib/kw/pods/u1/volumes/token/inner rw,relatime - tmpfs tmpfs rw
93 22 0:48 / /var/lib/kw/pods/u10/volumes/x rw,relatime - tmpfs tmpfs rw
not a mountinfo line
";

    #[test]
    fn fields_and_escapes_are_read() {
        let table = parse(SAMPLE);
        assert_eq!(table.len(), 6, "the malformed line is skipped");
        assert_eq!(table[0], MountPoint { path: "/".into(), fs_type: "ext4".into() });
        assert_eq!(table[2].path, Path::new("/var/lib/kw/pods/u1/volumes/token"));
        assert_eq!(table[2].fs_type, "tmpfs");
        assert_eq!(table[3].path, Path::new("/var/lib/kw/pods/u1/volumes/with space"));
        assert_eq!(unescape("a\\011b\\012c\\134d\\0"), "a\tb\nc\\d\\0");
    }

    #[test]
    fn mounts_below_a_directory_come_deepest_first_and_only_below_it() {
        let table = parse(SAMPLE);
        let found = below(&table, Path::new("/var/lib/kw/pods/u1"));
        assert_eq!(
            found,
            [
                PathBuf::from("/var/lib/kw/pods/u1/volumes/token/inner"),
                PathBuf::from("/var/lib/kw/pods/u1/volumes/token"),
                PathBuf::from("/var/lib/kw/pods/u1/volumes/with space"),
            ],
            "u10 is not below u1"
        );
        assert!(below(&table, Path::new("/var/lib/kw/pods/u2")).is_empty());
    }

    #[test]
    fn the_live_table_parses() {
        let table = read().expect("mountinfo is readable");
        assert!(table.iter().any(|m| m.path == Path::new("/")), "the root is mounted: {table:?}");
        assert!(table.iter().any(|m| m.fs_type == "proc"), "{table:?}");
    }
}
