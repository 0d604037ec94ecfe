//! The Graph API client: Send API (messages and sender actions) and the User Profile API.
//!
//! The base URL, version, page and token come from configuration, so tests point it at the sandbox. The page token
//! travels in the `Authorization` header, never in a URL (URLs end up in proxies' and servers' logs). Errors are
//! parsed from Meta's error body whatever the HTTP status, and sorted by what the outbox should do about them.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::config::MessengerSettings;
use crate::sentences;

/// A Graph API client for one Page.
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base: String,
    page_id: String,
    token: SecretString,
}

/// How a message is sent, under Messenger's window rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessagingType {
    /// Within 24 h of the customer's last action.
    Response,
    /// A human agent's reply from 24 h to 7 d (`MESSAGE_TAG` + `HUMAN_AGENT`).
    HumanAgent,
}

/// A Graph API failure, classified.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (code {code}{})", subcode.map(|s| format!("/{s}")).unwrap_or_default())]
pub struct GraphError {
    pub code: i64,
    pub subcode: Option<i64>,
    pub message: String,
    /// No HTTP answer at all (timeout, connection refused).
    pub transport: bool,
}

/// What to do after a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Try again later with backoff.
    Retry,
    /// The page token is invalid or revoked: stop sending until an operator fixes it (and retry then).
    TokenInvalid,
    /// Outside the messaging window: do not retry.
    OutsideWindow,
    /// The person cannot be reached (blocked the page, unknown PSID): do not retry.
    Unreachable,
    /// The request itself is wrong or not permitted: do not retry.
    Permanent,
    /// The call may have succeeded although it failed: retry only after checking for our echo.
    Ambiguous,
}

impl GraphError {
    fn transport(message: String) -> Self {
        Self { code: 0, subcode: None, message, transport: true }
    }

    pub fn disposition(&self) -> Disposition {
        if self.transport {
            return Disposition::Ambiguous;
        }
        match (self.code, self.subcode) {
            (1, Some(1_357_046)) => Disposition::Ambiguous,
            (190, _) => Disposition::TokenInvalid,
            (10, Some(2_018_278 | 2_018_065 | 2_534_022)) => Disposition::OutsideWindow,
            (10, Some(2_018_108)) | (551, _) | (200, Some(1_545_041)) | (100, Some(2_018_001)) => {
                Disposition::Unreachable
            }
            (613, Some(2_018_338)) => Disposition::Permanent,
            (1 | 2 | 4 | 17 | 32 | 341 | 613 | 1200 | 80001 | 80006, _) => Disposition::Retry,
            (code, _) if (500..600).contains(&code) => Disposition::Retry,
            _ => Disposition::Permanent,
        }
    }

