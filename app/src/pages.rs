//! One module per route: the login form, the inbox landing view and the conversation view.

pub mod conversation;
pub mod inbox;
pub mod login;
