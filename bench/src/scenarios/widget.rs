//! Scenario `widget`: what the chat costs a page. Runs `bench/widget/measure.mjs` (Debian's Chromium over CDP, 4×
//! CPU throttling) against a Parley serving the built widget (`target/site`) and beside the published
//! `@rocket.chat/livechat` build, and turns its per-run JSON into medians, spreads and downloaded bytes.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;
use serde::Deserialize;

/// One fetched file of one variant (the last run's): body bytes as received, and gzip -9 / brotli -q11 of them
/// (computed alike for every variant, whatever the server sent on the wire).
#[derive(Deserialize, Clone, Debug)]
pub struct File {
    pub url: String,
    pub status: u16,
    pub raw: u64,
    pub gzip: u64,
    pub brotli: u64,
}

/// The script's output: per variant (`bare`, `parley`, `livechat`) the runs' figures and, per phase (`load`,
/// `click`), the files fetched.
#[derive(Deserialize, Debug)]
pub struct WidgetOutcome {
    pub chromium: String,
    pub livechat_version: String,
    pub throttle: f64,
    pub runs: BTreeMap<String, Vec<BTreeMap<String, serde_json::Value>>>,
    pub files: BTreeMap<String, BTreeMap<String, Vec<File>>>,
}

/// Median, min and max of one figure over the runs (`None` when no run has it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl WidgetOutcome {
    pub fn spread(&self, variant: &str, figure: &str) -> Option<Spread> {
        let values: Vec<f64> =
            self.runs.get(variant)?.iter().filter_map(|r| r.get(figure).and_then(serde_json::Value::as_f64)).collect();
        spread(values)
    }

    /// The first run's text for `figure`, if any run has one.
    pub fn first_text(&self, variant: &str, figure: &str) -> Option<String> {
        self.runs
            .get(variant)?
            .iter()
            .find_map(|r| r.get(figure).and_then(serde_json::Value::as_str).map(str::to_owned))
    }

    /// Whether every run of `variant` has `figure` true.
    pub fn all(&self, variant: &str, figure: &str) -> bool {
        self.runs.get(variant).is_some_and(|runs| {
            !runs.is_empty() && runs.iter().all(|r| r.get(figure).and_then(serde_json::Value::as_bool) == Some(true))
        })
    }

    /// Files of one phase of one variant, `skip_document`: without the host page itself.
    pub fn files(&self, variant: &str, phase: &str, skip_document: bool) -> Vec<File> {
        let files = self.files.get(variant).and_then(|p| p.get(phase)).cloned().unwrap_or_default();
        files.into_iter().skip(usize::from(skip_document)).collect()
    }
}

/// Median (the lower middle one for an even count), min and max.
pub fn spread(mut values: Vec<f64>) -> Option<Spread> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(Spread { median: values[(n - 1) / 2], min: values[0], max: values[n - 1], n })
}

/// (raw, gzip, brotli) totals.
pub fn totals(files: &[File]) -> (u64, u64, u64) {
    files.iter().fold((0, 0, 0), |t, f| (t.0 + f.raw, t.1 + f.gzip, t.2 + f.brotli))
}

/// Runs the measuring script with Node, the browser on every core (the harness pins itself to one; the browser
/// must not inherit that).
pub fn run(
    script_dir: &Path,
    parley_origin: &str,
    host_port: u16,
    runs: usize,
    cores: usize,
) -> anyhow::Result<WidgetOutcome> {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(format!("0-{}", cores.saturating_sub(1))).arg("node");
    let out = cmd
        .arg(script_dir.join("measure.mjs"))
        .args(["--parley-origin", parley_origin, "--site-key", crate::client::SITE_KEY])
        .args(["--host-port", &host_port.to_string(), "--runs", &runs.to_string(), "--throttle", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .context("node bench/widget/measure.mjs (run `cargo xtask bench widget`, which installs bench/widget)")?;
    anyhow::ensure!(out.status.success(), "the widget measurement failed ({})", out.status);
    serde_json::from_slice(&out.stdout).context("the widget measurement printed no JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_takes_the_lower_middle_and_the_ends() {
        assert_eq!(spread(vec![3.0, 1.0, 2.0]), Some(Spread { median: 2.0, min: 1.0, max: 3.0, n: 3 }));
        assert_eq!(spread(vec![4.0, 1.0, 2.0, 3.0]).map(|s| s.median), Some(2.0));
        assert_eq!(spread(vec![f64::NAN]), None);
        assert_eq!(spread(Vec::new()), None);
    }
}
