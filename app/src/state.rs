//! The console's client-side state as plain data: the inbox, the opened conversations' event logs, the outbox of
//! replies waiting for their ack, and who is typing.
//!
//! Everything here is pure and synchronous so it can be unit-tested without a browser: [`ConsoleState`] takes
//! [`ServerMsg`]s and user intents, and answers with the [`ClientMsg`]s that should go on the wire. It owns the
//! ordering rules (events applied strictly in `seq` order, duplicates dropped, gaps buffered and resynced) and the
//! reply lifecycle (Sending → Sent → Seen, re-sent with the same client id after a reconnect). It must not touch
//! the DOM, timers or the socket; `live.rs` does that.

mod thread;

use std::collections::HashMap;

use protocol::console::{AgentInfo, ClientMsg, ConversationSummary, ServerMsg};
use protocol::{Author, Channel, ConversationStatus, ErrorCode, Event};

pub use thread::{ChannelDelivery, Delivery, Entry, Outgoing, Thread, channel_name};

/// Everything the console shows, as plain data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsoleState {
    pub agent: Option<AgentInfo>,
    /// Most recent activity first.
    pub conversations: Vec<ConversationSummary>,
    /// Whether `conversations` came from the socket (then server-rendered snapshots must not overwrite it).
    inbox_live: bool,
    pub threads: HashMap<String, Thread>,
    pub outbox: Vec<Outgoing>,
    /// The conversation on screen, whose events the socket streams.
    pub current: Option<String>,
    /// Conversations whose visitor is typing, with a generation number so a stale timeout can't clear a newer signal.
    typing: HashMap<String, u64>,
    typing_generation: u64,
    /// Highest `Read` sent per conversation.
    read_sent: HashMap<String, u64>,
    /// Whether the last connection attempt was refused for a bad session.
    pub signed_out: bool,
    /// A problem to show in the conversation view (e.g. "conversation not found").
    pub notice: Option<String>,
    /// Banners every agent must see (e.g. the Facebook Page token stopped working), by key.
    pub alerts: Vec<(String, String)>,
}

impl ConsoleState {
    /// Seeds the inbox from the server-rendered snapshot, unless the socket already delivered a newer one.
    pub fn seed_inbox(&mut self, agent: AgentInfo, conversations: Vec<ConversationSummary>) {
        if self.agent.is_none() {
            self.agent = Some(agent);
        }
        if !self.inbox_live {
            self.conversations = conversations;
            sort(&mut self.conversations);
        }
    }

    /// Seeds one conversation from the server-rendered snapshot (idempotent: already applied events are skipped).
    pub fn seed_conversation(&mut self, summary: ConversationSummary, events: Vec<Event>) -> Vec<ClientMsg> {
        let id = summary.id.clone();
        self.upsert_if_newer(summary);
        self.apply_events(&id, events)
    }

    /// Shows a conversation: remembers it as current and asks the socket for its events after what is known.
    /// Returns the frames to send (a `Close` for the previous one, then the `Open`).
    pub fn open(&mut self, id: &str) -> Vec<ClientMsg> {
        if self.current.as_deref() == Some(id) {
            return Vec::new();
        }
        let mut out = self.close();
        self.current = Some(id.to_owned());
        let thread = self.threads.entry(id.to_owned()).or_default();
        out.push(ClientMsg::Open { conversation_id: id.to_owned(), since_seq: thread.last_seq });
        out
    }

    /// Leaves the current conversation.
    pub fn close(&mut self) -> Vec<ClientMsg> {
        match self.current.take() {
            Some(id) => vec![ClientMsg::Close { conversation_id: id }],
            None => Vec::new(),
        }
    }

    /// What to send right after the socket (re)connects: re-open the current conversation after its last applied
    /// seq, and re-send every unacked reply with its original client id (the server makes that idempotent).
    pub fn on_connected(&mut self) -> Vec<ClientMsg> {
        self.signed_out = false;
        let mut out = Vec::new();
        if let Some(id) = &self.current {
            let since_seq = self.threads.get(id).map_or(0, |t| t.last_seq);
            out.push(ClientMsg::Open { conversation_id: id.clone(), since_seq });
        }
        // The server may have forgotten the read cursor we sent while the socket died.
        self.read_sent.clear();
        for o in &self.outbox {
            if o.seq.is_none() && o.failed.is_none() {
                out.push(ClientMsg::Send {
                    conversation_id: o.conversation_id.clone(),
                    client_id: o.client_id.clone(),
                    body: o.body.clone(),
                });
            }
        }
        out
    }

