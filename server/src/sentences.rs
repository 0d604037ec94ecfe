//! Sentences people read that the server writes on its own: what agents see when a reply cannot go to Messenger,
//! what the Page says to a customer (the consent question, notices, the recap when a conversation moves there)
//! and the names Parley gives authors it cannot name otherwise. Kept here, in plain Rust, rather than inside SQL
//! or spread through the code, so they are reviewed (and one day translated) in one place.

/// Shown to agents under a reply that was not mirrored: the 24 h window closed (no HUMAN_AGENT feature).
pub const NOT_SENT_AFTER_24H: &str =
    "Not sent to Messenger: more than 24 hours since the customer last wrote there. They must write first.";

/// Shown to agents under a reply that was not mirrored: even the 7-day HUMAN_AGENT window closed.
pub const NOT_SENT_AFTER_7D: &str =
    "Not sent to Messenger: more than 7 days since the customer last wrote there. They must write first.";

/// Shown to agents when the Graph API handed the thread to another inbox (handover protocol).
pub const SEND_OTHER_INBOX: &str =
    "Not sent to Messenger: another inbox (such as Meta Business Suite) controls this conversation now.";
/// Shown to agents while a send is being retried.
pub const SEND_RETRYING: &str = "Messenger is not answering; Parley keeps trying.";
/// The console alert (and the send's state) while the Page token does not work.
/// Shown to agents when the conversation's site has no Messenger Page any more (it was disconnected).
pub const SEND_NO_PAGE: &str = "Not sent to Messenger: no Facebook Page is connected to this site any more.";
pub const SEND_TOKEN_INVALID: &str = "The Facebook Page token is invalid or revoked; an admin must renew it.";
/// Shown to agents when Messenger itself says the window closed.
pub const SEND_WINDOW_CLOSED: &str = "Not sent to Messenger: the customer must write first (window closed).";
/// Shown to agents when the customer cannot receive messages from the Page (blocked it, or gone).
pub const SEND_UNREACHABLE: &str = "Not sent to Messenger: the customer can't receive messages from the Page.";

/// Shown to agents when Messenger refused a send for a reason of its own (its message, verbatim).
pub fn send_refused(graph_message: &str) -> String {
    format!("Messenger refused the message: {graph_message}")
}

/// What the Page asks when someone presents a link.
pub const CONSENT_QUESTION: &str = "You opened a link to continue a chat from our website here. Continue that \
    conversation in Messenger? Only say yes if you asked for this link yourself.";
/// Title of the quick reply that binds a Messenger thread to the web conversation.
pub const CONSENT_YES: &str = "Yes, continue here";
/// Title of the quick reply that refuses.
pub const CONSENT_NO: &str = "No";
/// The Page's answer to "No".
pub const LINK_REFUSED: &str = "OK, nothing was linked. You can go on chatting on the website.";
/// The Page's answer to "Yes" on an offer that is gone.
pub const LINK_EXPIRED: &str = "That link has expired. Please ask for a new one on the website.";

/// The body of a Messenger message with nothing Parley can show.
pub const UNSUPPORTED_MESSAGE: &str = "[unsupported message]";
/// The author of a reply written in the Page's own inbox (Meta Business Suite).
pub const PAGE_INBOX: &str = "Page inbox";
/// The author of a reply the Page sent from another app.
pub const PAGE: &str = "Page";

/// The first line of the recap sent when a conversation moves to Messenger.
pub const RECAP_HEADER: &str = "Here's where we left off on the website:\n";

/// How the recap names the customer.
pub const RECAP_CUSTOMER: &str = "You";

/// How the recap names an agent whose name is unknown.
pub const RECAP_US: &str = "Us";

/// Longest line of the recap (in characters) and the longest recap (Messenger allows 2,000).
const RECAP_LINE_CHARS: usize = 200;
const RECAP_CHARS: usize = 1900;

/// One message as the recap shows it.
pub struct RecapLine<'a> {
    pub from_customer: bool,
    /// The agent's name, for agent messages.
    pub agent_name: Option<&'a str>,
    pub body: &'a str,
}

/// The recap of the last messages (oldest first), or `None` when there is nothing to recap.
pub fn recap<'a>(lines: impl IntoIterator<Item = RecapLine<'a>>) -> Option<String> {
    let mut text = String::from(RECAP_HEADER);
    let mut any = false;
    for line in lines {
        any = true;
        let who = match (line.from_customer, line.agent_name) {
            (true, _) => RECAP_CUSTOMER,
            (false, Some(name)) => name,
            (false, None) => RECAP_US,
        };
        let body: String = line.body.chars().take(RECAP_LINE_CHARS).collect();
        text.push_str(&format!("\n{who}: {body}"));
    }
    any.then(|| text.chars().take(RECAP_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recap_names_the_customer_and_agents_and_stays_within_messenger_limits() {
        let long = "é".repeat(500);
        let lines = [
            RecapLine { from_customer: true, agent_name: None, body: "Hi" },
            RecapLine { from_customer: false, agent_name: Some("Alex"), body: "Hello" },
            RecapLine { from_customer: false, agent_name: None, body: &long },
        ];
        let text = recap(lines).expect("a recap");
        assert!(text.starts_with(RECAP_HEADER));
        assert!(text.contains("\nYou: Hi") && text.contains("\nAlex: Hello") && text.contains("\nUs: é"));
        assert!(!text.contains(&"é".repeat(201)), "a line is cut at 200 characters");
        let many = (0..20).map(|_| RecapLine { from_customer: true, agent_name: None, body: &long });
        assert_eq!(recap(many).expect("a recap").chars().count(), 1900);
    }

    #[test]
    fn nothing_to_recap_is_no_recap() {
        assert_eq!(recap([]), None);
    }
}
