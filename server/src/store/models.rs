//! Rows as the rest of the server sees them.

use protocol::ConversationStatus;

/// A website that embeds the widget.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Site {
    pub id: String,
    /// Public key in the embed tag (`data-site`).
    pub key: String,
    pub name: String,
    /// JSON array of exact origins.
    #[sqlx(rename = "allowed_origins")]
    pub allowed_origins_json: String,
    pub greeting: String,
    pub created_at: i64,
    /// The workspace that owns the site.
    pub workspace_id: String,
}

impl Site {
    /// Origins allowed to embed the widget and talk to the visitor socket.
    pub fn allowed_origins(&self) -> Vec<String> {
        serde_json::from_str(&self.allowed_origins_json).unwrap_or_default()
    }
}

/// A support agent.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Agent {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    /// The workspace whose conversations the agent sees.
    pub workspace_id: String,
}

/// A tenant: owns sites, agents and Messenger Pages.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Workspace {
    pub id: String,
    /// The name the CLI takes (`--workspace KEY`).
    pub key: String,
    pub name: String,
}

/// A connected Messenger Page as stored: its token only encrypted (see `messenger::pages`).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct PageRow {
    pub page_id: String,
    pub workspace_id: String,
    /// The site the Page serves; `None`: every site of the workspace without a Page of its own.
    pub site_id: Option<String>,
    pub username: Option<String>,
    pub token_nonce: Vec<u8>,
    pub token_ciphertext: Vec<u8>,
}

/// A person on the customer side.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Contact {
    pub id: String,
    pub site_id: String,
    pub label: String,
    pub page_url: Option<String>,
    pub referrer: Option<String>,
    pub user_agent: Option<String>,
    pub timezone: Option<String>,
    pub utc_offset_minutes: Option<i32>,
    pub language: Option<String>,
    pub psid: Option<String>,
    pub display_name: Option<String>,
    pub avatar_id: Option<String>,
    pub messenger_last_action_at: Option<i64>,
    pub messenger_last_message_at: Option<i64>,
}

/// What a contact's browser said about itself on connect.
#[derive(Clone, Debug, Default)]
pub struct ContactContext {
    pub page_url: Option<String>,
    pub referrer: Option<String>,
    pub user_agent: Option<String>,
    pub timezone: Option<String>,
    pub utc_offset_minutes: Option<i32>,
    pub language: Option<String>,
}

/// A conversation's state row.
#[derive(Clone, Debug)]
pub struct Conversation {
    pub id: String,
    pub site_id: String,
    pub contact_id: String,
    pub status: ConversationStatus,
    pub last_seq: u64,
    pub agent_read_seq: u64,
    pub visitor_read_seq: u64,
}

/// A conversation joined with what the inbox shows.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct SummaryRow {
    pub id: String,
    pub contact_id: String,
    pub site_key: String,
    pub site_name: String,
    pub label: String,
    pub status: String,
    pub last_message: Option<String>,
    pub last_activity_at: i64,
    pub unread: i64,
    pub last_seq: i64,
    pub visitor_read_seq: i64,
    pub page_url: Option<String>,
    pub referrer: Option<String>,
    pub user_agent: Option<String>,
    pub timezone: Option<String>,
    pub utc_offset_minutes: Option<i32>,
    pub language: Option<String>,
    pub psid: Option<String>,
    pub display_name: Option<String>,
    pub avatar_id: Option<String>,
    pub messenger_last_action_at: Option<i64>,
    pub messenger_last_message_at: Option<i64>,
}

/// A redeemed link token.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LinkRow {
    pub nonce: String,
    pub contact_id: String,
    pub code: String,
    pub expires_at: i64,
}

/// One queued send.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub conversation_id: String,
    pub message_id: Option<String>,
    pub psid: String,
    pub body: String,
    pub messaging_type: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    /// The attempt that holds this row's lease (`None` outside the outbox worker).
    pub lease_id: Option<String>,
}

/// A delivery that failed too often and waits for an operator.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct QuarantinedDelivery {
    pub id: i64,
    pub received_at: i64,
    pub attempts: i64,
    pub error: Option<String>,
}

/// A visitor or agent message, as the recap shows it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct RecentMessage {
    /// `visitor` or `agent`.
    pub author_role: String,
    pub author_name: Option<String>,
    pub body: String,
}
