//! Graph API error shapes and the codes the emulator returns.
//!
//! Every Graph failure is a [`GraphError`] rendered as Meta does (§7 of the platform notes):
//! `{"error":{"message","type":"OAuthException","code","error_subcode","fbtrace_id"}}`,
//! HTTP 400 unless a fault asks for a 5xx. Invalid tokens also carry `WWW-Authenticate`.
//! The constructors name the situations; handlers never build codes by hand.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Value, json};

/// A Graph API error as the emulator returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphError {
    /// HTTP status (400 for API errors, 5xx for injected server faults).
    pub status: StatusCode,
    /// `error.code`.
    pub code: i64,
    /// `error.error_subcode`, when Meta sets one.
    pub subcode: Option<i64>,
    /// `error.message`.
    pub message: String,
    /// `error.is_transient`, set on temporary failures.
    pub transient: bool,
    /// Add `WWW-Authenticate: OAuth "Facebook Platform" "invalid_token" …`.
    pub invalid_token: bool,
    /// Add an `X-Business-Use-Case-Usage` header (throttling errors).
    pub business_usage: Option<Value>,
    /// Send this raw text body instead of JSON (e.g. a proxy's 502 page).
    pub raw_body: Option<&'static str>,
}

impl GraphError {
    fn new(code: i64, subcode: Option<i64>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            subcode,
            message: message.into(),
            transient: false,
            invalid_token: false,
            business_usage: None,
            raw_body: None,
        }
    }

    /// Any code/subcode/message (used by the `custom` fault).
    pub fn custom(status: StatusCode, code: i64, subcode: Option<i64>, message: String) -> Self {
        Self { status, ..Self::new(code, subcode, message) }
    }

    /// 190: missing or unparseable token.
    pub fn token_missing() -> Self {
        Self {
            invalid_token: true,
            ..Self::new(190, None, "An active access token must be used to query information about the current user.")
        }
    }

    /// 190: a token the emulator does not know.
    pub fn token_invalid() -> Self {
        Self { invalid_token: true, ..Self::new(190, None, "Invalid OAuth access token - Cannot parse access token") }
    }

    /// 190/460: the token was revoked (stays so until restored).
    pub fn token_revoked() -> Self {
        Self {
            invalid_token: true,
            ..Self::new(
                190,
                Some(460),
                "Error validating access token: The session has been invalidated because the user changed their password or Facebook has changed the session for security reasons.",
            )
        }
    }

    /// 100: a bad or missing `appsecret_proof`.
    pub fn bad_appsecret_proof() -> Self {
        Self::new(100, None, "Invalid appsecret_proof provided in the API argument")
    }

    /// 100: invalid parameter.
    pub fn param(message: impl Into<String>) -> Self {
        Self::new(100, None, format!("(#100) {}", message.into()))
    }

    /// 100 with a subcode.
    pub fn param_sub(subcode: i64, message: impl Into<String>) -> Self {
        Self::new(100, Some(subcode), format!("(#100) {}", message.into()))
    }

    /// 100/33: the node does not exist or the token cannot see it.
    pub fn unsupported(method: &str, id: &str) -> Self {
        Self::new(
            100,
            Some(33),
            format!(
                "Unsupported {method} request. Object with ID '{id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation."
            ),
        )
    }

    /// 100: unknown edge.
    pub fn unknown_path(path: &str) -> Self {
        Self::new(100, None, format!("Unknown path components: {path}"))
    }

    /// 100/2018001: unknown PSID for this Page.
    pub fn no_matching_user() -> Self {
        Self::param_sub(2018001, "No matching user found")
    }

    /// 100/2018014: `sender_action` together with `message`.
    pub fn sender_action_with_message() -> Self {
        Self::param_sub(2018014, "Cannot send sender_action with message or other fields")
    }

    /// 100/2018008: the attachment URL could not be fetched.
    pub fn attachment_unreachable() -> Self {
        Self::param_sub(2018008, "Failed to fetch the file from the url")
    }

    /// 100/2018218: Profile API on a phone-number-only account.
    pub fn no_profile() -> Self {
        Self::param_sub(2018218, "No profile available for this user.")
    }

    /// 100/2018247: profile fields without permission.
    pub fn profile_field_permission(field: &str) -> Self {
        Self::param_sub(2018247, format!("Insufficient permission to access user profile field: {field}"))
    }

    /// 551/1545041: the person blocked the Page or is unavailable.
    pub fn user_unavailable() -> Self {
        Self::new(551, Some(1545041), "This person isn't available right now.")
    }

    /// 10/2018108: the person never messaged the Page.
    pub fn cannot_receive() -> Self {
        Self::new(10, Some(2018108), "(#10) This person isn't receiving messages from you right now.")
    }

    /// 10/2018278: outside the allowed window.
    pub fn outside_window() -> Self {
        Self::new(
            10,
            Some(2018278),
            "(#10) This message is sent outside of allowed window. Learn more about the new policy here: https://developers.facebook.com/docs/messenger-platform/policy-overview",
        )
    }

    /// 10 without subcode: the app lacks a permission or feature.
    pub fn permission(message: impl Into<String>) -> Self {
        Self::new(10, None, format!("(#10) {}", message.into()))
    }

    /// 10/2018300: another app controls the thread (Conversation Routing).
    pub fn thread_owned_by_other_app() -> Self {
        Self::new(10, Some(2018300), "(#10) Another app is controlling this thread now.")
    }

    /// 1200: temporary send failure.
    pub fn temporary_send_failure() -> Self {
        Self {
            transient: true,
            ..Self::new(1200, None, "(#1200) Temporary send message failure. Please try again later")
        }
    }

    /// 2: service temporarily unavailable.
    pub fn service_unavailable() -> Self {
        Self {
            transient: true,
            ..Self::new(2, None, "An unexpected error has occurred. Please retry your request later.")
        }
    }

    /// 1/99: unknown error.
    pub fn unknown_error() -> Self {
        Self { transient: true, ..Self::new(1, Some(99), "An unknown error occurred") }
    }

    /// 1/1357046: the message may have been sent anyway.
    pub fn invalid_json_reply() -> Self {
        Self::new(1, Some(1357046), "Received Invalid JSON reply.")
    }

    /// 613 or 80006 (or another throttling code) with `X-Business-Use-Case-Usage`.
    pub fn rate_limited(code: i64, page_id: &str) -> Self {
        let (subcode, message) = match code {
            613 => (
                Some(2534040),
                "(#613) Calls to this api have exceeded the rate limit.".to_owned(),
            ),
            80006 => (
                None,
                "(#80006) There have been too many messages sent to this Messenger account. Please wait a while before retrying.".to_owned(),
            ),
            other => (None, format!("(#{other}) Application request limit reached")),
        };
        let usage = json!({ page_id: [{
            "type": "messenger",
            "call_count": 100,
            "total_cputime": 25,
            "total_time": 25,
            "estimated_time_to_regain_access": 1
        }]});
        Self { transient: true, business_usage: Some(usage), ..Self::new(code, subcode, message) }
    }

    /// An injected 5xx. 502 comes back as a proxy's HTML page, the others as JSON.
    pub fn server_error(status: u16) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let raw_body =
            (status == StatusCode::BAD_GATEWAY).then_some("<html><body><h1>502 Bad Gateway</h1></body></html>");
        let mut error =
            if status == StatusCode::SERVICE_UNAVAILABLE { Self::service_unavailable() } else { Self::unknown_error() };
        error.status = status;
        error.raw_body = raw_body;
        error
    }

    /// The JSON body, with a fresh `fbtrace_id`.
    pub fn body(&self) -> Value {
        let mut error = json!({
            "message": self.message,
            "type": "OAuthException",
            "code": self.code,
            "fbtrace_id": fbtrace_id(),
        });
        if let Some(subcode) = self.subcode {
            error["error_subcode"] = json!(subcode);
        }
        if self.transient {
            error["is_transient"] = json!(true);
        }
        json!({ "error": error })
    }
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let mut response = match self.raw_body {
            Some(text) => (self.status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], text).into_response(),
            None => (self.status, axum::Json(self.body())).into_response(),
        };
        let headers = response.headers_mut();
        if self.invalid_token {
            let value = format!("OAuth \"Facebook Platform\" \"invalid_token\" \"{}\"", self.message.replace('"', "'"));
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
        }
        if let Some(usage) = &self.business_usage
            && let Ok(value) = HeaderValue::from_str(&usage.to_string())
        {
            headers.insert(HeaderName::from_static("x-business-use-case-usage"), value);
        }
        response
    }
}

