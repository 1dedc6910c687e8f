//! Diffs of edited trees: every edit of any member of a hardlink group, and
//! random edit sequences on real writable mounts. Whatever the edits, the
//! saved chain mounts equal to the tree it was made from, and stock tar with
//! OCI whiteout rules applies the chain to the same tree.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use proptest::prelude::*;

/// A base tree with two hardlink groups: `d/f` + `d/h` (+ `e/g` for a
/// group across directories) and `x/a` + `x/b`.
fn base_tree(root: &Path) {
    for d in ["d", "e", "x"] {
        fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    fs::write(root.join("d/f"), b"shared data\n").expect("write");
    fs::hard_link(root.join("d/f"), root.join("d/h")).expect("link");
    fs::hard_link(root.join("d/f"), root.join("e/g")).expect("link");
    fs::write(root.join("x/a"), vec![7u8; 100_000]).expect("write");
    fs::hard_link(root.join("x/a"), root.join("x/b")).expect("link");
    fs::write(root.join("plain"), b"plain").expect("write");
}

/// A store holding [`base_tree`] (made at `t`) as snapshot `name`.
fn env_with(name: &str) -> Env {
    let env = Env::new();
    let t = env.p("t");
    fs::create_dir(&t).expect("mkdir");
    base_tree(&t);
    env.create(&t, name);
    env
}

/// The chain of `name` (base first), as object paths in the store.
fn chain_objects(env: &Env, name: &str) -> Vec<PathBuf> {
    let o = run_ok(env.cmd().args(["log", name, "--store", &env.store(), "--json"]));
    let log: serde_json::Value = serde_json::from_slice(&o.stdout).expect("log json");
    let mut objs: Vec<PathBuf> = log
        .as_array()
        .expect("array")
        .iter()
        .map(|e| env.p(&format!("store/{}.tar.zst", e["name"].as_str().expect("name"))))
        .collect();
    objs.reverse();
    objs
}

/// Stock tools apply `name`'s chain into a new dir under `env`.
fn stock_chain(env: &Env, name: &str, into: &str) -> PathBuf {
    let dest = env.p(into);
    fs::create_dir(&dest).expect("mkdir");
    let objs = chain_objects(env, name);
    stock_extract_into(&objs[0], &dest);
    for o in &objs[1..] {
        stock_apply_layer(o, &dest);
    }
    dest
}

/// Each edit of a hardlink group, applied to a plain tree.
const EDITS: &[(&str, &str)] = &[
    ("delete the data-holding name", "rm d/f"),
    ("delete a link name", "rm d/h"),
    ("replace the data-holding name", "rm d/f && echo NEW > d/f"),
    ("modify in place (all names change)", "echo MORE >> d/h"),
    ("chmod (all names change)", "chmod 600 e/g"),
    ("rename a name", "mv d/f d/renamed"),
    ("add a link", "ln x/a x/c"),
    ("add a link to the 3-group", "ln e/g e/g2"),
    ("split: copy over one name", "cp d/h d/h.tmp && mv d/h.tmp d/h"),
    ("delete every other name", "rm d/h e/g"),
    ("a new group among new files", "echo n > n1 && ln n1 n2"),
];

#[test]
fn every_hardlink_edit_diffs_to_the_edited_tree() {
    let env = Env::new();
    let t = env.p("t");
    for (i, (what, edit)) in EDITS.iter().enumerate() {
        let _ = fs::remove_dir_all(&t);
        fs::create_dir(&t).expect("mkdir");
        base_tree(&t);
        let (p0, p1) = (format!("h{i}/p0"), format!("h{i}/p1"));
        env.create(&t, &p0);
        sh(&format!("cd '{}' && {edit}", t.display()));
        run_ok(
            env.cmd()
                .arg("create")
                .arg(&t)
                .args(["--store", &env.store(), "--name", &p1, "--parent", &p0]),
        );
        run_ok(env.cmd().args(["verify", &p1, "--store", &env.store()]));
        let out = env.p(&format!("out{i}"));
        run_ok(
            env.cmd()
                .args(["extract", &p1])
                .arg(&out)
                .args(["--store", &env.store()]),
        );
        if let Err(d) = compare_trees(&t, &out) {
            panic!("{what} ({edit}): extract differs: {d}");
        }
        let stock = stock_chain(&env, &p1, &format!("stock{i}"));
        if let Err(d) = compare_trees(&t, &stock) {
            panic!("{what} ({edit}): stock apply differs: {d}");
        }
        // Every name reads: cat goes through the merged view too.
        for n in ["d/h", "e/g", "x/b"] {
            if t.join(n).exists() {
                let o = run_ok(env.cmd().args(["cat", &p1, n, "--store", &env.store()]));
                assert_eq!(o.stdout, fs::read(t.join(n)).expect("read"), "{what}: cat {n}");
            }
        }
    }
}

/// The same edits through a writable mount, saved.
#[test]
fn every_hardlink_edit_through_a_mount_saves_the_live_view() {
    if !require_fuse() {
        return;
    }
    let mut env = env_with("base");
    for (i, (what, edit)) in EDITS.iter().enumerate() {
        let upper = env.p(&format!("up{i}")).display().to_string();
        let live = env.mount("base", &format!("live{i}"), &["--upper", &upper]);
        sh(&format!("cd '{}' && {edit}", live.display()));
        let name = format!("s{i}");
        env.save(&live, &name);
        run_ok(env.cmd().args(["verify", &name, "--store", &env.store()]));
        if let Err(d) = check_saved(&mut env, &live, &name, &format!("{i}")) {
            panic!("{what} ({edit}): {d}");
        }
        env.umount(&live);
    }
}

/// The saved chain `name`, mounted, equals the `live` view, and so does its
/// stock-tar application; the mounted chain and the stock tree also agree
/// on hardlink groups (which overlayfs cannot report faithfully).
fn check_saved(env: &mut Env, live: &Path, name: &str, tag: &str) -> Result<(), String> {
    let stock = stock_chain(env, name, &format!("stock{tag}"));
    let copy = env.mount_ro(name, &format!("copy{tag}"), &[]);
    let res = compare_trees_opts(live, &copy, CompareOpts::LIVE)
        .map_err(|d| format!("mounted chain differs from the live view: {d}"))
        .and_then(|()| {
            compare_trees_opts(live, &stock, CompareOpts::LIVE)
                .map_err(|d| format!("stock apply differs from the live view: {d}"))
        })
        .and_then(|()| {
            compare_trees(&copy, &stock).map_err(|d| format!("mounted chain differs from stock apply: {d}"))
        });
    env.umount(&copy);
    res
}

/// One random edit, by index into what the live tree holds now.
#[derive(Debug, Clone)]
enum Edit {
    NewFile(u16, u16),
    Append(u16),
    Replace(u16),
    Delete(u16),
    Chmod(u16),
    Link(u16, u16),
    Rename(u16, u16),
    Mkdir(u16),
    RmDir(u16),
    Truncate(u16),
    Symlink(u16, u16),
    Touch(u16, u16),
}

fn edit() -> impl Strategy<Value = Edit> {
    let i = any::<u16>();
    prop_oneof![
        (i, i).prop_map(|(a, b)| Edit::NewFile(a, b)),
        i.prop_map(Edit::Append),
        i.prop_map(Edit::Replace),
        i.prop_map(Edit::Delete),
        i.prop_map(Edit::Chmod),
        (i, i).prop_map(|(a, b)| Edit::Link(a, b)),
        (i, i).prop_map(|(a, b)| Edit::Rename(a, b)),
        i.prop_map(Edit::Mkdir),
        i.prop_map(Edit::RmDir),
        i.prop_map(Edit::Truncate),
        (i, i).prop_map(|(a, b)| Edit::Symlink(a, b)),
        (i, i).prop_map(|(a, b)| Edit::Touch(a, b)),
    ]
}

/// Regular files and directories (not the root) under `root`, sorted.
fn listing(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut files, mut dirs) = (Vec::new(), vec![PathBuf::new()]);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = fs::read_dir(root.join(&rel))
            .expect("readdir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        for n in names {
            let r = rel.join(n);
            let m = fs::symlink_metadata(root.join(&r)).expect("stat");
            if m.is_dir() {
                dirs.push(r.clone());
                stack.push(r);
            } else if m.is_file() {
                files.push(r);
            }
        }
    }
    files.sort();
    dirs.sort();
    (files, dirs)
}

