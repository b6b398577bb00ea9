//! The frame of a backup file, which the node writes and reads whole and the client checks
//! by its digest alone when no `tally-node` is at hand: [`MAGIC`], the snapshot stream,
//! then the stream's SHA-256 ([`DIGEST_BYTES`]).

/// The first bytes of a backup file; the number is the format's version.
pub const MAGIC: &[u8; 15] = b"TALLY-BACKUP-4\n";
pub const DIGEST_BYTES: usize = 32;