    /// Applies one frame from the server; returns frames to send in answer (a re-`Open` when a gap is detected).
    pub fn apply(&mut self, msg: ServerMsg) -> Vec<ClientMsg> {
        match msg {
            ServerMsg::Inbox { agent, conversations } => {
                self.agent = Some(agent);
                self.conversations = conversations;
                self.inbox_live = true;
                sort(&mut self.conversations);
                Vec::new()
            }
            ServerMsg::Summary { conversation } => {
                self.upsert(conversation);
                Vec::new()
            }
            ServerMsg::History { conversation_id, events, last_seq: _ } => self.apply_events(&conversation_id, events),
            ServerMsg::Event { conversation_id, event } => self.apply_events(&conversation_id, vec![event]),
            ServerMsg::Typing { conversation_id, typing } => {
                if typing {
                    self.typing_generation += 1;
                    self.typing.insert(conversation_id, self.typing_generation);
                } else {
                    self.typing.remove(&conversation_id);
                }
                Vec::new()
            }
            ServerMsg::Ack { conversation_id, client_id, message_id: _, seq } => {
                let committed = self.threads.get(&conversation_id).is_some_and(|t| t.holds_client_id(&client_id));
                if committed {
                    self.outbox.retain(|o| o.client_id != client_id);
                } else if let Some(o) = self.outbox.iter_mut().find(|o| o.client_id == client_id) {
                    o.seq = Some(seq);
                    o.failed = None;
                }
                Vec::new()
            }
            ServerMsg::Error { code, message, client_id } => {
                match client_id.and_then(|id| self.outbox.iter_mut().find(|o| o.client_id == id)) {
                    // Transient failures keep the reply queued; the next reconnect re-sends it.
                    Some(_) if matches!(code, ErrorCode::Internal | ErrorCode::RateLimited) => {}
                    Some(o) => o.failed = Some(failure_text(code, &message)),
                    None => match code {
                        ErrorCode::Unauthorized => self.signed_out = true,
                        ErrorCode::NotFound => self.notice = Some("This conversation does not exist.".to_owned()),
                        _ => {}
                    },
                }
                Vec::new()
            }
            ServerMsg::Alert { key, message } => {
                self.alerts.retain(|(k, _)| *k != key);
                if let Some(message) = message.filter(|m| !m.trim().is_empty()) {
                    self.alerts.push((key, message));
                }
                Vec::new()
            }
            ServerMsg::Pong | ServerMsg::Unknown => Vec::new(),
        }
    }

