//! Webhook events: the JSON of each `messaging[]` element and how it is queued.
//!
//! [`World::emit`] applies the subscription (app subscribed, field subscribed) and
//! Conversation Routing (`standby[]` for a non-owner, postbacks without payload) before
//! handing the event to the webhook sender. Shapes follow §4 of the platform notes.

use serde_json::{Value, json};

use crate::config::PAGE_INBOX_APP_ID;
use crate::state::{OutEvent, World};

/// Webhook fields, as the sender labels events.
pub mod field {
    /// Customer messages.
    pub const MESSAGES: &str = "messages";
    /// Echoes of Page messages.
    pub const ECHOES: &str = "message_echoes";
    /// Delivery receipts.
    pub const DELIVERIES: &str = "message_deliveries";
    /// Read receipts.
    pub const READS: &str = "message_reads";
    /// Postbacks (Get Started).
    pub const POSTBACKS: &str = "messaging_postbacks";
    /// m.me referrals into an existing thread.
    pub const REFERRALS: &str = "messaging_referrals";
    /// Handover / routing changes.
    pub const HANDOVERS: &str = "messaging_handovers";
    /// Reactions.
    pub const REACTIONS: &str = "message_reactions";
}

impl World {
    /// The app id value as it appears in webhooks (number by default, like the docs).
    pub fn app_id_json(&self, app_id: &str) -> Value {
        if self.cfg.app_id_as_string {
            return json!(app_id);
        }
        app_id.parse::<u64>().map(Value::from).unwrap_or_else(|_| json!(app_id))
    }

    /// Customer → Page event skeleton.
    pub fn inbound(&self, psid: &str, timestamp: i64, key: &str, body: Value) -> Value {
        let mut event = json!({
            "sender": { "id": psid },
            "recipient": { "id": self.cfg.page_id },
            "timestamp": timestamp,
        });
        event[key] = body;
        event
    }

    /// Page → customer echo.
    pub fn echo(&self, psid: &str, timestamp: i64, message: Value) -> Value {
        json!({
            "sender": { "id": self.cfg.page_id },
            "recipient": { "id": psid },
            "timestamp": timestamp,
            "message": message,
        })
    }

    /// Queues an event for our app if it is subscribed to `field`. Under Conversation
    /// Routing, when another app owns the thread, the event goes to `standby[]` (and a
    /// postback loses its payload). Returns whether it was queued.
    pub fn emit(&mut self, field: &'static str, psid: &str, mut event: Value) -> bool {
        let app = &self.app;
        if !app.subscribed || !app.fields.iter().any(|f| f == field) {
            return false;
        }
        let owner = self.customer(psid).and_then(|c| c.thread.owner_app_id.clone());
        let standby = field != field::HANDOVERS && self.settings.routing && owner.is_some_and(|o| o != self.cfg.app_id);
        if standby {
            if !app.fields.iter().any(|f| f == "standby") {
                return false;
            }
            if let Some(postback) = event.get_mut("postback").and_then(Value::as_object_mut) {
                postback.remove("payload");
            }
        }
        let out = OutEvent { field, standby, event, generation: self.generation };
        if self.outbox.send(out).is_err() {
            return false;
        }
        self.pending_events += 1;
        self.touch();
        true
    }

    /// Emits a handover event (`pass_thread_control`, `take_thread_control`…) to our app.
    pub fn emit_handover(&mut self, psid: &str, key: &str, body: Value) {
        let now = self.now_ms();
        let event = self.inbound(psid, now, key, body);
        self.emit(field::HANDOVERS, psid, event);
    }

    /// The Inbox takes the thread (routing turns on) and our app is told.
    pub fn inbox_takes_thread(&mut self, psid: &str) {
        self.settings.routing = true;
        let previous =
            self.customer(psid).and_then(|c| c.thread.owner_app_id.clone()).unwrap_or_else(|| self.cfg.app_id.clone());
        if let Some(customer) = self.customer_mut(psid) {
            customer.thread.owner_app_id = Some(PAGE_INBOX_APP_ID.to_owned());
        }
        let body = json!({
            "previous_owner_app_id": previous,
            "new_owner_app_id": PAGE_INBOX_APP_ID,
            "metadata": "Taken by the Page Inbox",
        });
        self.emit_handover(psid, "take_thread_control", body);
        self.touch();
    }

    /// The Inbox passes the thread back to our app and our app is told.
    pub fn inbox_passes_thread(&mut self, psid: &str) {
        if let Some(customer) = self.customer_mut(psid) {
            customer.thread.owner_app_id = None;
        }
        let body = json!({
            "previous_owner_app_id": PAGE_INBOX_APP_ID,
            "new_owner_app_id": self.cfg.app_id,
            "metadata": "Passed back by the Page Inbox",
        });
        self.emit_handover(psid, "pass_thread_control", body);
        self.touch();
    }

    /// A delivery receipt for `mids` up to `watermark` (without `mids` under the fault).
    pub fn emit_delivery(&mut self, psid: &str, mids: Vec<String>, watermark: i64) {
        let Some(customer) = self.customer_mut(psid) else {
            return;
        };
        if watermark <= customer.thread.delivered_watermark && mids.is_empty() {
            return;
        }
        customer.thread.delivered_watermark = customer.thread.delivered_watermark.max(watermark);
        let drop_mids = self.take_event_fault(crate::faults::WebhookFault::NoDeliveryMids);
        let now = self.now_ms();
        let body = if drop_mids || mids.is_empty() {
            json!({ "watermark": watermark })
        } else {
            json!({ "mids": mids, "watermark": watermark })
        };
        let event = self.inbound(psid, now, "delivery", body);
        self.emit(field::DELIVERIES, psid, event);
    }

    /// A read receipt up to the newest Page message, if it moves the watermark.
    pub fn emit_read(&mut self, psid: &str) -> Option<i64> {
        let customer = self.customer_mut(psid)?;
        let newest = customer.thread.messages.iter().filter(|m| m.is_from_page()).map(|m| m.timestamp).max()?;
        if newest <= customer.thread.read_watermark {
            return None;
        }
        customer.thread.read_watermark = newest;
        let now = self.now_ms();
        let event = self.inbound(psid, now, "read", json!({ "watermark": newest }));
        self.emit(field::READS, psid, event);
        self.bump_thread(psid);
        Some(newest)
    }

    /// Consumes an event-level webhook fault of exactly this kind.
    pub fn take_event_fault(&mut self, kind: crate::faults::WebhookFault) -> bool {
        let World { faults, rng, .. } = self;
        faults.take_webhook(rng, |f| *f == kind).is_some()
    }
}
