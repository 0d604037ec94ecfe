//! Tiny browser helpers shared by the Wasm-only modules: wall clock, randomness, local UTC offset, console warnings.

/// Epoch milliseconds.
pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

/// Fills `buf` from `crypto.getRandomValues`, falling back to `Math.random` where Web Crypto is unavailable.
pub fn random_fill(buf: &mut [u8]) {
    let ok =
        web_sys::window().and_then(|w| w.crypto().ok()).is_some_and(|c| c.get_random_values_with_u8_array(buf).is_ok());
    if !ok {
        for b in buf.iter_mut() {
            *b = (js_sys::Math::random() * 256.0) as u8;
        }
    }
}

pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    random_fill(&mut b);
    u32::from_le_bytes(b)
}

/// 128 random bits as 32 hex characters: a valid, unguessable client id.
pub fn new_client_id() -> String {
    let mut b = [0u8; 16];
    random_fill(&mut b);
    crate::state::hex_id(&b)
}

/// Minutes to add to UTC to get local time at instant `epoch_ms` (DST-aware).
pub fn utc_offset_minutes(epoch_ms: i64) -> i32 {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(epoch_ms as f64));
    -(d.get_timezone_offset() as i32)
}

pub fn warn(msg: &str) {
    web_sys::console::warn_1(&msg.into());
}