    /// Writes a reply: queues it in the outbox as Sending and returns the frame to send.
    pub fn compose(
        &mut self,
        conversation_id: &str,
        client_id: String,
        body: &str,
        now: i64,
    ) -> Result<ClientMsg, &'static str> {
        protocol::validate_body(body)?;
        protocol::validate_client_id(&client_id)?;
        self.outbox.push(Outgoing {
            conversation_id: conversation_id.to_owned(),
            client_id: client_id.clone(),
            body: body.to_owned(),
            created_at: now,
            seq: None,
            failed: None,
        });
        Ok(ClientMsg::Send { conversation_id: conversation_id.to_owned(), client_id, body: body.to_owned() })
    }

    /// Re-sends a failed reply with its original client id.
    pub fn retry(&mut self, client_id: &str) -> Option<ClientMsg> {
        let o = self.outbox.iter_mut().find(|o| o.client_id == client_id)?;
        o.failed = None;
        Some(ClientMsg::Send {
            conversation_id: o.conversation_id.clone(),
            client_id: o.client_id.clone(),
            body: o.body.clone(),
        })
    }

    /// Clears a visitor's typing signal if no newer one arrived since `generation`.
    pub fn expire_typing(&mut self, conversation_id: &str, generation: u64) {
        if self.typing.get(conversation_id) == Some(&generation) {
            self.typing.remove(conversation_id);
        }
    }

    /// The generation of a conversation's typing signal, if the visitor is typing.
    pub fn typing_generation(&self, conversation_id: &str) -> Option<u64> {
        self.typing.get(conversation_id).copied()
    }

    pub fn visitor_typing(&self, conversation_id: &str) -> bool {
        self.typing.contains_key(conversation_id)
    }

    /// The `up_to_seq` to report as read if `conversation_id` has visitor messages the agent has not marked read.
    pub fn read_pending(&self, conversation_id: &str) -> Option<u64> {
        let thread = self.threads.get(conversation_id)?;
        let up_to_seq = thread.last_seq;
        let sent = self.read_sent.get(conversation_id).copied().unwrap_or(0);
        let unread = self.summary(conversation_id).is_some_and(|s| s.unread > 0);
        let new_visitor_msgs = thread.last_visitor_seq > thread.agent_read_seq.max(sent);
        (up_to_seq > 0 && sent < up_to_seq && (unread || new_visitor_msgs)).then_some(up_to_seq)
    }

    /// If [`Self::read_pending`], returns the `Read` frame to send and records it (the unread badge drops to 0 at
    /// once; the server's next summary confirms it).
    pub fn read_due(&mut self, conversation_id: &str) -> Option<ClientMsg> {
        let up_to_seq = self.read_pending(conversation_id)?;
        self.read_sent.insert(conversation_id.to_owned(), up_to_seq);
        if let Some(s) = self.conversations.iter_mut().find(|s| s.id == conversation_id) {
            s.unread = 0;
        }
        Some(ClientMsg::Read { conversation_id: conversation_id.to_owned(), up_to_seq })
    }

    /// Optimistically changes a conversation's status and returns the frame to send.
    pub fn set_status(&mut self, conversation_id: &str, status: ConversationStatus) -> ClientMsg {
        if let Some(s) = self.conversations.iter_mut().find(|s| s.id == conversation_id) {
            s.status = status;
        }
        ClientMsg::SetStatus { conversation_id: conversation_id.to_owned(), status }
    }

    pub fn summary(&self, conversation_id: &str) -> Option<&ConversationSummary> {
        self.conversations.iter().find(|s| s.id == conversation_id)
    }

    /// The conversation's lines: the applied log, then replies still in the outbox, oldest first.
    pub fn timeline(&self, conversation_id: &str) -> Vec<Entry> {
        let mut out = self.threads.get(conversation_id).map(|t| t.entries.clone()).unwrap_or_default();
        let name = self.agent.as_ref().map(|a| a.name.clone()).unwrap_or_default();
        out.extend(self.outbox.iter().filter(|o| o.conversation_id == conversation_id).map(|o| Entry::Message {
            key: o.client_id.clone(),
            id: None,
            seq: o.seq,
            author: Author::Agent { name: name.clone() },
            body: o.body.clone(),
            at: o.created_at,
            channel: Channel::Web,
            attachments: Vec::new(),
        }));
        out
    }

    /// Delivery state of an agent reply with this key (client id), or `None` for other lines.
    pub fn delivery(&self, conversation_id: &str, key: &str) -> Option<Delivery> {
        if let Some(o) = self.outbox.iter().find(|o| o.client_id == key) {
            return Some(match (&o.failed, o.seq) {
                (Some(why), _) => Delivery::Failed(why.clone()),
                (None, None) => Delivery::Sending,
                (None, Some(seq)) if seq <= self.visitor_read_seq(conversation_id) => Delivery::Seen,
                (None, Some(_)) => Delivery::Sent,
            });
        }
        let thread = self.threads.get(conversation_id)?;
        thread.entries.iter().find_map(|e| match e {
            Entry::Message { key: k, seq: Some(seq), author: Author::Agent { .. }, .. } if k == key => {
                Some(if *seq <= self.visitor_read_seq(conversation_id) { Delivery::Seen } else { Delivery::Sent })
            }
            _ => None,
        })
    }

    /// Delivery on another channel, if any was reported, of the message rendered under `key` (its id is looked up
    /// here, because a reply written in this console gets its id only when it is committed).
    pub fn channel_delivery(&self, conversation_id: &str, key: &str) -> Option<ChannelDelivery> {
        let thread = self.threads.get(conversation_id)?;
        let id = thread.entries.iter().find_map(|e| match e {
            Entry::Message { key: k, id: Some(id), .. } if k == key => Some(id.as_str()),
            _ => None,
        })?;
        thread.deliveries.get(id).cloned()
    }

    fn visitor_read_seq(&self, conversation_id: &str) -> u64 {
        let from_log = self.threads.get(conversation_id).map_or(0, |t| t.visitor_read_seq);
        let from_summary = self.summary(conversation_id).map_or(0, |s| s.visitor_read_seq);
        from_log.max(from_summary)
    }

    fn apply_events(&mut self, conversation_id: &str, events: Vec<Event>) -> Vec<ClientMsg> {
        let thread = self.threads.entry(conversation_id.to_owned()).or_default();
        let visitor_seq_before = thread.last_visitor_seq;
        let mut gap = false;
        for event in events {
            gap = thread.push(event);
        }
        let thread = &*thread;
        // Replies now in the log leave the outbox (matched by client id, so a re-send never shows twice).
        self.outbox.retain(|o| o.conversation_id != conversation_id || !thread.holds_client_id(&o.client_id));
        // A visitor message ends their typing signal.
        if thread.last_visitor_seq > visitor_seq_before {
            self.typing.remove(conversation_id);
        }
        if gap && self.current.as_deref() == Some(conversation_id) {
            return vec![ClientMsg::Open { conversation_id: conversation_id.to_owned(), since_seq: thread.last_seq }];
        }
        Vec::new()
    }

    fn upsert(&mut self, summary: ConversationSummary) {
        self.conversations.retain(|s| s.id != summary.id);
        self.conversations.push(summary);
        sort(&mut self.conversations);
    }

    fn upsert_if_newer(&mut self, summary: ConversationSummary) {
        match self.conversations.iter().find(|s| s.id == summary.id) {
            Some(known) if known.last_seq >= summary.last_seq => {}
            _ => self.upsert(summary),
        }
    }
}

