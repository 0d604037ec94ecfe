//! Parley's agent console (placeholder until the console lands).
#[cfg(feature = "ssr")]
pub mod backend;
