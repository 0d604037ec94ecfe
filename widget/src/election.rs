//! Which tab of a brand-new visitor asks the server to mint the session, when several open at the same instant.
//!
//! Chromium refuses a third-party frame Web Locks, but its BroadcastChannel works (partitioned per top-level site),
//! so the tabs of one host site elect a leader on it before their first session call:
//!
//! - a tab posts `claim:<random>` and listens for [`CLAIM_WINDOW_MS`];
//! - a tab that already has its session answers `ready`: the claimer goes on at once (the cookie is in the jar);
//! - a tab leading an election answers `leader`; between claimers, the lowest number leads;
//! - a tab that does not lead waits for `ready` (at most [`LEADER_WAIT_MS`], in case the leader's tab closed), so
//!   its session call carries the cookie the leader got instead of minting a second one.
//!
//! The `minted` broadcast in `session.rs` stays as a second net. Without BroadcastChannel nothing waits.

use std::cell::Cell;

use js_sys::Promise;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;

const CLAIM: &str = "claim:";
const LEADER: &str = "leader";
const READY: &str = "ready";
/// How long a claimer listens for other claims and answers (a round trip between two tabs takes far less).
const CLAIM_WINDOW_MS: i32 = 250;
/// How long a tab that does not lead waits for the leader's session.
const LEADER_WAIT_MS: i32 = 3_000;
const TICK_MS: i32 = 10;

#[derive(Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    #[default]
    Idle,
    Claiming,
    Leading,
    Following,
    Done,
}

/// One tab's part in the election.
#[derive(Default)]
pub struct Election {
    channel: Option<web_sys::BroadcastChannel>,
    phase: Cell<Phase>,
    claim: Cell<u32>,
    heard_lower: Cell<bool>,
    heard_leader: Cell<bool>,
    heard_ready: Cell<bool>,
}

impl Election {
    pub fn new(channel: Option<web_sys::BroadcastChannel>) -> Self {
        Self { channel, ..Self::default() }
    }

    fn post(&self, message: &str) {
        if let Some(channel) = &self.channel {
            let _ = channel.post_message(&JsValue::from_str(message));
        }
    }

    /// Handles a sibling's message; `false` when it is not part of the election.
    pub fn on_message(&self, data: &str) -> bool {
        if let Some(claim) = data.strip_prefix(CLAIM) {
            match self.phase.get() {
                Phase::Leading => self.post(LEADER),
                Phase::Done => self.post(READY),
                Phase::Claiming if claim.parse::<u32>().is_ok_and(|c| c < self.claim.get()) => {
                    self.heard_lower.set(true)
                }
                _ => {}
            }
            return true;
        }
        match data {
            LEADER => self.heard_leader.set(true),
            READY => self.heard_ready.set(true),
            _ => return false,
        }
        true
    }

    /// Waits until this tab may make its session call: at once when it leads or a sibling already has the session,
    /// after the leader's session otherwise.
    pub async fn run(&self) {
        if self.channel.is_none() {
            return;
        }
        // Never 0, so a claim always has someone below or above it but itself.
        let claim = 1 + (js_sys::Math::random() * f64::from(u32::MAX - 1)) as u32;
        self.claim.set(claim);
        self.phase.set(Phase::Claiming);
        self.post(&format!("{CLAIM}{claim}"));
        let mut waited = 0;
        while waited < CLAIM_WINDOW_MS && !self.heard_ready.get() {
            sleep(TICK_MS).await;
            waited += TICK_MS;
        }
        if self.heard_ready.get() {
            self.phase.set(Phase::Following);
            return;
        }
        if !self.heard_lower.get() && !self.heard_leader.get() {
            self.phase.set(Phase::Leading);
            return;
        }
        self.phase.set(Phase::Following);
        let mut waited = 0;
        while waited < LEADER_WAIT_MS && !self.heard_ready.get() {
            sleep(TICK_MS).await;
            waited += TICK_MS;
        }
    }

    /// This tab has its session: siblings that wait may go on, and later claimers go on at once.
    pub fn done(&self) {
        self.phase.set(Phase::Done);
        self.post(READY);
    }
}

async fn sleep(ms: i32) {
    let p = Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = JsFuture::from(p).await;
}