    /// Plain words for agents.
    pub fn for_agents(&self) -> String {
        if self.subcode == Some(2_018_300) {
            return sentences::SEND_OTHER_INBOX.into();
        }
        match self.disposition() {
            Disposition::Retry | Disposition::Ambiguous => sentences::SEND_RETRYING.into(),
            Disposition::TokenInvalid => sentences::SEND_TOKEN_INVALID.into(),
            Disposition::OutsideWindow => sentences::SEND_WINDOW_CLOSED.into(),
            Disposition::Unreachable => sentences::SEND_UNREACHABLE.into(),
            Disposition::Permanent => sentences::send_refused(&self.message),
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    code: i64,
    error_subcode: Option<i64>,
}

#[derive(Deserialize)]
struct SendResponse {
    message_id: Option<String>,
}

/// A customer's public profile.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Profile {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub profile_pic: Option<String>,
}

impl GraphClient {
    pub fn new(settings: &MessengerSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs.max(1)))
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            http,
            base: format!("{}/{}", settings.graph_url.trim_end_matches('/'), settings.api_version),
            page_id: settings.page_id.clone(),
            token: settings.page_token.clone(),
        })
    }

    /// The same client speaking for another Page (same HTTP client, base URL and timeouts).
    pub fn for_page(&self, page_id: &str, token: SecretString) -> Self {
        Self { http: self.http.clone(), base: self.base.clone(), page_id: page_id.to_string(), token }
    }

    /// Sends a text message; returns Meta's message id.
    pub async fn send_text(
        &self,
        psid: &str,
        text: &str,
        kind: MessagingType,
        metadata: &str,
    ) -> Result<String, GraphError> {
        let mut body = serde_json::json!({
            "recipient": { "id": psid },
            "message": { "text": text, "metadata": metadata },
        });
        match kind {
            MessagingType::Response => body["messaging_type"] = "RESPONSE".into(),
            MessagingType::HumanAgent => {
                body["messaging_type"] = "MESSAGE_TAG".into();
                body["tag"] = "HUMAN_AGENT".into();
            }
        }
        let response: SendResponse = self.post(&format!("{}/messages", self.page_id), &body).await?;
        response.message_id.ok_or_else(|| GraphError {
            code: 1,
            subcode: None,
            message: "no message_id in reply".into(),
            transport: false,
        })
    }

    /// `typing_on`, `typing_off` or `mark_seen`.
    pub async fn sender_action(&self, psid: &str, action: &str) -> Result<(), GraphError> {
        let body = serde_json::json!({ "recipient": { "id": psid }, "sender_action": action });
        let _: serde_json::Value = self.post(&format!("{}/messages", self.page_id), &body).await?;
        Ok(())
    }

    /// The customer's name and picture (empty when the person does not allow it).
    pub async fn profile(&self, psid: &str) -> Result<Profile, GraphError> {
        let url = format!("{}/{psid}", self.base);
        let request = self
            .http
            .get(url)
            .query(&[("fields", "first_name,last_name,profile_pic")])
            .bearer_auth(self.token.expose_secret());
        Self::parse(request.send().await).await
    }

    /// Downloads an attachment (its URL expires, so this runs as soon as it arrives).
    pub async fn download(&self, url: &str, max_bytes: usize) -> Result<(Vec<u8>, Option<String>), GraphError> {
        let response =
            self.http.get(url).send().await.map_err(|e| GraphError::transport(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(GraphError {
                code: i64::from(response.status().as_u16()),
                subcode: None,
                message: format!("attachment download failed with HTTP {}", response.status()),
                transport: false,
            });
        }
        let content_type =
            response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let bytes = response.bytes().await.map_err(|e| GraphError::transport(e.without_url().to_string()))?;
        if bytes.len() > max_bytes {
            return Err(GraphError {
                code: 100,
                subcode: None,
                message: "attachment too large".into(),
                transport: false,
            });
        }
        Ok((bytes.to_vec(), content_type))
    }

    async fn post<T: for<'de> Deserialize<'de>>(&self, path: &str, body: &serde_json::Value) -> Result<T, GraphError> {
        let request =
            self.http.post(format!("{}/{path}", self.base)).bearer_auth(self.token.expose_secret()).json(body);
        Self::parse(request.send().await).await
    }

    async fn parse<T: for<'de> Deserialize<'de>>(result: reqwest::Result<reqwest::Response>) -> Result<T, GraphError> {
        // `without_url`: the URL carries the access token and must not reach a log.
        let response = result.map_err(|e| GraphError::transport(e.without_url().to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| GraphError::transport(e.without_url().to_string()))?;
        if let Ok(ErrorBody { error }) = serde_json::from_str::<ErrorBody>(&text) {
            return Err(GraphError {
                code: error.code,
                subcode: error.error_subcode,
                message: error.message,
                transport: false,
            });
        }
        if !status.is_success() {
            return Err(GraphError {
                code: i64::from(status.as_u16()),
                subcode: None,
                message: format!("HTTP {status}"),
                transport: false,
            });
        }
        serde_json::from_str(&text).map_err(|e| GraphError {
            code: 1,
            subcode: Some(1_357_046),
            message: format!("invalid JSON reply: {e}"),
            transport: false,
        })
    }
}

impl GraphClient {
    /// Sends a question with quick-reply buttons `(title, payload)` (as a `RESPONSE`); returns Meta's message id.
    pub async fn send_quick_replies(
        &self,
        psid: &str,
        text: &str,
        replies: &[(&str, &str)],
    ) -> Result<String, GraphError> {
        let quick_replies: Vec<serde_json::Value> = replies
            .iter()
            .map(|(title, payload)| serde_json::json!({ "content_type": "text", "title": title, "payload": payload }))
            .collect();
        let mut body = serde_json::json!({
            "recipient": { "id": psid },
            "messaging_type": "RESPONSE",
            "message": { "text": text },
        });
        if !quick_replies.is_empty() {
            body["message"]["quick_replies"] = quick_replies.into();
        }
        let response: SendResponse = self.post(&format!("{}/messages", self.page_id), &body).await?;
        Ok(response.message_id.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: i64, subcode: Option<i64>) -> GraphError {
        GraphError { code, subcode, message: "x".into(), transport: false }
    }

    #[test]
    fn errors_are_sorted_by_what_to_do() {
        for code in [1, 2, 4, 17, 32, 613, 1200, 80006, 503] {
            assert_eq!(err(code, None).disposition(), Disposition::Retry, "{code}");
        }
        assert_eq!(err(1, Some(1_357_046)).disposition(), Disposition::Ambiguous);
        assert_eq!(err(190, Some(460)).disposition(), Disposition::TokenInvalid);
        assert_eq!(err(10, Some(2_018_278)).disposition(), Disposition::OutsideWindow);
        assert_eq!(err(551, Some(1_545_041)).disposition(), Disposition::Unreachable);
        assert_eq!(err(100, Some(2_018_001)).disposition(), Disposition::Unreachable);
        assert_eq!(err(100, None).disposition(), Disposition::Permanent);
        assert_eq!(err(613, Some(2_018_338)).disposition(), Disposition::Permanent);
        assert_eq!(GraphError::transport("timeout".into()).disposition(), Disposition::Ambiguous);
    }
}
