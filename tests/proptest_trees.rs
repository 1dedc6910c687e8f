//! Property: any random tree round-trips exactly through create -> extract,
//! and `verify` accepts every snapshot the writer produces.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Node {
    File(Vec<u8>, u32),
    Dir(Vec<(String, Node)>, u32),
    Symlink(String),
}

fn name() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z0-9 ._\u{e9}\u{4e2d}-]{1,12}")
        .expect("regex")
        .prop_filter("not . or ..", |s| s != "." && s != "..")
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        (proptest::collection::vec(any::<u8>(), 0..3000), 0o400u32..0o1000).prop_map(|(d, m)| Node::File(d, m)),
        (0usize..200_000).prop_map(|n| Node::File(vec![7u8; n], 0o644)),
        name().prop_map(Node::Symlink),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        (proptest::collection::vec((name(), inner), 0..6), 0o700u32..0o1000).prop_map(|(kids, m)| {
            let mut seen = std::collections::HashSet::new();
            let kids = kids.into_iter().filter(|(n, _)| seen.insert(n.clone())).collect();
            Node::Dir(kids, m)
        })
    })
}

fn build(p: &Path, n: &Node) {
    match n {
        Node::File(d, m) => {
            std::fs::write(p, d).expect("write");
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(*m)).expect("chmod");
        }
        Node::Symlink(t) => std::os::unix::fs::symlink(t, p).expect("symlink"),
        Node::Dir(kids, m) => {
            std::fs::create_dir(p).expect("mkdir");
            for (name, k) in kids {
                build(&p.join(name), k);
            }
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(*m)).expect("chmod");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip(kids in proptest::collection::vec((name(), node()), 0..8), frame in 1u64..64) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        let mut seen = std::collections::HashSet::new();
        let kids: Vec<_> = kids.into_iter().filter(|(n, _)| seen.insert(n.clone())).collect();
        build(&src, &Node::Dir(kids, 0o755));
        let store = tmp.path().join("store").display().to_string();
        let fs = format!("{}KiB", frame);
        run_ok(lazysnap().arg("create").arg(&src).args(["--store", &store, "--name", "p", "--frame-size", &fs]));
        run_ok(lazysnap().args(["verify", "p", "--store", &store]));
        let out = tmp.path().join("out");
        run_ok(lazysnap().args(["extract", "p"]).arg(&out).args(["--store", &store]));
        if let Err(diff) = compare_trees(&src, &out) {
            prop_assert!(false, "{}", diff);
        }
    }
}
