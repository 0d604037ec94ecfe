//! Prometheus metrics: the meters the server keeps, and their rendering for `GET /metrics` (see `http::metrics`).
//!
//! Each [`Application`](crate::startup::Application) owns its own recorder (`metrics-exporter-prometheus`, never
//! installed as the process-global one), so several apps in one test process keep separate counts. Events are
//! counted where they happen (a message committed, events fanned out, a webhook delivery received or failing);
//! levels — open sockets, outbox depth, quarantined deliveries, worker restarts, pool usage — are read from their
//! owners at scrape time ([`Levels`]), so they cannot drift from the truth.

use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use protocol::Channel;
use secrecy::SecretString;

/// Histogram buckets, in seconds: sub-millisecond commits up to stalls of several seconds.
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

pub const OPEN_SOCKETS: &str = "parley_open_sockets";
pub const MESSAGES_POSTED: &str = "parley_messages_posted_total";
pub const POST_COMMIT_SECONDS: &str = "parley_post_commit_seconds";
pub const FANOUT_LAG_SECONDS: &str = "parley_fanout_lag_seconds";
pub const OUTBOX_DEPTH: &str = "parley_outbox_depth";
pub const OUTBOX_OLDEST_AGE_SECONDS: &str = "parley_outbox_oldest_age_seconds";
pub const WEBHOOK_DELIVERIES: &str = "parley_webhook_deliveries_total";
pub const WEBHOOK_FAILURES: &str = "parley_webhook_failures_total";
pub const WEBHOOK_QUARANTINED: &str = "parley_webhook_quarantined";
pub const WORKER_RESTARTS: &str = "parley_worker_restarts_total";
pub const WORKER_UP: &str = "parley_worker_up";
pub const DB_POOL_CONNECTIONS: &str = "parley_db_pool_connections";
pub const BUS_NOTIFICATIONS: &str = "parley_bus_notifications_total";
pub const BUS_RECONNECTS: &str = "parley_bus_reconnects_total";
pub const BUS_LAG_SECONDS: &str = "parley_bus_lag_seconds";
pub const BUS_PUBLISH_FAILURES: &str = "parley_bus_publish_failures_total";

/// The app's recorder, the handle that renders it, and the token a scrape must bring.
pub struct Meters {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// `None`: `/metrics` is off (`metrics.enabled = false`).
    scrape_token: Option<SecretString>,
}

impl std::fmt::Debug for Meters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meters").finish_non_exhaustive()
    }
}

/// Who wrote a message, as a label.
#[derive(Clone, Copy, Debug)]
pub enum AuthorKind {
    Visitor,
    Agent,
    Page,
    System,
}

impl AuthorKind {
    fn label(self) -> &'static str {
        match self {
            Self::Visitor => "visitor",
            Self::Agent => "agent",
            Self::Page => "page",
            Self::System => "system",
        }
    }
}

fn channel_label(channel: Channel) -> &'static str {
    match channel {
        Channel::Web => "web",
        Channel::Messenger => "messenger",
    }
}

/// What became of a webhook POST.
#[derive(Clone, Copy, Debug)]
pub enum WebhookOutcome {
    /// Signed correctly and stored: answered 200.
    Accepted,
    /// Bad or missing signature: answered 403, nothing stored.
    Refused,
    /// Could not be stored: answered 503 so Meta retries.
    Unavailable,
}

/// One supervised worker at scrape time.
#[derive(Clone, Debug)]
pub struct WorkerLevel {
    pub name: &'static str,
    pub running: bool,
    pub restarts: u64,
}

/// Levels read from their owners at scrape time.
#[derive(Clone, Debug, Default)]
pub struct Levels {
    pub visitor_sockets: usize,
    pub agent_sockets: usize,
    /// Pending outbox sends, and how old the oldest is (`None`: could not be read; the gauges keep their value).
    pub outbox: Option<(i64, Option<Duration>)>,
    pub quarantined: Option<i64>,
    pub workers: Vec<WorkerLevel>,
    /// Open pooled database connections, how many of them idle, and the pool's cap.
    pub pool_open: u32,
    pub pool_idle: usize,
    pub pool_max: u32,
}

