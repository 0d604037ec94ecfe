//! Plain HTTP routes (everything that is not a WebSocket or the console): health, the chat frame page, and the
//! built front-end files. Each submodule owns its routes.

pub mod attachments;
pub mod frame;
pub mod health;
pub mod static_files;
