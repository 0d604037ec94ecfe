//! The code under fuzz, for cargo-fuzz: the server's own parsing modules compiled from their source files (no
//! copies, and without the rest of the server, so a nightly sanitizer build stays small), and the target bodies
//! shared with the stable short run (`server/tests/support/fuzz_targets.rs`).

// The shared target bodies name these modules `parley::messenger::…`, as in the server crate.
extern crate self as parley;

#[path = "../../server/src/messenger/graph_types.rs"]
pub mod graph_types;
#[path = "../../server/src/messenger/link.rs"]
pub mod link;
#[path = "../../server/src/messenger/signature.rs"]
pub mod signature;

pub mod messenger {
    pub use crate::{graph_types, link, signature};
}

#[path = "../../server/tests/support/fuzz_targets.rs"]
pub mod targets;