fn pick(v: &[PathBuf], i: u16) -> Option<&PathBuf> {
    (!v.is_empty()).then(|| &v[i as usize % v.len()])
}

/// Apply one edit to the tree at `root`; edits that make no sense for the
/// tree as it is now are skipped. `n` makes new names unique.
fn apply(root: &Path, e: &Edit, n: usize) {
    let (files, dirs) = listing(root);
    let at = |p: &PathBuf| root.join(p);
    match *e {
        Edit::NewFile(d, len) => {
            if let Some(d) = pick(&dirs, d) {
                let data: Vec<u8> = (0..(len % 3000) as usize).map(|i| (i * 31 + n) as u8).collect();
                fs::write(at(d).join(format!("new{n}")), data).expect("new file");
            }
        }
        Edit::Append(f) => {
            if let Some(f) = pick(&files, f) {
                let mut h = fs::OpenOptions::new().append(true).open(at(f)).expect("open");
                std::io::Write::write_all(&mut h, format!("+{n}").as_bytes()).expect("append");
            }
        }
        Edit::Replace(f) => {
            if let Some(f) = pick(&files, f) {
                let tmp = at(f).with_extension(format!("tmp{n}"));
                fs::write(&tmp, format!("replaced {n}")).expect("write");
                fs::rename(&tmp, at(f)).expect("rename over");
            }
        }
        Edit::Delete(f) => {
            if let Some(f) = pick(&files, f) {
                fs::remove_file(at(f)).expect("rm");
            }
        }
        Edit::Chmod(f) => {
            if let Some(f) = pick(&files, f) {
                let mode = [0o600, 0o644, 0o755, 0o640][n % 4];
                fs::set_permissions(at(f), fs::Permissions::from_mode(mode)).expect("chmod");
            }
        }
        Edit::Link(f, d) => {
            if let (Some(f), Some(d)) = (pick(&files, f), pick(&dirs, d)) {
                fs::hard_link(at(f), at(d).join(format!("link{n}"))).expect("ln");
            }
        }
        Edit::Rename(f, d) => {
            if let (Some(f), Some(d)) = (pick(&files, f), pick(&dirs, d)) {
                fs::rename(at(f), at(d).join(format!("moved{n}"))).expect("mv");
            }
        }
        Edit::Mkdir(d) => {
            if let Some(d) = pick(&dirs, d) {
                fs::create_dir(at(d).join(format!("dir{n}"))).expect("mkdir");
            }
        }
        Edit::RmDir(d) => {
            let d = pick(&dirs, d).filter(|d| !d.as_os_str().is_empty());
            if let Some(d) = d {
                fs::remove_dir_all(at(d)).expect("rm -r");
            }
        }
        Edit::Truncate(f) => {
            if let Some(f) = pick(&files, f) {
                let h = fs::OpenOptions::new().write(true).open(at(f)).expect("open");
                h.set_len((n % 7) as u64).expect("truncate");
            }
        }
        Edit::Symlink(d, t) => {
            if let Some(d) = pick(&dirs, d) {
                std::os::unix::fs::symlink(format!("target-{t}"), at(d).join(format!("sym{n}"))).expect("symlink");
            }
        }
        Edit::Touch(f, s) => {
            if let Some(f) = pick(&files, f) {
                set_mtime(&at(f), 1_600_000_000 + i64::from(s), (n as u32) * 1000).expect("touch");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 16, ..ProptestConfig::default() })]

    /// Random edits on a writable mount, saved twice: after every save the
    /// saved chain, mounted, equals the live view, and so does the stock-tar
    /// application of the chain.
    #[test]
    fn random_edits_on_a_mount_save_the_live_view(
        rounds in proptest::collection::vec(proptest::collection::vec(edit(), 1..8), 2..3)
    ) {
        if !require_fuse() {
            return Ok(());
        }
        let mut env = env_with("base");
        let live = env.mount("base", "live", &[]);
        let mut n = 0;
        for (r, edits) in rounds.iter().enumerate() {
            for e in edits {
                n += 1;
                apply(&live, e, n);
            }
            let name = format!("s{r}");
            let o = env.save(&live, &name);
            if String::from_utf8_lossy(&o.stdout).contains("nothing changed") {
                // (Edits that changed nothing, e.g. a skipped one.)
                continue;
            }
            let checked = check_saved(&mut env, &live, &name, &format!("{r}"));
            prop_assert!(checked.is_ok(), "round {r}: {}", checked.unwrap_err());
        }
        env.umount(&live);
    }
}

