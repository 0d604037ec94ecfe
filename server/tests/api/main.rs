//! Server integration tests: one binary, each test boots the real app on port 0 with its own temporary SQLite
//! database and drives it with real WebSocket clients (tokio-tungstenite) and HTTP.

mod helpers;

mod accept;
mod agent_ws;
mod db_copy;
mod floods;
mod http;
mod identity;
mod liveness;
mod messenger;
mod messenger_ack;
mod messenger_chaos;
mod messenger_intake;
mod messenger_lookup;
mod messenger_order;
mod messenger_pages;
mod nodes;
mod ops;
mod outbox;
mod pongs;
mod supervision;
mod tenancy;
mod visitor_session;
mod visitor_ws;
