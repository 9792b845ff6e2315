//! Unit tests of the static pod manifest scan in `mod.rs`.

use super::*;

const HELLO: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: hello}\nspec:\n  containers: [{name: main, image: 'file:///w/hello.wasm'}]\n";

fn uid(c: &Change) -> String {
    match c {
        Change::Upsert(p) => p.metadata.uid.clone().unwrap(),
        Change::Remove(u) => u.clone(),
    }
}

#[test]
fn a_manifest_becomes_a_static_pod_of_this_node() {
    let p = static_pod(HELLO, Path::new("/m/hello.yaml"), "edge-1").unwrap();
    assert_eq!(p.metadata.name.as_deref(), Some("hello-edge-1"));
    assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some("edge-1"));
    assert_eq!(p.metadata.annotations.as_ref().unwrap()[SOURCE_ANNOTATION], "file");
    let tolerations = p.spec.as_ref().unwrap().tolerations.clone().unwrap();
    let effects: Vec<_> = tolerations.iter().filter_map(|t| t.effect.clone()).collect();
    assert_eq!(effects, ["NoSchedule", "NoExecute"], "static pods tolerate this node's taints");
    let u = p.metadata.uid.clone().unwrap();
    assert_eq!(u.len(), 36);
    let again = static_pod(HELLO, Path::new("/m/hello.yaml"), "edge-1").unwrap();
    assert_eq!(again.metadata.uid.unwrap(), u, "same file, same content: same pod");
    let edited = static_pod(&HELLO.replace("main", "app"), Path::new("/m/hello.yaml"), "edge-1").unwrap();
    assert_ne!(edited.metadata.uid.unwrap(), u, "an edit is a new pod");
}

#[test]
fn yes_and_on_stay_strings_as_in_yaml_1_2() {
    let text = HELLO.replace(
        "image: 'file:///w/hello.wasm'",
        "image: x, env: [{name: A, value: yes}, {name: B, value: on}]",
    );
    let p = static_pod(&text, Path::new("/m/hello.yaml"), "edge-1").unwrap();
    let env = p.spec.unwrap().containers[0].env.clone().unwrap();
    let values: Vec<_> = env.iter().map(|e| e.value.as_deref().unwrap_or("")).collect();
    assert_eq!(values, ["yes", "on"]);
}

#[test]
fn malformed_manifests_say_what_is_wrong() {
    let p = Path::new("/m/x.yaml");
    assert!(static_pod("{{{", p, "n").unwrap_err().contains("not YAML"));
    assert!(static_pod("apiVersion: v1\nkind: Service\n", p, "n").unwrap_err().contains("kind Pod"));
    assert!(
        static_pod("apiVersion: v1\nkind: Pod\nspec: {containers: []}\n", p, "n")
            .unwrap_err()
            .contains("name")
    );
    let no_containers = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: []}\n";
    assert!(static_pod(no_containers, p, "n").unwrap_err().contains("containers"));
    // The error is logged: an env value of the wrong type is not quoted in it.
    let env = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c, \
               env: [{name: PASSWORD, value: 31337424242}]}]}\n";
    let err = static_pod(env, p, "n").unwrap_err();
    assert!(err.contains("not a valid Pod: invalid type: integer, expected a string"), "{err}");
    assert!(!err.contains("31337424242"), "{err}");
}

#[test]
fn rescans_report_added_changed_removed_and_skip_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = Manifests::new(dir.path(), "n1");
    assert!(m.rescan().is_empty());
    std::fs::write(dir.path().join("hello.yaml"), HELLO).unwrap();
    std::fs::write(dir.path().join("broken.yaml"), "kind: [").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
    let first = m.rescan();
    assert_eq!(first.len(), 1, "only the valid manifest: {first:?}");
    assert!(matches!(&first[0], Change::Upsert(p) if p.metadata.name.as_deref() == Some("hello-n1")));
    assert!(m.rescan().is_empty(), "nothing changed");

    // Edit: the old pod goes, the new one comes.
    std::fs::write(dir.path().join("hello.yaml"), HELLO.replace("main", "app-container")).unwrap();
    let edit = m.rescan();
    assert_eq!(edit.len(), 2, "{edit:?}");
    assert!(matches!(&edit[0], Change::Remove(u) if *u == uid(&first[0])));
    assert!(matches!(&edit[1], Change::Upsert(_)));

    // A valid file turning invalid stops its pod; removing a file stops its pod.
    std::fs::write(dir.path().join("other.json"), r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"o"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#).unwrap();
    let added = m.rescan();
    assert_eq!(added.len(), 1);
    std::fs::remove_file(dir.path().join("other.json")).unwrap();
    assert_eq!(m.rescan(), vec![Change::Remove(uid(&added[0]))]);
    std::fs::write(dir.path().join("hello.yaml"), "kind: [broken").unwrap();
    assert_eq!(m.rescan(), vec![Change::Remove(uid(&edit[1]))]);
}