/// Full snapshots store any name; a diff refuses a name OCI rules would read
/// as a deletion, naming it, and publishes nothing.
#[test]
fn diffs_refuse_names_that_read_as_whiteouts() {
    let mut env = Env::new();
    let t = env.p("t");
    fs::create_dir_all(t.join("d")).expect("mkdir");
    fs::write(t.join("d/.wh..wh..opq"), b"a file, not a marker").expect("write");
    fs::write(t.join(".wh.foo"), b"a file named like a whiteout").expect("write");
    fs::write(t.join("foo"), b"foo").expect("write");
    env.create(&t, "full");
    run_ok(env.cmd().args(["verify", "full", "--store", &env.store()]));
    let out = env.p("out");
    run_ok(
        env.cmd()
            .args(["extract", "full"])
            .arg(&out)
            .args(["--store", &env.store()]),
    );
    assert_trees_equal(&t, &out);

    // A new `.wh.` name cannot go into a diff.
    fs::remove_file(t.join("foo")).expect("rm");
    fs::write(t.join(".wh.bar"), b"new").expect("write");
    let o =
        run_fail(
            env.cmd()
                .arg("create")
                .arg(&t)
                .args(["--store", &env.store(), "--name", "diff", "--parent", "full"]),
        );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(".wh.bar") && err.contains("diff"), "{err}");
    assert!(!env.p("store/diff.tar.zst").exists());

    if !require_fuse() {
        return;
    }
    let live = env.mount("full", "live", &[]);
    fs::write(live.join(".wh.baz"), b"x").expect("write");
    let o = run_fail(env.cmd().arg("save").arg(&live).args(["--name", "s"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(".wh.baz"), "{err}");
    assert!(!env.p("store/s.tar.zst").exists());
    // The upper dir is untouched: the file is still there to rename.
    fs::rename(live.join(".wh.baz"), live.join("baz")).expect("rename");
    env.save(&live, "s");
}

/// An upper dir carrying overlay xattrs `save` does not model (a redirect,
/// metacopy) is refused, not mis-saved.
#[test]
fn save_refuses_overlay_features_it_does_not_model() {
    if !require_fuse() {
        return;
    }
    let mut env = Env::new();
    let t = env.p("t");
    fs::create_dir_all(t.join("d")).expect("mkdir");
    fs::write(t.join("d/f"), b"f").expect("write");
    env.create(&t, "base");
    let upper = env.p("up");
    let live = env.mount("base", "live", &["--upper", &upper.display().to_string()]);
    fs::write(live.join("d/new"), b"new").expect("write");
    env.umount(&live);
    set_xattr(&upper.join("upper/d/new"), "trusted.overlay.metacopy", b"").expect("xattr");
    let live = env.mount("base", "live", &["--upper", &upper.display().to_string()]);
    let o = run_fail(env.cmd().arg("save").arg(&live).args(["--name", "s"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("trusted.overlay.metacopy") && err.contains("d/new"),
        "{err}"
    );
    assert!(!env.p("store/s.tar.zst").exists());
}

/// One step of a workspace's life.
#[derive(Debug, Clone)]
enum Step {
    Edits(Vec<Edit>),
    Save,
    /// Unmount and mount again with the same upper dir: over the last saved
    /// snapshot (`true`) or over the snapshot first mounted.
    Remount(bool),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => proptest::collection::vec(edit(), 1..5).prop_map(Step::Edits),
        2 => Just(Step::Save),
        2 => any::<bool>().prop_map(Step::Remount),
    ]
}

/// A copy of a live view (hardlinks, modes, times, xattrs kept).
fn keep_copy(live: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    sh(&format!("cp -a '{}' '{}'", live.display(), to.display()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, max_shrink_iters: 16, ..ProptestConfig::default() })]

    /// Edits, saves, unmounts and remounts in any order: after every remount
    /// the live view is exactly the one it had at unmount (no resurrected
    /// deletions, no lost edits), and every save mounts equal to the live
    /// view it was made from. Saves are cumulative: each is a diff of the
    /// one before.
    #[test]
    fn a_workspace_survives_saves_and_remounts(steps in proptest::collection::vec(step(), 2..7)) {
        if !require_fuse() {
            return Ok(());
        }
        let mut env = env_with("base");
        let upper = env.p("ws").display().to_string();
        let mut live = env.mount("base", "live", &["--upper", &upper]);
        let (mut last, mut saves, mut n) = ("base".to_string(), 0, 0);
        for (i, s) in steps.iter().enumerate() {
            match s {
                Step::Edits(edits) => {
                    for e in edits {
                        n += 1;
                        apply(&live, e, n);
                    }
                }
                Step::Save => {
                    let name = format!("s{saves}");
                    let o = env.cmd().arg("save").arg(&live).args(["--name", &name]).output().expect("save");
                    prop_assert!(o.status.success(), "step {i}: save: {}", String::from_utf8_lossy(&o.stderr));
                    if String::from_utf8_lossy(&o.stdout).contains("nothing changed") {
                        let obj = env.p(&format!("store/{name}.tar.zst"));
                        prop_assert!(!obj.exists(), "step {}: an empty save published {}", i, name);
                        continue;
                    }
                    saves += 1;
                    let log = run_ok(env.cmd().args(["log", &name, "--store", &env.store(), "--json"]));
                    let log: serde_json::Value = serde_json::from_slice(&log.stdout).expect("json");
                    prop_assert_eq!(log[0]["parent"].as_str(), Some(last.as_str()), "step {}: not a diff of the last save", i);
                    last = name.clone();
                    let checked = check_saved(&mut env, &live, &name, &format!("{i}"));
                    prop_assert!(checked.is_ok(), "step {i}: {}", checked.unwrap_err());
                }
                Step::Remount(over_last) => {
                    let before = env.p(&format!("before{i}"));
                    keep_copy(&live, &before);
                    env.umount(&live);
                    let over = if *over_last { last.clone() } else { "base".to_string() };
                    live = env.mount(&over, "live", &["--upper", &upper]);
                    let same = compare_trees_opts(&before, &live, CompareOpts::LIVE);
                    prop_assert!(same.is_ok(), "step {i}: remounted over {over}: {}", same.unwrap_err());
                }
            }
        }
        env.umount(&live);
    }
}

/// The issue's sequence: create, save, delete, save, edit, unmount,
/// remount, compare; and a snapshot the upper dir was not made on is
/// refused (unless its changes are discarded), naming both.
#[test]
fn remounts_resume_the_workspace_and_refuse_other_snapshots() {
    if !require_fuse() {
        return;
    }
    let mut env = env_with("a");
    let t = env.p("t");
    env.create(&t, "b");
    let live = env.mount("a", "m", &[]);
    fs::write(live.join("created"), b"1").expect("write");
    env.save(&live, "a1");
    fs::remove_file(live.join("created")).expect("rm");
    fs::remove_file(live.join("plain")).expect("rm");
    env.save(&live, "a2");
    // Only what changed since a1: two deletions.
    let o = run_ok(env.cmd().args(["diff", "a2", "--store", &env.store()]));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "D created\nD plain\n");
    let o = run_ok(env.cmd().arg("save").arg(&live).args(["--name", "a3"]));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing changed since a2"),
        "{o:?}"
    );
    assert!(!env.p("store/a3.tar.zst").exists());
    fs::write(live.join("d/f"), b"edited").expect("edit");
    let before = env.p("before");
    keep_copy(&live, &before);
    env.umount(&live);

    // Another snapshot over these changes: refused, naming both.
    let m = env.p("m");
    let o = run_fail(env.cmd().args(["mount", "b"]).arg(&m).args(["--store", &env.store()]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("made on snapshot a") && err.contains("mounting b") && err.contains("--discard-changes"),
        "{err}"
    );
    // The last save and the original both resume the same live view.
    for over in ["a2", "a"] {
        let live = env.mount(over, "m", &[]);
        assert_trees_equal_opts(&before, &live);
        env.umount(&live);
    }
    // Discarding: b as it is.
    let live = env.mount("b", "m", &["--discard-changes"]);
    assert!(live.join("plain").exists() && !live.join("created").exists());
    assert_eq!(fs::read(live.join("d/f")).expect("read"), b"shared data\n");
    env.umount(&live);
}

