//! Reading netfold's log for people: the audit trail, the state at any point, provenance
//! ("why is VLAN 120 on port tor1:eth3?"), differences between two points, and verification.
//!
//! Layout:
//! - [`history`]: opening a data directory read-only-in-spirit and folding it to a point.
//! - [`audit`]: events as lines, human or JSON, with filters.
//! - [`point`]: points in history (`--at 1234` or a time).
//!
//! Nothing here touches live switches or hypervisors.

pub mod audit;
pub mod point;

pub use point::Point;