/// Newest activity first, ties by id: an insertion sort. The list is nearly in order whenever this runs (the server
/// sends the inbox newest first, at most 500; an update moves one conversation), where it is linear; and it is a few
/// hundred bytes of Wasm where the standard library's stable sort (driftsort) was about 8 KB.
fn sort(list: &mut [ConversationSummary]) {
    let before =
        |a: &ConversationSummary, b: &ConversationSummary| (b.last_activity_at, &a.id) < (a.last_activity_at, &b.id);
    for i in 1..list.len() {
        let mut j = i;
        while j > 0 && before(&list[j], &list[j - 1]) {
            list.swap(j - 1, j);
            j -= 1;
        }
    }
}

fn failure_text(code: ErrorCode, message: &str) -> String {
    match code {
        ErrorCode::InvalidInput if !message.is_empty() => format!("Not sent: {message}"),
        ErrorCode::NotFound => "Not sent: this conversation no longer exists.".to_owned(),
        ErrorCode::Unauthorized => "Not sent: your session has ended. Sign in again.".to_owned(),
        _ => "Not sent. Try again.".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::console::VisitorDetails;
    use protocol::{ChatMessage, DeliveryState, EventKind, Party};

    fn summary(id: &str, at: i64) -> ConversationSummary {
        ConversationSummary {
            id: id.to_owned(),
            site_key: "site".to_owned(),
            site_name: "Site".to_owned(),
            visitor_name: format!("Visitor {id}"),
            status: ConversationStatus::Open,
            last_message: None,
            last_activity_at: at,
            unread: 0,
            last_seq: 0,
            visitor_read_seq: 0,
            visitor: VisitorDetails::default(),
            messenger: None,
        }
    }

    fn agent() -> AgentInfo {
        AgentInfo { id: "a1".to_owned(), name: "Ada".to_owned(), email: "ada@example.com".to_owned() }
    }

    fn msg(seq: u64, author: Author, client_id: &str) -> Event {
        Event {
            seq,
            at: 1000 + seq as i64,
            kind: EventKind::Message {
                message: ChatMessage {
                    id: format!("m{seq}"),
                    client_id: client_id.to_owned(),
                    author,
                    body: format!("body {seq}"),
                    sent_at: 1000 + seq as i64,
                    channel: Channel::Web,
                    attachments: Vec::new(),
                },
            },
        }
    }

    fn read(seq: u64, by: Party, up_to_seq: u64) -> Event {
        Event { seq, at: 0, kind: EventKind::Read { by, up_to_seq } }
    }

    fn keys(state: &ConsoleState, id: &str) -> Vec<String> {
        state.timeline(id).iter().map(|e| e.key().to_owned()).collect()
    }

    #[test]
    fn inbox_is_sorted_and_a_new_conversation_goes_on_top() {
        let mut s = ConsoleState::default();
        s.apply(ServerMsg::Inbox { agent: agent(), conversations: vec![summary("a", 10), summary("b", 30)] });
        assert_eq!(s.conversations[0].id, "b");
        s.apply(ServerMsg::Summary { conversation: summary("c", 40) });
        let ids: Vec<_> = s.conversations.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        s.apply(ServerMsg::Summary { conversation: summary("a", 50) });
        assert_eq!(s.conversations[0].id, "a");
        assert_eq!(s.conversations.len(), 3);
    }

    #[test]
    fn the_inbox_is_newest_first_then_by_id_in_whatever_order_it_arrives() {
        let mut list: Vec<_> =
            [("d", 1), ("b", 3), ("a", 3), ("c", 2), ("e", 3)].map(|(id, t)| summary(id, t)).to_vec();
        sort(&mut list);
        let ids: Vec<_> = list.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "e", "c", "d"]);
    }

    #[test]
    fn a_server_rendered_snapshot_never_overwrites_the_live_inbox() {
        let mut s = ConsoleState::default();
        s.apply(ServerMsg::Inbox { agent: agent(), conversations: vec![summary("live", 10)] });
        s.seed_inbox(agent(), vec![summary("stale", 5)]);
        assert_eq!(s.conversations.len(), 1);
        assert_eq!(s.conversations[0].id, "live");
    }

    #[test]
    fn events_apply_in_order_and_duplicates_are_dropped() {
        let mut s = ConsoleState::default();
        s.open("c");
        s.apply(ServerMsg::History {
            conversation_id: "c".into(),
            events: vec![msg(1, Author::Visitor, "v1"), msg(2, Author::Visitor, "v2")],
            last_seq: 2,
        });
        // Replayed again after a reconnect, plus a new one.
        s.apply(ServerMsg::History {
            conversation_id: "c".into(),
            events: vec![msg(2, Author::Visitor, "v2"), msg(3, Author::Visitor, "v3")],
            last_seq: 3,
        });
        s.apply(ServerMsg::Event { conversation_id: "c".into(), event: msg(3, Author::Visitor, "v3") });
        assert_eq!(keys(&s, "c"), ["v1", "v2", "v3"]);
        assert_eq!(s.threads["c"].last_seq, 3);
    }

    #[test]
    fn an_event_after_a_gap_waits_and_triggers_a_resync() {
        let mut s = ConsoleState::default();
        s.open("c");
        s.apply(ServerMsg::Event { conversation_id: "c".into(), event: msg(1, Author::Visitor, "v1") });
        let out = s.apply(ServerMsg::Event { conversation_id: "c".into(), event: msg(3, Author::Visitor, "v3") });
        assert_eq!(out, vec![ClientMsg::Open { conversation_id: "c".into(), since_seq: 1 }]);
        assert_eq!(keys(&s, "c"), ["v1"]);
        let out = s.apply(ServerMsg::History {
            conversation_id: "c".into(),
            events: vec![msg(2, Author::Visitor, "v2"), msg(3, Author::Visitor, "v3")],
            last_seq: 3,
        });
        assert!(out.is_empty());
        assert_eq!(keys(&s, "c"), ["v1", "v2", "v3"]);
    }

    #[test]
    fn unknown_events_still_advance_seq() {
        let mut s = ConsoleState::default();
        s.open("c");
        let unknown = Event { seq: 1, at: 0, kind: EventKind::Unknown };
        s.apply(ServerMsg::History {
            conversation_id: "c".into(),
            events: vec![unknown, msg(2, Author::Visitor, "v2")],
            last_seq: 2,
        });
        assert_eq!(s.threads["c"].last_seq, 2);
        assert_eq!(keys(&s, "c"), ["v2"]);
    }

    #[test]
    fn a_reply_goes_sending_sent_seen_and_shows_once() {
        let mut s = ConsoleState::default();
        s.apply(ServerMsg::Inbox { agent: agent(), conversations: vec![summary("c", 1)] });
        s.open("c");
        let send = s.compose("c", "r1".into(), "hello", 5).expect("valid reply");
        assert!(matches!(send, ClientMsg::Send { ref client_id, .. } if client_id == "r1"));
        assert_eq!(s.delivery("c", "r1"), Some(Delivery::Sending));
        s.apply(ServerMsg::Ack {
            conversation_id: "c".into(),
            client_id: "r1".into(),
            message_id: "m1".into(),
            seq: 1,
        });
        assert_eq!(s.delivery("c", "r1"), Some(Delivery::Sent));
        s.apply(ServerMsg::Event {
            conversation_id: "c".into(),
            event: msg(1, Author::Agent { name: "Ada".into() }, "r1"),
        });
        assert_eq!(keys(&s, "c"), ["r1"]);
        assert!(s.outbox.is_empty());
        assert_eq!(s.delivery("c", "r1"), Some(Delivery::Sent));
        s.apply(ServerMsg::Event { conversation_id: "c".into(), event: read(2, Party::Visitor, 1) });
        assert_eq!(s.delivery("c", "r1"), Some(Delivery::Seen));
    }

    #[test]
    fn the_event_may_arrive_before_the_ack() {
        let mut s = ConsoleState::default();
        s.open("c");
        s.compose("c", "r1".into(), "hello", 5).expect("valid reply");
        s.apply(ServerMsg::Event {
            conversation_id: "c".into(),
            event: msg(1, Author::Agent { name: "Ada".into() }, "r1"),
        });
        s.apply(ServerMsg::Ack {
            conversation_id: "c".into(),
            client_id: "r1".into(),
            message_id: "m1".into(),
            seq: 1,
        });
        assert_eq!(keys(&s, "c"), ["r1"]);
        assert!(s.outbox.is_empty());
    }

    #[test]
    fn reconnect_reopens_after_the_last_seq_and_resends_unacked_replies_with_the_same_id() {
        let mut s = ConsoleState::default();
        s.open("c");
        s.apply(ServerMsg::History {
            conversation_id: "c".into(),
            events: vec![msg(1, Author::Visitor, "v1")],
            last_seq: 1,
        });
        s.compose("c", "r1".into(), "acked", 5).expect("valid reply");
        s.compose("c", "r2".into(), "lost", 6).expect("valid reply");
        s.apply(ServerMsg::Ack {
            conversation_id: "c".into(),
            client_id: "r1".into(),
            message_id: "m2".into(),
            seq: 2,
        });
        let out = s.on_connected();
        assert_eq!(
            out,
            vec![
                ClientMsg::Open { conversation_id: "c".into(), since_seq: 1 },
                ClientMsg::Send { conversation_id: "c".into(), client_id: "r2".into(), body: "lost".into() },
            ]
        );
    }

    #[test]
    fn a_refused_reply_fails_and_can_be_retried_with_the_same_id() {
        let mut s = ConsoleState::default();
        s.compose("c", "r1".into(), "hi", 1).expect("valid reply");
        s.apply(ServerMsg::Error {
            code: ErrorCode::InvalidInput,
            message: "message is too long".into(),
            client_id: Some("r1".into()),
        });
        assert!(matches!(s.delivery("c", "r1"), Some(Delivery::Failed(_))));
        assert!(s.on_connected().is_empty());
        let again = s.retry("r1");
        assert_eq!(
            again,
            Some(ClientMsg::Send { conversation_id: "c".into(), client_id: "r1".into(), body: "hi".into() })
        );
        assert_eq!(s.delivery("c", "r1"), Some(Delivery::Sending));
    }

    #[test]
    fn blank_replies_are_refused() {
        let mut s = ConsoleState::default();
        assert!(s.compose("c", "r1".into(), "   ", 1).is_err());
        assert!(s.outbox.is_empty());
    }

    #[test]
    fn viewing_new_visitor_messages_marks_them_read_once() {
        let mut s = ConsoleState::default();
        let mut c = summary("c", 1);
        c.unread = 2;
        s.apply(ServerMsg::Inbox { agent: agent(), conversations: vec![c] });
        s.open("c");
        assert_eq!(s.read_due("c"), None, "nothing loaded yet");
        s.apply(ServerMsg::History {
            conversation_id: "c".into(),
            events: vec![msg(1, Author::Visitor, "v1"), msg(2, Author::Visitor, "v2")],
            last_seq: 2,
        });
        assert_eq!(s.read_due("c"), Some(ClientMsg::Read { conversation_id: "c".into(), up_to_seq: 2 }));
        assert_eq!(s.summary("c").map(|c| c.unread), Some(0));
        assert_eq!(s.read_due("c"), None);
        s.apply(ServerMsg::Event { conversation_id: "c".into(), event: msg(3, Author::Visitor, "v3") });
        assert_eq!(s.read_due("c"), Some(ClientMsg::Read { conversation_id: "c".into(), up_to_seq: 3 }));
        s.apply(ServerMsg::Event {
            conversation_id: "c".into(),
            event: msg(4, Author::Agent { name: "Ada".into() }, "r"),
        });
        assert_eq!(s.read_due("c"), None, "own replies need no read receipt");
    }

    #[test]
    fn typing_expires_only_for_its_own_generation_and_ends_with_a_message() {
        let mut s = ConsoleState::default();
        s.open("c");
        s.apply(ServerMsg::Typing { conversation_id: "c".into(), typing: true });
        let first = s.typing_generation("c").expect("typing");
        s.apply(ServerMsg::Typing { conversation_id: "c".into(), typing: true });
        s.expire_typing("c", first);
        assert!(s.visitor_typing("c"));
        s.apply(ServerMsg::Event { conversation_id: "c".into(), event: msg(1, Author::Visitor, "v1") });
        assert!(!s.visitor_typing("c"));
    }

    #[test]
    fn switching_conversations_closes_the_previous_one() {
        let mut s = ConsoleState::default();
        assert_eq!(s.open("a"), vec![ClientMsg::Open { conversation_id: "a".into(), since_seq: 0 }]);
        assert!(s.open("a").is_empty());
        assert_eq!(
            s.open("b"),
            vec![
                ClientMsg::Close { conversation_id: "a".into() },
                ClientMsg::Open { conversation_id: "b".into(), since_seq: 0 }
            ]
        );
    }

    #[test]
    fn alerts_are_set_replaced_and_cleared_by_key() {
        let mut s = ConsoleState::default();
        s.apply(ServerMsg::Alert { key: "messenger_token".into(), message: Some("Reconnect the Page".into()) });
        s.apply(ServerMsg::Alert { key: "messenger_token".into(), message: Some("Reconnect the Page now".into()) });
        assert_eq!(s.alerts, vec![("messenger_token".to_owned(), "Reconnect the Page now".to_owned())]);
        s.apply(ServerMsg::Alert { key: "messenger_token".into(), message: None });
        assert!(s.alerts.is_empty());
    }

    #[test]
    fn channel_deliveries_attach_to_the_message_and_the_latest_wins() {
        let mut s = ConsoleState::default();
        s.open("c");
        let delivery = |seq, state| Event {
            seq,
            at: 0,
            kind: EventKind::Delivery { message_id: "m1".into(), channel: Channel::Messenger, state, detail: None },
        };
        s.apply(ServerMsg::History {
            conversation_id: "c".into(),
            events: vec![
                msg(1, Author::Agent { name: "Ada".into() }, "r1"),
                delivery(2, DeliveryState::Sent),
                delivery(3, DeliveryState::Read),
            ],
            last_seq: 3,
        });
        let d = s.channel_delivery("c", "r1").expect("reported");
        assert_eq!(d.describe(), "Read on Messenger");
        assert_eq!(keys(&s, "c"), ["r1"]);
    }

    #[test]
    fn unauthorized_errors_sign_out() {
        let mut s = ConsoleState::default();
        s.apply(ServerMsg::Error { code: ErrorCode::Unauthorized, message: String::new(), client_id: None });
        assert!(s.signed_out);
    }

    #[test]
    fn each_delivery_state_has_its_label_as_the_modifier_class() {
        for d in [Delivery::Sending, Delivery::Sent, Delivery::Seen, Delivery::Failed("why".into())] {
            let kebab = d.label().trim_end_matches('…').to_lowercase().replace(' ', "-");
            assert_eq!(d.class(), format!("msg__state msg__state--{kebab}"));
        }
    }
}