fn assert_trees_equal_opts(a: &Path, b: &Path) {
    if let Err(d) = compare_trees_opts(a, b, CompareOpts::LIVE) {
        panic!("{d}");
    }
}

/// A mount point must be an existing, empty directory.
#[test]
fn mount_points_are_checked() {
    if !require_fuse() {
        return;
    }
    let mut env = Env::new();
    let t = env.p("t");
    fs::create_dir(&t).expect("mkdir");
    fs::write(t.join("x"), b"x").expect("write");
    env.create(&t, "s");
    let full = env.p("full");
    fs::create_dir(&full).expect("mkdir");
    fs::write(full.join("mine"), b"keep").expect("write");
    for (at, want, code) in [
        (full.clone(), "not empty", 2),
        (env.p("missing"), "create the directory first", 1),
        (full.join("mine"), "not a directory", 2),
    ] {
        let o = run_fail(
            env.cmd()
                .args(["mount", "s"])
                .arg(&at)
                .args(["--store", &env.store(), "--read-only"]),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(want) && !err.contains("needs root"),
            "{}: {err}",
            at.display()
        );
        assert_eq!(o.status.code(), Some(code), "{}: {err}", at.display());
    }
    let m = env.mount("s", "full", &["--read-only", "--allow-non-empty"]);
    assert!(m.join("x").exists());
    env.umount(&m);
    assert_eq!(fs::read(full.join("mine")).expect("read"), b"keep");
}

