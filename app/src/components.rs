//! Building blocks of the signed-in console, each reading the [`Live`](crate::live::Live) store from context.

pub mod composer;
pub mod connection_banner;
pub mod conversation_list;
pub mod message_log;
pub mod messenger_window;
pub mod visitor_details;
