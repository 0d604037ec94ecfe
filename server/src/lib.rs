//! Parley's server library. `main.rs` only parses the command line and calls [`cli::run`]; tests build the app
//! with [`startup::Application`] on a listener bound to port 0.

pub mod accept;
pub mod assets;
pub mod auth;
pub mod cli;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod console;
pub mod demo;
pub mod error;
pub mod http;
pub mod hub;
pub mod identity;
pub mod messenger;
pub mod meters;
pub mod nodes;
pub mod sentences;
pub mod services;
pub mod signin;
pub mod startup;
pub mod state;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod tenancy;
pub mod useragent;
pub mod ws;
