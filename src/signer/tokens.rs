//! The token file: which token may do what, under which prefix.
//!
//! ```json
//! {"version": 1, "tokens": [
//!   {"sha256": "<64 hex digits>", "prefix": "org/repo/", "rights": "read-write",
//!    "comment": "CI of org/repo"}]}
//! ```
//!
//! The file holds each token's SHA-256, never the token: a leaked file
//! grants nothing. A presented token is hashed and its digest compared
//! with every entry's in constant time (all entries, every time), so the
//! time an answer takes says nothing about how close a guess came. Tokens
//! are never logged; an entry is named by its prefix (and comment).
//!
//! The file is read at start (a bad file is an error then) and again on
//! SIGHUP ([`Tokens::reload`]): a file that no longer parses keeps the old
//! table in force, with a warning.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{Error, Result};

/// Largest token file read.
pub const MAX_FILE: u64 = 4 << 20;

/// Longest token accepted in a request (longer ones are refused unhashed).
pub const MAX_TOKEN: usize = 4096;

/// The file format version this build reads.
pub const VERSION: u32 = 1;

/// What a token may do under its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rights {
    /// Mount specs and listing.
    Read,
    /// Also uploads and deletes.
    ReadWrite,
}

impl Rights {
    /// May it upload and delete?
    pub fn can_write(self) -> bool {
        self == Rights::ReadWrite
    }
}

