//! Unit tests of `--eviction-hard` parsing and evaluation.

use super::*;

fn usage() -> Usage {
    Usage {
        memory_available_bytes: 8 << 30,
        memory_total_bytes: 16 << 30,
        disk_total_bytes: 252 << 30,
        disk_available_bytes: 24 << 30,
        inodes_total: 1_000_000,
        inodes_free: 900_000,
        pids_in_use: 300,
        pid_max: 4_194_304,
    }
}

#[test]
fn the_kubelets_syntax_is_read() {
    let t = parse("memory.available<100Mi, nodefs.available<10%,pid.available<1000,imagefs.inodesFree<5%")
        .unwrap();
    assert_eq!(
        t.0,
        vec![
            Threshold { signal: Signal::MemoryAvailable, below: Amount::Quantity(100 << 20) },
            Threshold { signal: Signal::NodefsAvailable, below: Amount::Percent(10.0) },
            Threshold { signal: Signal::PidAvailable, below: Amount::Quantity(1000) },
            Threshold { signal: Signal::ImagefsInodesFree, below: Amount::Percent(5.0) },
        ]
    );
    assert_eq!(parse("").unwrap(), Thresholds::default());
    // A signal given twice: the last one counts.
    assert_eq!(parse("nodefs.available<1Gi,nodefs.available<2Gi").unwrap().0.len(), 1);
    let default = parse(crate::config::DEFAULT_EVICTION_HARD).unwrap();
    assert_eq!(default.0.len(), 4);
}

#[test]
fn mistakes_are_named() {
    assert!(parse("nodefs.avail<1Gi").unwrap_err().contains("unknown signal \"nodefs.avail\""));
    assert!(parse("memory.available=1Gi").unwrap_err().contains("signal<amount"));
    assert!(parse("memory.available<lots").unwrap_err().contains("\"lots\" is not a quantity"));
    assert!(parse("memory.available<120%").unwrap_err().contains("percentage"));
}

#[test]
fn a_big_disk_with_a_tenth_free_is_under_pressure_only_by_percentage() {
    let u = usage(); // 24 GiB of 252 GiB free: 9.5%
    let kubelet = parse("nodefs.available<10%").unwrap();
    let crossed = kubelet.crossed(&u);
    assert_eq!(crossed.len(), 1);
    assert_eq!(crossed[0], (Pressure::Disk, "nodefs.available 24.0Gi < 10% of 252.0Gi".to_string()));
    let ours = parse(crate::config::DEFAULT_EVICTION_HARD).unwrap();
    assert!(ours.crossed(&u).is_empty(), "{:?}", ours.crossed(&u));
    let full = Usage { disk_available_bytes: 512 << 20, ..u };
    assert!(under(&ours.crossed(&full), Pressure::Disk));
    assert!(!under(&ours.crossed(&full), Pressure::Memory));
}

#[test]
fn memory_inodes_and_pids_count_toward_their_conditions() {
    let ours = parse(crate::config::DEFAULT_EVICTION_HARD).unwrap();
    let low =
        Usage { memory_available_bytes: 50 << 20, inodes_free: 10_000, pids_in_use: 4_000_000, ..usage() };
    let crossed = ours.crossed(&low);
    let kinds: Vec<Pressure> = crossed.iter().map(|(p, _)| *p).collect();
    assert_eq!(kinds, vec![Pressure::Memory, Pressure::Disk, Pressure::Pid], "{crossed:?}");
    assert_eq!(crossed[1].1, "nodefs.inodesFree 10000 < 5% of 1000000");
    // What the machine did not tell is not pressure.
    let unknown = Usage { memory_total_bytes: 0, disk_total_bytes: 0, inodes_total: 0, pid_max: 0, ..low };
    assert!(ours.crossed(&unknown).is_empty());
}
