//! Size accounting for what visitors download: raw, gzip -9 and brotli -q11 bytes of the loader and of the full
//! widget (boot module + glue + Wasm + CSS) and of the agent console's Wasm, and the budgets the tests enforce.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

/// The loader must stay this small (brotli bytes): it is on every page view of every customer.
pub const LOADER_BROTLI_BUDGET: usize = 3 * 1024;
/// The whole chat a visitor downloads on intent (brotli bytes): the target.
pub const WIDGET_BROTLI_TARGET: usize = 100 * 1024;
/// What the suite enforces for the widget: the size reached so far plus a little room, so any growth fails the
/// suite (a ratchet: lower it when the widget shrinks, never raise it silently). 94,835 B on 2026-12-01 (from
/// 101,736 B: frames read with `protocol::json` instead of serde_json's deserializer, wasm-opt `-Os`).
pub const WIDGET_BROTLI_BUDGET: usize = 94 * 1024;
/// The agent console's Wasm (brotli bytes): the target.
pub const CONSOLE_BROTLI_TARGET: usize = 250 * 1024;
/// Enforced ceiling for the console's Wasm (a ratchet, as for the widget): 247,664 B on 2026-12-01 (from 277,077 B:
/// server-function answers, errors and hydration data read by hand through `protocol::json` instead of
/// serde_json's deserializer, no Unicode case tables for a class name, wasm-opt `-Os`), so the target is met.
pub const CONSOLE_BROTLI_BUDGET: usize = 243 * 1024;

/// Files that make up each download.
#[derive(Default)]
pub struct Report {
    pub loader: Vec<PathBuf>,
    pub widget: Vec<PathBuf>,
    /// The console's Wasm alone (its glue, CSS and boot module are measured with the page, not budgeted here).
    pub console: Vec<PathBuf>,
}

/// One download, its enforced ceiling and the target it is heading for (brotli bytes).
struct Budget<'a> {
    name: &'static str,
    files: &'a [PathBuf],
    limit: usize,
    target: usize,
}

fn budgets(report: &Report) -> [Budget<'_>; 3] {
    [
        Budget {
            name: "loader widget.js",
            files: &report.loader,
            limit: LOADER_BROTLI_BUDGET,
            target: LOADER_BROTLI_BUDGET,
        },
        Budget {
            name: "full widget",
            files: &report.widget,
            limit: WIDGET_BROTLI_BUDGET,
            target: WIDGET_BROTLI_TARGET,
        },
        Budget {
            name: "console wasm",
            files: &report.console,
            limit: CONSOLE_BROTLI_BUDGET,
            target: CONSOLE_BROTLI_TARGET,
        },
    ]
}

pub fn brotli(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 11, 22);
        w.write_all(bytes)?;
    }
    Ok(out)
}

pub fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    w.write_all(bytes)?;
    Ok(w.finish()?)
}

/// (raw, gzip, brotli) totals of a set of files.
fn measure(files: &[PathBuf]) -> anyhow::Result<(usize, usize, usize)> {
    let mut total = (0, 0, 0);
    for f in files {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        total.0 += bytes.len();
        total.1 += gzip(&bytes)?.len();
        total.2 += brotli(&bytes)?.len();
    }
    Ok(total)
}

pub fn print(report: &Report) -> anyhow::Result<()> {
    println!("xtask: sizes (bytes)        raw      gzip    brotli");
    for budget in budgets(report) {
        let (raw, gz, br) = measure(budget.files)?;
        println!("xtask:   {:<18} {raw:>8}  {gz:>8}  {br:>8}", budget.name);
    }
    Ok(())
}

/// Fails when any download exceeds its enforced budget; prints each against its budget and its target.
pub fn check_budgets(report: &Report) -> anyhow::Result<()> {
    let mut over = Vec::new();
    for budget in budgets(report) {
        anyhow::ensure!(!budget.files.is_empty(), "no files measured for the {}", budget.name);
        let (_, _, br) = measure(budget.files)?;
        let target = if br <= budget.target { "target met" } else { "target missed" };
        println!(
            "xtask: size budget: {:<18} {br:>7} B brotli ≤ {} B enforced; target {} B: {target}",
            budget.name, budget.limit, budget.target
        );
        if br > budget.limit {
            over.push(format!("the {} is {br} bytes brotli, over its budget of {}", budget.name, budget.limit));
        }
    }
    anyhow::ensure!(over.is_empty(), "{}", over.join("; "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `n` incompressible bytes (brotli adds a few bytes of framing).
    fn noise(dir: &std::path::Path, name: &str, n: usize) -> PathBuf {
        let mut x: u32 = 0x9e37_79b9;
        let bytes: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }

    #[test]
    fn the_enforced_budgets_never_exceed_the_targets() {
        const {
            assert!(WIDGET_BROTLI_BUDGET <= WIDGET_BROTLI_TARGET);
            assert!(CONSOLE_BROTLI_BUDGET <= CONSOLE_BROTLI_TARGET);
        }
    }

    #[test]
    fn each_download_over_its_budget_fails_the_check_and_within_passes() {
        let dir = std::env::temp_dir().join(format!("parley-sizes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let small = noise(&dir, "small", 1000);
        let ok = Report { loader: vec![small.clone()], widget: vec![small.clone()], console: vec![small.clone()] };
        assert!(check_budgets(&ok).is_ok());
        let cases = [
            Report { loader: vec![noise(&dir, "l", LOADER_BROTLI_BUDGET + 100)], ..Report::default() },
            Report { widget: vec![small.clone(), noise(&dir, "w", WIDGET_BROTLI_BUDGET)], ..Report::default() },
            Report { console: vec![noise(&dir, "c", CONSOLE_BROTLI_BUDGET + 100)], ..Report::default() },
        ];
        for (i, mut case) in cases.into_iter().enumerate() {
            for files in [&mut case.loader, &mut case.widget, &mut case.console] {
                if files.is_empty() {
                    files.push(small.clone());
                }
            }
            let err = check_budgets(&case).expect_err("over budget");
            let name = ["loader", "full widget", "console wasm"][i];
            assert!(err.to_string().contains(name), "{err}");
        }
        assert!(check_budgets(&Report::default()).is_err(), "nothing measured is an error, not a pass");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