/// What a presented token was found to grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Names it may touch start with this (ends with `/`).
    pub prefix: String,
    /// What it may do there.
    pub rights: Rights,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileV1 {
    version: u32,
    tokens: Vec<EntryV1>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryV1 {
    sha256: String,
    prefix: String,
    rights: Rights,
    #[serde(default)]
    #[allow(dead_code)]
    comment: Option<String>,
}

struct Entry {
    digest: [u8; 32],
    grant: Grant,
}

/// A parsed token file.
pub struct TokenTable {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenTable")
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// The SHA-256 of `token`, as the token file writes it (64 lowercase hex
/// digits): what an operator puts in the file for a new token.
pub fn token_sha256(token: &str) -> String {
    crate::format::hex(&sha256(token))
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn invalid(what: &str, why: impl Into<String>) -> Error {
    Error::Invalid {
        what: what.to_string(),
        why: why.into(),
    }
}

/// Check a token prefix: the components of a snapshot name followed by
/// `/` (`org/repo/`), or `""` for the whole store.
pub fn check_prefix(prefix: &str) -> std::result::Result<(), String> {
    if prefix.is_empty() {
        // The whole store: a token for a trusted builder, not a pod.
        return Ok(());
    }
    let Some(dir) = prefix.strip_suffix('/') else {
        return Err(format!("prefix {prefix:?} must end with '/' (e.g. \"org/repo/\")"));
    };
    crate::store::snapshot_key(dir)
        .map(|_| ())
        .map_err(|e| format!("prefix {prefix:?}: {e}"))
}

impl TokenTable {
    /// Parse a token file's bytes; `what` names it in errors.
    pub fn parse(data: &[u8], what: &str) -> Result<TokenTable> {
        let file: FileV1 = serde_json::from_slice(data).map_err(|e| invalid(what, format!("not a token file: {e}")))?;
        if file.version != VERSION {
            return Err(Error::Unsupported {
                what: what.to_string(),
                why: format!("token file version {} (this build reads {VERSION})", file.version),
            });
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(file.tokens.len());
        for (i, e) in file.tokens.into_iter().enumerate() {
            let at = format!("{what}: token {}", i + 1);
            let hex = e.sha256.trim();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    &at,
                    "sha256 is not 64 hex digits (the token's SHA-256, not the token)",
                ));
            }
            let mut digest = [0u8; 32];
            for (j, d) in digest.iter_mut().enumerate() {
                *d = u8::from_str_radix(&hex[2 * j..2 * j + 2], 16).map_err(|_| invalid(&at, "bad hex"))?;
            }
            check_prefix(&e.prefix).map_err(|why| invalid(&at, why))?;
            if entries.iter().any(|x| x.digest == digest) {
                return Err(invalid(&at, "the same token appears twice"));
            }
            entries.push(Entry {
                digest,
                grant: Grant {
                    prefix: e.prefix,
                    rights: e.rights,
                },
            });
        }
        Ok(TokenTable { entries })
    }

    /// Read and parse the token file at `path` (at most [`MAX_FILE`] bytes).
    pub fn load(path: &Path) -> Result<TokenTable> {
        let what = format!("token file {}", path.display());
        let data = crate::sys::read_small_file(path, MAX_FILE, &what)?;
        TokenTable::parse(&data, &what)
    }

    /// How many tokens it knows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Does it know none?
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What `token` grants, if anything. The token is hashed and its digest
    /// compared with every entry's in constant time; which entry matched
    /// (if any) is decided after all were compared.
    pub fn lookup(&self, token: &str) -> Option<Grant> {
        if token.is_empty() || token.len() > MAX_TOKEN {
            return None;
        }
        let d = sha256(token);
        let mut hit = None;
        for (i, e) in self.entries.iter().enumerate() {
            let eq: bool = d.ct_eq(&e.digest).into();
            // No early exit: every entry costs the same.
            hit = if eq { Some(i) } else { hit };
        }
        hit.map(|i| self.entries[i].grant.clone())
    }
}

/// The token table in force, and where it is re-read from.
pub struct Tokens {
    path: PathBuf,
    table: parking_lot::RwLock<Arc<TokenTable>>,
}

impl Tokens {
    /// Read the file at `path` (a bad file is an error).
    pub fn load(path: &Path) -> Result<Tokens> {
        let table = TokenTable::load(path)?;
        Ok(Tokens {
            path: path.to_path_buf(),
            table: parking_lot::RwLock::new(Arc::new(table)),
        })
    }

    /// The table in force.
    pub fn table(&self) -> Arc<TokenTable> {
        self.table.read().clone()
    }

    /// What `token` grants under the table in force.
    pub fn lookup(&self, token: &str) -> Option<Grant> {
        self.table().lookup(token)
    }

    /// Read the file again: a good file replaces the table (its size is
    /// answered), a bad one leaves the old table in force (the error is
    /// answered). Either way one log line says which.
    pub fn reload(&self) -> Result<usize> {
        match TokenTable::load(&self.path) {
            Ok(t) => {
                let n = t.len();
                *self.table.write() = Arc::new(t);
                tracing::info!("token file {} reloaded: {n} tokens", self.path.display());
                Ok(n)
            }
            Err(e) => {
                tracing::warn!("token file not reloaded, the old tokens stay in force: {e}");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(entries: &[(&str, &str, &str)]) -> String {
        let tokens: Vec<serde_json::Value> = entries
            .iter()
            .map(|(tok, prefix, rights)| {
                serde_json::json!({"sha256": token_sha256(tok), "prefix": prefix, "rights": rights, "comment": "t"})
            })
            .collect();
        serde_json::json!({"version": 1, "tokens": tokens}).to_string()
    }

    #[test]
    fn lookup_finds_each_token_and_nothing_else() {
        let t = TokenTable::parse(
            file(&[
                ("alpha-token", "org/a/", "read"),
                ("beta-token", "org/b/", "read-write"),
            ])
            .as_bytes(),
            "t",
        )
        .expect("parse");
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.lookup("alpha-token"),
            Some(Grant {
                prefix: "org/a/".into(),
                rights: Rights::Read
            })
        );
        let b = t.lookup("beta-token").expect("beta");
        assert_eq!((b.prefix.as_str(), b.rights.can_write()), ("org/b/", true));
        // Near misses, the digest itself, empty and huge tokens: nothing.
        let digest = token_sha256("alpha-token");
        let huge = "x".repeat(MAX_TOKEN + 1);
        for miss in [
            "alpha-toke",
            "alpha-token ",
            "ALPHA-TOKEN",
            "",
            digest.as_str(),
            huge.as_str(),
        ] {
            assert_eq!(t.lookup(miss), None, "{miss:?}");
        }
        // The digest as the file writes it is SHA-256 (a known vector).
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Upper-case hex in the file works too.
        let upper = file(&[("alpha-token", "org/a/", "read")]).replace(&digest, &digest.to_uppercase());
        assert!(TokenTable::parse(upper.as_bytes(), "t")
            .expect("upper")
            .lookup("alpha-token")
            .is_some());
    }

    #[test]
    fn bad_files_are_refused() {
        let good = ("tok", "org/repo/", "read");
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "not a token file"),
            ("{}".into(), "not a token file"),
            (file(&[good]).replace("\"version\":1", "\"version\":2"), "version 2"),
            (file(&[good, good]), "twice"),
            (file(&[("tok", "org/repo", "read")]), "end with '/'"),
            (file(&[("tok", "/org/", "read")]), "relative"),
            (file(&[("tok", "org/../x/", "read")]), "'..'"),
            (file(&[("tok", "org//x/", "read")]), "empty path component"),
            (file(&[("tok", "/", "read")]), "empty"),
            (file(&[("tok", "org/\u{7}/", "read")]), "control"),
            (file(&[("tok", "org/repo/", "write")]), "not a token file"),
            (file(&[good]).replace(&token_sha256("tok"), "tok"), "64 hex digits"),
            (file(&[good]).replace("\"comment\"", "\"token\""), "unknown field"),
        ];
        for (text, want) in cases {
            let e = TokenTable::parse(text.as_bytes(), "t").expect_err(want);
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn reload_keeps_the_old_table_when_the_new_file_is_bad() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("tokens.json");
        std::fs::write(&path, file(&[("one", "a/", "read")])).expect("write");
        let tokens = Tokens::load(&path).expect("load");
        assert!(tokens.lookup("one").is_some() && tokens.lookup("two").is_none());
        std::fs::write(&path, file(&[("one", "a/", "read"), ("two", "b/", "read-write")])).expect("write");
        assert_eq!(tokens.reload().expect("reload"), 2);
        assert_eq!(tokens.lookup("two").map(|g| g.prefix), Some("b/".to_string()));
        std::fs::write(&path, "{ broken").expect("write");
        assert!(tokens.reload().is_err());
        assert!(tokens.lookup("two").is_some(), "the old table stays in force");
        std::fs::write(&path, vec![b' '; MAX_FILE as usize + 1]).expect("write");
        let e = tokens.reload().expect_err("too large");
        assert!(e.to_string().contains("larger than"), "{e}");
        assert!(Tokens::load(&dir.path().join("missing")).is_err());
    }
}