/// A test-control operation that cannot be done (HTTP 404/400/409 on `/__emu/…`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    /// No customer with this PSID.
    #[error("no customer with PSID {0}")]
    UnknownUser(String),
    /// No message with this mid in the thread.
    #[error("no message {0} in this thread")]
    UnknownMessage(String),
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The action is not possible in the current state (blocked, no Get Started…).
    #[error("{0}")]
    Conflict(String),
    /// Waiting for a condition timed out.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let status = match self {
            ControlError::UnknownUser(_) | ControlError::UnknownMessage(_) => StatusCode::NOT_FOUND,
            ControlError::Invalid(_) => StatusCode::BAD_REQUEST,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
        };
        (status, axum::Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// A random trace id like Meta's (`A…` plus 22 url-safe characters).
fn fbtrace_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut rng = rand::rng();
    (0..23).map(|i| if i == 0 { 'A' } else { char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]) }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_meta_shape() {
        let body = GraphError::outside_window().body();
        let error = &body["error"];
        assert_eq!(error["type"], "OAuthException");
        assert_eq!(error["code"], 10);
        assert_eq!(error["error_subcode"], 2018278);
        assert!(error["fbtrace_id"].as_str().is_some_and(|s| s.len() == 23));
    }

    #[test]
    fn plain_param_error_has_no_subcode() {
        let body = GraphError::param("param recipient must be non-empty.").body();
        assert!(body["error"].get("error_subcode").is_none());
        assert_eq!(body["error"]["code"], 100);
    }
}
