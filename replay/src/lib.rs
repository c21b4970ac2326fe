//! Reading netfold's log for people: the audit trail, the state at any point, provenance
//! ("why is VLAN 120 on port tor1:eth3?"), differences between two points, and verification.
//!
//! Layout:
//! - [`history`]: opening a data directory and folding it to any point; `why` and `diff`.
//! - [`audit`]: events as lines, human or JSON, with filters.
//! - [`verify`]: hash chain, decodability and replay determinism.
//! - [`point`]: points in history (`--at 1234` or a time).
//!
//! Nothing here touches live switches or hypervisors; the binary only prints what this returns.

pub mod audit;
mod error;
pub mod history;
pub mod point;
pub mod verify;

pub use error::{Error, Result};
pub use history::History;
pub use point::Point;