impl Meters {
    /// Meters whose rendering `/metrics` serves to scrapers bringing `scrape_token` (`None`: never).
    pub fn new(scrape_token: Option<SecretString>) -> anyhow::Result<Self> {
        let recorder = PrometheusBuilder::new().set_buckets(BUCKETS)?.build_recorder();
        let handle = recorder.handle();
        let meters = Self { recorder, handle, scrape_token };
        meters.describe();
        Ok(meters)
    }

    /// The bearer token `/metrics` wants; `None` when it is off.
    pub fn scrape_token(&self) -> Option<&SecretString> {
        self.scrape_token.as_ref()
    }

    /// Runs `f` with this app's recorder as the one the `metrics` macros use.
    fn with<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    fn describe(&self) {
        self.with(|| {
            describe_gauge!(OPEN_SOCKETS, "Open WebSocket connections past their hello, by kind (visitor, agent).");
            describe_counter!(MESSAGES_POSTED, "Messages committed, by channel (web, messenger) and author.");
            describe_histogram!(
                POST_COMMIT_SECONDS,
                Unit::Seconds,
                "Time from a post reaching the conversation service to its commit."
            );
            describe_histogram!(
                FANOUT_LAG_SECONDS,
                Unit::Seconds,
                "Time from an event's commit to its hand-over to the connected sockets (hub delivery)."
            );
            describe_gauge!(OUTBOX_DEPTH, "Messenger sends waiting in the outbox.");
            describe_gauge!(OUTBOX_OLDEST_AGE_SECONDS, "Age of the oldest waiting Messenger send (0 when none).");
            describe_counter!(
                WEBHOOK_DELIVERIES,
                "Messenger webhook POSTs, by result (accepted, refused: bad signature, unavailable: not stored)."
            );
            describe_counter!(WEBHOOK_FAILURES, "Failed attempts to apply a stored webhook delivery.");
            describe_gauge!(WEBHOOK_QUARANTINED, "Webhook deliveries set aside after repeated failures.");
            describe_counter!(WORKER_RESTARTS, "Times a supervised worker failed and was started again.");
            describe_gauge!(WORKER_UP, "1 while a supervised worker runs, 0 while it waits for a restart.");
            describe_gauge!(
                DB_POOL_CONNECTIONS,
                "Database pool connections by state (open, idle) and the pool's cap (max)."
            );
            describe_counter!(
                BUS_NOTIFICATIONS,
                "Nudges between nodes (PostgreSQL LISTEN/NOTIFY), by direction (sent; received from other nodes)."
            );
            describe_counter!(
                BUS_RECONNECTS,
                "Times the bus listener subscribed again after losing its connection (each followed by a catch-up)."
            );
            describe_histogram!(
                BUS_LAG_SECONDS,
                Unit::Seconds,
                "Time from an event's commit on another node to its hand-over to this node's sockets."
            );
            describe_counter!(BUS_PUBLISH_FAILURES, "Nudges that could not be sent (other nodes catch up later).");
        });
    }

    /// A message was committed after `commit` in the service.
    pub fn message_posted(&self, channel: Channel, author: AuthorKind, commit: Duration) {
        self.with(|| {
            let labels = [("channel", channel_label(channel)), ("author", author.label())];
            counter!(MESSAGES_POSTED, &labels).increment(1);
            histogram!(POST_COMMIT_SECONDS).record(commit.as_secs_f64());
        });
    }

    /// A committed event reached the hub `lag` after its commit.
    pub fn fanned_out(&self, lag: Duration) {
        self.with(|| histogram!(FANOUT_LAG_SECONDS).record(lag.as_secs_f64()));
    }

    /// `n` nudges went out to the other nodes.
    pub fn bus_sent(&self, n: usize) {
        self.with(|| counter!(BUS_NOTIFICATIONS, "direction" => "sent").increment(n as u64));
    }

