//! The chat panel's views. They only read [`crate::session::Ui`] signals and call [`crate::session::Session`]
//! methods from event handlers; all protocol and state rules live outside the views.

pub mod composer;
pub mod message_list;
pub mod messenger;
pub mod panel;