/// Every file under `dir`, relative, sorted (empty if `dir` is missing).
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).expect("under").display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A clean umount, or a failed mount, leaves nothing in the state dir but
/// an upper dir with unsaved changes, which `mounts` lists.
#[test]
fn the_state_dir_keeps_only_unsaved_changes() {
    if !require_fuse() {
        return;
    }
    let mut env = env_with("a");
    let state = env.p("state/mounts");
    let kept = |env: &Env| -> serde_json::Value {
        let o = run_ok(env.cmd().args(["mounts", "--json"]));
        serde_json::from_slice(&o.stdout).expect("json")
    };

    let m = env.mount_ro("a", "ro", &[]);
    assert_eq!(kept(&env)["mounts"].as_array().map(Vec::len), Some(1));
    env.umount(&m);
    assert_eq!(files_under(&state), Vec::<String>::new(), "after a read-only mount");

    let o = run_fail(
        env.cmd()
            .args(["mount", "missing"])
            .arg(env.p("ro"))
            .args(["--store", &env.store()]),
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("not found"));
    assert_eq!(files_under(&state), Vec::<String>::new(), "after a failed mount");

    let m = env.mount("a", "rw", &[]);
    fs::write(m.join("new"), b"unsaved").expect("write");
    env.umount(&m);
    let left = files_under(&state);
    let top: Vec<&String> = left.iter().filter(|f| !f.contains('/')).collect();
    assert!(
        top.len() == 1
            && left
                .iter()
                .all(|f| f == top[0] || f.starts_with(&format!("{}/changes", top[0]))),
        "{left:?}"
    );
    let report = kept(&env);
    assert_eq!(report["mounts"].as_array().map(Vec::len), Some(0), "{report}");
    assert_eq!(report["kept"][0]["base"], "a", "{report}");

    let m = env.mount("a", "rw", &[]);
    assert_eq!(fs::read(m.join("new")).expect("resumed"), b"unsaved");
    env.save(&m, "a1");
    env.umount(&m);
    assert_eq!(files_under(&state), Vec::<String>::new(), "after saving everything");
    assert_eq!(kept(&env)["kept"].as_array().map(Vec::len), Some(0));
}