#[test]
fn a_look_at_named_files_reads_only_those_and_sees_renames_and_removals() {
    let dir = tempfile::tempdir().unwrap();
    let names = |n: &[&str]| n.iter().map(OsString::from).collect::<Vec<_>>();
    let mut m = Manifests::new(dir.path(), "n1");
    std::fs::write(dir.path().join("a.yaml"), HELLO).unwrap();
    std::fs::write(dir.path().join("b.yaml"), HELLO.replace("hello", "bee")).unwrap();
    let a = m.rescan_names(&names(&["a.yaml"]));
    assert!(matches!(&a[..], [Change::Upsert(p)] if p.metadata.name.as_deref() == Some("hello-n1")), "{a:?}");
    // b.yaml was not named: not read (the full rescan is the safety net that finds it).
    let b = m.rescan();
    assert!(matches!(&b[..], [Change::Upsert(p)] if p.metadata.name.as_deref() == Some("bee-n1")), "{b:?}");
    assert!(m.rescan_names(&names(&["a.yaml", "b.yaml", "gone.yaml"])).is_empty(), "nothing changed");
    // Renamed away to a hidden name and back in under another: the pod is replaced.
    std::fs::rename(dir.path().join("a.yaml"), dir.path().join(".a.swp")).unwrap();
    assert_eq!(m.rescan_names(&names(&["a.yaml", ".a.swp"])), vec![Change::Remove(uid(&a[0]))]);
    std::fs::rename(dir.path().join(".a.swp"), dir.path().join("c.yaml")).unwrap();
    let c = m.rescan_names(&names(&[".a.swp", "c.yaml"]));
    assert!(matches!(&c[..], [Change::Upsert(_)]), "{c:?}");
    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    assert_eq!(m.rescan_names(&names(&["b.yaml"])), vec![Change::Remove(uid(&b[0]))]);
    assert!(m.rescan().is_empty(), "the named looks kept the same state as a full rescan");
}

#[test]
fn a_single_file_is_a_manifest_path_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.manifest"); // any name, as the kubelet reads it
    std::fs::write(&file, HELLO).unwrap();
    std::fs::write(dir.path().join("other.yaml"), HELLO.replace("hello", "other")).unwrap();
    check_readable(&file).unwrap();
    assert_eq!(watched_dir(&file), dir.path());
    assert_eq!(watched_dir(dir.path()), dir.path());
    let mut m = Manifests::new(&file, "n1");
    let first = m.rescan();
    assert_eq!(first.len(), 1, "only the file given, not its neighbours: {first:?}");
    assert!(matches!(&first[0], Change::Upsert(p) if p.metadata.name.as_deref() == Some("hello-n1")));
    assert!(m.rescan().is_empty());
    // Replaced by rename, as editors do: a new version.
    let tmp = dir.path().join(".app.tmp");
    std::fs::write(&tmp, HELLO.replace("main", "renamed")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let edit = m.rescan();
    assert!(matches!(&edit[..], [Change::Remove(u), Change::Upsert(_)] if *u == uid(&first[0])), "{edit:?}");
    // Removed: its pod stops, as when a directory's file goes.
    std::fs::remove_file(&file).unwrap();
    assert_eq!(m.rescan(), vec![Change::Remove(uid(&edit[1]))]);
    assert!(check_readable(&file).is_err());
}

#[test]
fn names_that_become_paths_are_checked_as_the_api_server_would() {
    let path = Path::new("/m/p.yaml");
    let manifest = |meta: &str, containers: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {meta}\nspec:\n  containers: {containers}\n")
    };
    let ok = manifest("{name: web}", "[{name: app, image: x}]");
    assert!(static_pod(&ok, path, "node-1").is_ok());
    let cases = [
        (manifest("{name: ../../etc}", "[{name: app, image: x}]"), "metadata.name"),
        (manifest("{name: web, namespace: ../x}", "[{name: app, image: x}]"), "metadata.namespace"),
        (manifest("{name: web}", "[{name: ../../../tmp, image: x}]"), "container name \"../../../tmp\""),
        (manifest("{name: web}", "[{name: a, image: x}, {name: a, image: y}]"), "used twice"),
        (manifest("{name: Web}", "[{name: a, image: x}]"), "not a valid DNS-1123 subdomain"),
    ];
    for (text, want) in cases {
        let err = static_pod(&text, path, "node-1").expect_err(&text);
        assert!(err.contains(want), "{text}: {err}");
    }
}
