//! Crash tests of the certificate journal: every state a stopped agent can leave is
//! recovered without losing the issued certificate.

use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::certs::{key_matches, node_csr, testing};

fn request(dir: &Path) -> (Pending, Bundle) {
    let ip: IpAddr = "10.0.0.5".parse().unwrap();
    let kc = node_csr("wasm-1", &[ip], &["wasm-1".into()]).unwrap();
    let pending = Pending::new(dir, "serving");
    (pending, Bundle { key_pem: kc.key_pem, csr_pem: kc.csr_pem, cert_pem: None })
}

fn issue(bundle: &Bundle, age: i64, lifetime: i64) -> Bundle {
    Bundle { cert_pem: Some(testing::sign_aged(&bundle.csr_pem, age, lifetime)), ..bundle.clone() }
}

fn targets(dir: &Path) -> [Target; 2] {
    [
        Target::Kubeconfig {
            path: dir.join("kubeconfig"),
            server: "https://127.0.0.1:6443".into(),
            ca_pem: b"CA".to_vec(),
        },
        Target::Pair { cert_file: dir.join("krustlet.crt"), key_file: dir.join("krustlet.key") },
    ]
}

/// The (certificate, key) a target holds on disk, if any.
fn installed(target: &Target) -> Option<(Vec<u8>, Vec<u8>)> {
    match target {
        Target::Kubeconfig { path, .. } => {
            let doc: serde_json::Value = serde_saphyr::from_slice(&std::fs::read(path).ok()?).ok()?;
            let user = &doc["users"][0]["user"];
            let data = |k: &str| files::decode_b64(user[k].as_str()?).ok();
            Some((data("client-certificate-data")?, data("client-key-data")?))
        }
        Target::Pair { cert_file, key_file } => {
            Some((std::fs::read(cert_file).ok()?, std::fs::read(key_file).ok()?))
        }
    }
}

/// Each install step is atomic, so a crash leaves the steps done so far: every prefix is a
/// state a stopped agent can leave. From each, a restart must end with the new pair
/// installed and nothing pending (or, stopped before the certificate was recorded, with the
/// same request still pending, so the same CSR is waited for again). At no point may the
/// issued certificate be nowhere on disk.
#[test]
fn a_crash_between_any_two_steps_loses_no_issued_certificate() {
    for t in 0..2 {
        let probe = tempfile::tempdir().unwrap();
        let (_, probe_request) = request(probe.path());
        let steps = install_steps(
            &Pending::new(probe.path(), "serving"),
            &issue(&probe_request, 60, 3600),
            &targets(probe.path())[t],
        );
        for done in 0..=steps.len() {
            let dir = tempfile::tempdir().unwrap();
            let target = targets(dir.path())[t].clone();
            // An identity already installed, being renewed.
            let (_, old_request) = request(dir.path());
            let old = issue(&old_request, 600, 3600);
            apply(&target.steps(old.cert_pem.as_deref().unwrap().as_bytes(), old.key_pem.as_bytes()))
                .unwrap();
            let (pending, requested) = request(dir.path());
            pending.save(&requested).unwrap();
            let new = issue(&requested, 60, 3600);
            let new_pair = (new.cert_pem.clone().unwrap().into_bytes(), new.key_pem.clone().into_bytes());
            let steps = install_steps(&pending, &new, &target);

            apply(&steps[..done]).unwrap(); // ... and the agent stops here.

            let journaled = pending.load().unwrap().is_some_and(|b| b.cert_pem == new.cert_pem);
            if done > 0 {
                assert!(
                    journaled || installed(&target) == Some(new_pair.clone()),
                    "target {t}, lost after step {done}"
                );
            }
            match recover(&pending, &target, SystemTime::now(), |_| true).unwrap() {
                Recovered::Requested => {
                    assert_eq!(done, 0, "target {t}: still requested after step {done}");
                    assert_eq!(pending.load().unwrap(), Some(requested), "the same key and CSR are kept");
                    assert!(
                        installed(&target)
                            .is_some_and(|(c, _)| c == old.cert_pem.clone().unwrap().into_bytes())
                    );
                    continue;
                }
                Recovered::Installed(info) => {
                    assert!(done > 0 && done < steps.len(), "target {t}, step {done}");
                    assert!(!info.expired(SystemTime::now()));
                }
                Recovered::Nothing => assert_eq!(done, steps.len(), "target {t}, step {done}"),
            }
            let (cert, key) = installed(&target).expect("installed");
            assert_eq!((cert.clone(), key.clone()), new_pair, "target {t}, step {done}");
            assert!(key_matches(&cert, &key).unwrap());
            assert!(pending.load().unwrap().is_none(), "nothing pending after recovery");
            assert!(!pending.path().exists());
        }
    }
}

#[test]
fn between_the_serving_key_and_certificate_writes_the_pair_on_disk_does_not_match_until_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let target = targets(dir.path())[1].clone();
    let (pending, requested) = request(dir.path());
    let (_, old_request) = request(dir.path());
    let old = issue(&old_request, 600, 3600);
    apply(&target.steps(old.cert_pem.as_deref().unwrap().as_bytes(), old.key_pem.as_bytes())).unwrap();
    let steps = install_steps(&pending, &issue(&requested, 60, 3600), &target);
    apply(&steps[..2]).unwrap(); // journal, then the new key: the old certificate is still there
    let (cert, key) = installed(&target).unwrap();
    assert!(!key_matches(&cert, &key).unwrap());
    assert!(matches!(
        recover(&pending, &target, SystemTime::now(), |_| true).unwrap(),
        Recovered::Installed(_)
    ));
    let (cert, key) = installed(&target).unwrap();
    assert!(key_matches(&cert, &key).unwrap());
}

#[test]
fn an_issued_certificate_that_no_longer_fits_is_dropped_and_the_target_left_alone() {
    let now = SystemTime::now();
    for (case, fits) in [("expired", true), ("not this key's", true), ("not this node's", false)] {
        let dir = tempfile::tempdir().unwrap();
        let target = targets(dir.path())[1].clone();
        let (pending, requested) = request(dir.path());
        let bundle = match case {
            "expired" => issue(&requested, 7200, 3600),
            "not this key's" => {
                let (_, other) = request(dir.path());
                Bundle { cert_pem: issue(&other, 60, 3600).cert_pem, ..requested }
            }
            _ => issue(&requested, 60, 3600),
        };
        pending.save(&bundle).unwrap();
        let found = recover(&pending, &target, now, |_| fits).unwrap();
        assert!(matches!(found, Recovered::Nothing), "{case}: {found:?}");
        assert!(!pending.path().exists(), "{case}");
        assert!(installed(&target).is_none(), "{case}: nothing installed");
    }
}

#[test]
fn an_unreadable_journal_is_set_aside_and_the_request_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let (pending, requested) = request(dir.path());
    let text = requested.render();
    std::fs::write(pending.path(), &text[..text.len() / 2]).unwrap();
    assert!(pending.load().unwrap().is_none());
    assert!(!pending.path().exists());
    let target = targets(dir.path())[0].clone();
    assert!(matches!(recover(&pending, &target, SystemTime::now(), |_| true).unwrap(), Recovered::Nothing));
}
