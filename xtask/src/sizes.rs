//! Size accounting for what visitors download: raw, gzip -9 and brotli -q11 bytes of the loader and of the full
//! widget (boot module + glue + Wasm + CSS), and the budget the tests enforce.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

/// The loader must stay this small (brotli bytes): it is on every page view of every customer.
pub const LOADER_BROTLI_BUDGET: usize = 3 * 1024;
/// The whole chat a visitor downloads on intent (brotli bytes).
pub const WIDGET_BROTLI_BUDGET: usize = 100 * 1024;

/// Files that make up each download.
#[derive(Default)]
pub struct Report {
    pub loader: Vec<PathBuf>,
    pub widget: Vec<PathBuf>,
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
    for (name, files) in [("loader widget.js", &report.loader), ("full widget", &report.widget)] {
        let (raw, gz, br) = measure(files)?;
        println!("xtask:   {name:<18} {raw:>8}  {gz:>8}  {br:>8}");
    }
    Ok(())
}

/// Fails when the loader exceeds its budget; reports the widget against its (later enforced) budget.
pub fn check_budgets(report: &Report) -> anyhow::Result<()> {
    let (_, _, loader) = measure(&report.loader)?;
    anyhow::ensure!(
        loader <= LOADER_BROTLI_BUDGET,
        "the loader is {loader} bytes brotli, over its budget of {LOADER_BROTLI_BUDGET}"
    );
    let (_, _, widget) = measure(&report.widget)?;
    println!(
        "xtask: size budget: loader {loader} ≤ {LOADER_BROTLI_BUDGET} B brotli; widget {widget} B brotli (target ≤ {WIDGET_BROTLI_BUDGET})"
    );
    Ok(())
}
