//! Paperboy as a dependency: this crate is built in a workspace of its own and depends on
//! `paperboy` by path, as a service would (by path, by git or from a registry alike: only
//! what ships with the `paperboy` package applies, never Paperboy's own workspace
//! settings such as a `[patch.crates-io]`).
//!
//! Its tests (`tests/hostile_responses.rs`) send the hostile responses of
//! `protocol/tests/hostile_responses.rs` to a real [`paperboy::Client`] and through the
//! re-exported protocol layer, and expect typed errors. Run them with
//! `cd tests/downstream && cargo test --locked` (`scripts/test` does).
