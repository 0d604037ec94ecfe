//! Integration tests of the Messenger sandbox: the emulator on port 0 plus a small axum
//! receiver on port 0 that verifies signatures and records webhooks.

mod helpers;

mod faults;
mod graph_misc;
mod referrals;
mod send_validation;
mod webhooks;
mod windows;
