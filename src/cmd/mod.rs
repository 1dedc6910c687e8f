//! The read-side operations behind the CLI subcommands: inspecting,
//! verifying and extracting snapshots, and the mount daemon's controls.
//! (Writing snapshots lives in [`crate::build`].)
//!
//! Each takes a [`crate::store::Store`] and a runtime handle and does
//! blocking work on the calling thread, using the runtime for store I/O.
//! `main.rs` only parses arguments and prints.

pub mod extract;
pub mod inspect;
pub mod mount;
pub mod verify;