    /// A nudge from another node arrived; for an event, `lag` after its commit there.
    pub fn bus_received(&self, lag: Option<Duration>) {
        self.with(|| {
            counter!(BUS_NOTIFICATIONS, "direction" => "received").increment(1);
            if let Some(lag) = lag {
                histogram!(BUS_LAG_SECONDS).record(lag.as_secs_f64());
            }
        });
    }

    /// The bus listener subscribed again after losing its connection.
    pub fn bus_reconnected(&self) {
        self.with(|| counter!(BUS_RECONNECTS).increment(1));
    }

    /// `n` nudges could not be sent.
    pub fn bus_publish_failed(&self, n: usize) {
        self.with(|| counter!(BUS_PUBLISH_FAILURES).increment(n as u64));
    }

    pub fn webhook_delivery(&self, outcome: WebhookOutcome) {
        let result = match outcome {
            WebhookOutcome::Accepted => "accepted",
            WebhookOutcome::Refused => "refused",
            WebhookOutcome::Unavailable => "unavailable",
        };
        self.with(|| counter!(WEBHOOK_DELIVERIES, "result" => result).increment(1));
    }

    /// An attempt to apply a stored webhook delivery failed.
    pub fn webhook_failed(&self) {
        self.with(|| counter!(WEBHOOK_FAILURES).increment(1));
    }

    /// The Prometheus text exposition, with `levels` as of now.
    pub fn render(&self, levels: &Levels) -> String {
        self.with(|| {
            gauge!(OPEN_SOCKETS, "kind" => "visitor").set(levels.visitor_sockets as f64);
            gauge!(OPEN_SOCKETS, "kind" => "agent").set(levels.agent_sockets as f64);
            if let Some((depth, oldest)) = levels.outbox {
                gauge!(OUTBOX_DEPTH).set(depth as f64);
                gauge!(OUTBOX_OLDEST_AGE_SECONDS).set(oldest.unwrap_or_default().as_secs_f64());
            }
            if let Some(quarantined) = levels.quarantined {
                gauge!(WEBHOOK_QUARANTINED).set(quarantined as f64);
            }
            for worker in &levels.workers {
                counter!(WORKER_RESTARTS, "worker" => worker.name).absolute(worker.restarts);
                gauge!(WORKER_UP, "worker" => worker.name).set(if worker.running { 1.0 } else { 0.0 });
            }
            gauge!(DB_POOL_CONNECTIONS, "state" => "open").set(f64::from(levels.pool_open));
            gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(levels.pool_idle as f64);
            gauge!(DB_POOL_CONNECTIONS, "state" => "max").set(f64::from(levels.pool_max));
            // Counters that have not happened yet still appear, at 0, so dashboards and alerts see the series.
            counter!(WEBHOOK_FAILURES).increment(0);
            counter!(BUS_RECONNECTS).increment(0);
            for result in ["accepted", "refused", "unavailable"] {
                counter!(WEBHOOK_DELIVERIES, "result" => result).increment(0);
            }
        });
        self.handle.run_upkeep();
        self.handle.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_meters_count_apart_and_render_prometheus_text() {
        let a = Meters::new(None).expect("meters");
        let b = Meters::new(None).expect("meters");
        for _ in 0..3 {
            a.message_posted(Channel::Web, AuthorKind::Visitor, Duration::from_millis(2));
        }
        b.message_posted(Channel::Messenger, AuthorKind::Agent, Duration::from_millis(2));
        let text = a.render(&Levels { visitor_sockets: 2, ..Levels::default() });
        assert!(text.contains(r#"parley_messages_posted_total{channel="web",author="visitor"} 3"#), "{text}");
        assert!(!text.contains(r#"channel="messenger""#), "{text}");
        assert!(text.contains(r#"parley_open_sockets{kind="visitor"} 2"#), "{text}");
        assert!(text.contains("parley_post_commit_seconds_count 3"), "{text}");
        assert!(text.contains("# TYPE parley_post_commit_seconds histogram"), "{text}");
    }
}
