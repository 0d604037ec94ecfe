//! The console's encoding for its server functions' answers and errors and for the data its blocking resources
//! carry from the server-rendered page into hydration: JSON, written by serde on the server and read in the browser
//! by hand ([`FromJson`], with [`protocol::json`] and the readers of [`protocol::decode`]).
//!
//! Why not leptos' `Json` / `JsonSerdeCodec`: reading through serde_json's `Deserializer` links serde's error
//! machinery and a float formatter into the console's Wasm for data that has no floats (over 50 KB before
//! optimisation). The JSON on the wire is unchanged: the same `application/json` bodies, the same serde shapes
//! (`Result` as `{"Ok":…}` / `{"Err":…}`, unit enum variants as strings).

use leptos::server::codee;
use leptos::server_fn::{Bytes, ContentType, Decodes, Encodes, Format, FormatType};
use protocol::console::AgentInfo;
use protocol::json::Value;
use serde::Serialize;

/// Encodes with serde_json, decodes with [`FromJson`].
pub struct ConsoleJson;

/// A value read back from the JSON serde wrote for it; `None` when the JSON does not have its shape.
pub trait FromJson: Sized {
    fn from_json(v: &Value) -> Option<Self>;
}

/// The JSON was not what the server writes.
#[derive(Debug)]
pub struct Malformed;

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed answer from the server")
    }
}

/// Parses and reads `bytes` as a `T`.
pub fn read<T: FromJson>(bytes: &[u8]) -> Result<T, Malformed> {
    std::str::from_utf8(bytes).ok().and_then(protocol::json::parse).as_ref().and_then(T::from_json).ok_or(Malformed)
}

impl ContentType for ConsoleJson {
    const CONTENT_TYPE: &'static str = "application/json";
}

impl FormatType for ConsoleJson {
    const FORMAT_TYPE: Format = Format::Text;
}

impl<T: Serialize> Encodes<T> for ConsoleJson {
    type Error = serde_json::Error;

    fn encode(output: &T) -> Result<Bytes, Self::Error> {
        serde_json::to_vec(output).map(Bytes::from)
    }
}

impl<T: FromJson> Decodes<T> for ConsoleJson {
    type Error = Malformed;

    fn decode(bytes: Bytes) -> Result<T, Self::Error> {
        read(&bytes)
    }
}

impl<T: Serialize> codee::Encoder<T> for ConsoleJson {
    type Error = serde_json::Error;
    type Encoded = String;

    fn encode(val: &T) -> Result<String, Self::Error> {
        serde_json::to_string(val)
    }
}

impl<T: FromJson> codee::Decoder<T> for ConsoleJson {
    type Error = Malformed;
    type Encoded = str;

    fn decode(val: &str) -> Result<T, Self::Error> {
        read(val.as_bytes())
    }
}

/// `()` is written as `null`.
impl FromJson for () {
    fn from_json(v: &Value) -> Option<Self> {
        v.is_null().then_some(())
    }
}

/// `None` is written as `null`.
impl FromJson for Option<AgentInfo> {
    fn from_json(v: &Value) -> Option<Self> {
        if v.is_null() { Some(None) } else { protocol::decode::agent_info(v).map(Some) }
    }
}

/// serde's externally tagged `Result`: an object with the one key `Ok` or `Err`.
impl<T: FromJson, E: FromJson> FromJson for Result<T, E> {
    fn from_json(v: &Value) -> Option<Self> {
        let o = v.as_object()?;
        if o.len() != 1 {
            return None;
        }
        match (o.get("Ok"), o.get("Err")) {
            (Some(ok), _) => T::from_json(ok).map(Ok),
            (_, Some(err)) => E::from_json(err).map(Err),
            _ => None,
        }
    }
}
