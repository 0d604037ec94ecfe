//! Files the emulator serves itself: customer attachments behind expiring URLs (like
//! Meta's CDN, so "download promptly" can be tested) and generated profile pictures.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::emulator::Emulator;
use crate::state::{Media, World};

/// A 48×48 PNG.
pub const SAMPLE_PNG: &[u8] = include_bytes!("../assets/sample.png");
/// A one-page PDF.
pub const SAMPLE_PDF: &[u8] = include_bytes!("../assets/sample.pdf");
/// 0.1 s of silence as WAV.
pub const SAMPLE_WAV: &[u8] = include_bytes!("../assets/sample.wav");

/// Routes under `/__emu/media` and `/__emu/pic`.
pub fn router() -> Router<Emulator> {
    Router::new().route("/__emu/media/{token}/{name}", get(media)).route("/__emu/pic/{file}", get(picture))
}

impl World {
    /// Registers a sample file for an attachment of `kind` and returns its expiring URL.
    pub fn add_media(&mut self, kind: &str) -> String {
        let (content_type, bytes, name) = match kind {
            "file" => ("application/pdf", SAMPLE_PDF, "sample.pdf"),
            "audio" => ("audio/wav", SAMPLE_WAV, "sample.wav"),
            "video" => ("video/mp4", SAMPLE_WAV, "sample.mp4"),
            _ => ("image/png", SAMPLE_PNG, "sample.png"),
        };
        let token = self.mint_token(12);
        let ttl_ms = i64::try_from(self.settings.attachment_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX / 4);
        let expires_at_ms = self.now_ms() + ttl_ms;
        self.media.insert(
            token.clone(),
            Media { content_type, bytes, expires_at_ms, fetches_left: self.settings.attachment_max_fetches },
        );
        // `oe` mimics the expiry parameter of Meta's CDN URLs (hex seconds).
        format!("{}/__emu/media/{token}/{name}?oe={:x}", self.base_url, expires_at_ms / 1000)
    }

    /// The profile picture URL of a customer.
    pub fn picture_url(&self, psid: &str) -> String {
        format!("{}/__emu/pic/{psid}.svg", self.base_url)
    }
}

async fn media(State(emulator): State<Emulator>, Path((token, _name)): Path<(String, String)>) -> Response {
    let found = emulator.with(|w| {
        let now = w.now_ms();
        let media = w.media.get_mut(&token)?;
        if now > media.expires_at_ms || media.fetches_left == Some(0) {
            return Some(Err(()));
        }
        if let Some(left) = media.fetches_left.as_mut() {
            *left -= 1;
        }
        Some(Ok((media.content_type, media.bytes)))
    });
    match found {
        Some(Ok((content_type, bytes))) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Some(Err(())) => (StatusCode::FORBIDDEN, "URL signature expired").into_response(),
        None => (StatusCode::NOT_FOUND, "Not found").into_response(),
    }
}

async fn picture(State(emulator): State<Emulator>, Path(file): Path<String>) -> Response {
    let psid = file.trim_end_matches(".svg");
    let user = emulator.with(|w| w.customer(psid).map(|c| c.user.clone()));
    let Some(user) = user else {
        return (StatusCode::NOT_FOUND, "Not found").into_response();
    };
    let svg = avatar_svg(&user.psid, &user.first_name, &user.last_name);
    ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
}

/// A round avatar with initials, its colour derived from the PSID.
pub fn avatar_svg(psid: &str, first_name: &str, last_name: &str) -> String {
    let hue = psid.bytes().fold(0u32, |acc, b| acc.wrapping_mul(31).wrapping_add(u32::from(b))) % 360;
    let initials: String =
        [first_name, last_name].iter().filter_map(|name| name.chars().next()).flat_map(char::to_uppercase).collect();
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96" viewBox="0 0 96 96"><circle cx="48" cy="48" r="48" fill="hsl({hue},55%,45%)"/><text x="48" y="60" font-family="sans-serif" font-size="36" fill="#fff" text-anchor="middle">{}</text></svg>"##,
        xml_escape(&initials)
    )
}

fn xml_escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avatar_escapes_initials() {
        let svg = avatar_svg("1", "<b", "&");
        assert!(svg.contains("&lt;&amp;"));
        assert!(!svg.contains("<b"));
    }
}
