//! The one path every metadata change takes: a [`MetaRecord`] handed to a
//! [`MetadataStore`], which persists it and applies it to its [`MetaImage`]. The broker's
//! in-memory registries change only after `append` succeeds (or are put back when it
//! fails), so what a client was told and what a restart rebuilds agree.

use super::image::{MetaImage, MetaRecord};
use crate::error::Result;

/// Durable, ordered metadata records over an image. Today's implementation is the local
/// JSON log ([`super::LocalMetadataLog`]); the cluster's will be a Raft log. Every
/// implementation must pass [`super::conformance`].
///
/// The contract:
/// - `append` is all or nothing: `Ok` means the record is persisted (fsynced when
///   `durable`) and applied to `image()`; `Err` means the image is unchanged and a reopen
///   will not show the record (a half-written record is cut off or ignored).
/// - Records are applied in append order, and reopening the same store yields the image
///   the last successful append left, whether or not `compact` ran in between.
/// - `compact` (a snapshot) changes how the state is stored, never the image.
pub trait MetadataStore: Send + std::fmt::Debug {
    /// The current state: every successful append applied in order.
    fn image(&self) -> &MetaImage;

    /// Persists `r` and applies it to the image; see the trait's contract.
    fn append(&mut self, r: MetaRecord, durable: bool) -> Result<()>;

    /// Stores the image compactly (a snapshot), dropping the records it covers.
    fn compact(&mut self) -> Result<()>;

    /// Durable appends so far (each fsynced before it returned).
    fn durable_appends(&self) -> u64 {
        0
    }
}
