//! What the `tally` client, the node and the simulator share, kept apart from the server's
//! engine (openraft, sled, axum) so that the client links none of it.
//!
//! - [`audit`]: the per-poll receipt chain, computed by the state machine and checked by
//!   `tally audit verify` and the simulation's checker alike.
//! - [`backup_file`]: a backup file's frame (magic, digest), which the client checks.
//! - [`certs`]: a private CA for clusters on one machine (`tally demo --tls`, the tests).
//! - [`v1`]: the JSON bodies of API.md's routes, written by the node and read by the
//!   client and the simulator.

pub mod audit;
pub mod backup_file;
pub mod certs;
pub mod v1;
