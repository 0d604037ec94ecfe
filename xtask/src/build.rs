//! `cargo xtask build`: compiles the server, the widget and the console, and lays out `target/site/` (in
//! `$CARGO_TARGET_DIR` when that is set):
//!
//! ```text
//! target/site/widget.js(.br,.gz)                 the loader (stable URL, embedded by customers)
//! target/site/assets/widget-<hash>.js/_bg.wasm    the widget's wasm-bindgen glue and Wasm
//! target/site/assets/widget-boot-<hash>.js        module that starts the widget
//! target/site/assets/widget-<hash>.css
//! target/site/assets/console-…                    the same for the hydrated console
//! target/site/manifest.json                       entry points, read by the server at start
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::sizes::{self, Report};
use crate::tools;

/// Cargo's target directory: `$CARGO_TARGET_DIR` (CI keeps one outside the clone) or `<root>/target`.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// How to build the server binary.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ServerProfile {
    Debug,
    Release,
}

/// A Wasm front-end crate and how to build it.
struct Frontend {
    /// Cargo package.
    package: &'static str,
    /// Extra cargo arguments (features).
    features: &'static [&'static str],
    /// Base name of the output files (`widget`, `console`).
    name: &'static str,
    /// Stylesheet in `style/`.
    css: &'static str,
    /// Body of the boot module; `{glue}` and `{wasm}` are replaced with the hashed file names.
    boot: &'static str,
}

const WIDGET: Frontend = Frontend {
    package: "widget",
    features: &[],
    name: "widget",
    css: "style/widget.css",
    boot: "import init from './{glue}';\ninit({ module_or_path: new URL('./{wasm}', import.meta.url) });\n",
};

const CONSOLE: Frontend = Frontend {
    package: "app",
    features: &["--features", "hydrate"],
    name: "console",
    css: "style/console.css",
    boot: "import init, { hydrate } from './{glue}';\ninit({ module_or_path: new URL('./{wasm}', import.meta.url) }).then(() => hydrate());\n",
};

/// Builds everything and returns the size report.
pub fn all(root: &Path, profile: ServerProfile) -> anyhow::Result<Report> {
    let started = std::time::Instant::now();
    tools::ensure_wasm_target()?;
    let node = root.join("xtask");
    tools::npm_ci(&node)?;

    let site = target_dir(root).join("site");
    if site.exists() {
        std::fs::remove_dir_all(&site).context("cannot clear target/site")?;
    }
    let assets = site.join("assets");
    std::fs::create_dir_all(&assets)?;

    let mut manifest = serde_json::Map::new();
    let mut report = Report::default();
    for frontend in [&WIDGET, &CONSOLE] {
        let files = build_frontend(root, &assets, frontend)?;
        manifest.insert(format!("{}_boot", frontend.name), format!("assets/{}", files.boot).into());
        manifest.insert(format!("{}_css", frontend.name), format!("assets/{}", files.css).into());
        if frontend.name == "widget" {
            report.widget = files.all.iter().map(|f| assets.join(f)).collect();
        } else {
            report.console = vec![assets.join(&files.wasm)];
        }
    }

    // The loader: minified, never hashed (its URL lives in customers' pages).
    let loader = site.join("widget.js");
    esbuild(
        root,
        &["widget/loader/widget.js", "--minify", "--target=es2017", &format!("--outfile={}", loader.display())],
    )?;
    report.loader = vec![loader];

    std::fs::write(site.join("manifest.json"), serde_json::to_string_pretty(&manifest)?)?;
    precompress(&site)?;

    let mut args = vec!["build", "-p", "server", "--bin", "parley"];
    if profile == ServerProfile::Release {
        args.push("--release");
    }
    tools::cargo(&args)?;
    // The production binary never carries the Messenger emulator; the debug build adds `parley-demo`, which does
    // (for `cargo xtask demo` and the browser tests).
    let bin_dir = target_dir(root).join(if profile == ServerProfile::Release { "release" } else { "debug" });
    check_sandbox(&bin_dir.join("parley"), false)?;
    if profile == ServerProfile::Debug {
        tools::cargo(&["build", "-p", "server", "--bin", "parley-demo", "--features", "demo-sandbox"])?;
        check_sandbox(&bin_dir.join("parley-demo"), true)?;
    }

    sizes::print(&report)?;
    println!("xtask: build finished in {:.0?}", started.elapsed());
    Ok(report)
}

/// Fails unless `binary` links the Messenger sandbox exactly when `expected` (its crate name is in every symbol
/// of it).
fn check_sandbox(binary: &Path, expected: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let needle = b"messenger_sandbox";
    let carries = bytes.windows(needle.len()).any(|w| w == needle);
    anyhow::ensure!(
        carries == expected,
        "{} {} the Messenger sandbox",
        binary.display(),
        if carries { "carries" } else { "lacks" }
    );
    Ok(())
}

struct FrontendFiles {
    boot: String,
    css: String,
    wasm: String,
    all: Vec<String>,
}

fn build_frontend(root: &Path, assets: &Path, frontend: &Frontend) -> anyhow::Result<FrontendFiles> {
    println!("xtask: building {} (wasm32, wasm-release)", frontend.name);
    let mut args = vec![
        "build",
        "-p",
        frontend.package,
        "--lib",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm-release",
    ];
    args.extend_from_slice(frontend.features);
    tools::cargo(&args)?;
    let wasm = target_dir(root).join("wasm32-unknown-unknown/wasm-release").join(format!("{}.wasm", frontend.package));

    let tmp = target_dir(root).join("xtask").join(frontend.name);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&wasm)
        .out_name(frontend.name)
        .typescript(false)
        .remove_name_section(true)
        .remove_producers_section(true)
        .web(true)
        .map_err(|e| anyhow::anyhow!("wasm-bindgen: {e}"))?
        .generate(&tmp)
        .map_err(|e| anyhow::anyhow!("wasm-bindgen on {}: {e}", wasm.display()))?;

    let bg = tmp.join(format!("{}_bg.wasm", frontend.name));
    let optimized = tmp.join(format!("{}_opt.wasm", frontend.name));
    wasm_opt(root, &bg, &optimized)?;
    let glue_min = tmp.join(format!("{}.min.js", frontend.name));
    esbuild(
        root,
        &[
            &tmp.join(format!("{}.js", frontend.name)).to_string_lossy(),
            "--minify",
            "--format=esm",
            "--target=es2020",
            &format!("--outfile={}", glue_min.display()),
        ],
    )?;
    let css_min = tmp.join(format!("{}.min.css", frontend.name));
    esbuild(root, &[frontend.css, "--minify", &format!("--outfile={}", css_min.display())])?;

    let wasm_name = hashed(assets, &optimized, &format!("{}-", frontend.name), "_bg.wasm")?;
    let glue_name = hashed(assets, &glue_min, &format!("{}-", frontend.name), ".js")?;
    let css_name = hashed(assets, &css_min, &format!("{}-", frontend.name), ".css")?;
    let boot_src = tmp.join("boot.js");
    std::fs::write(&boot_src, frontend.boot.replace("{glue}", &glue_name).replace("{wasm}", &wasm_name))?;
    let boot_name = hashed(assets, &boot_src, &format!("{}-boot-", frontend.name), ".js")?;
    Ok(FrontendFiles {
        all: vec![boot_name.clone(), glue_name, wasm_name.clone(), css_name.clone()],
        wasm: wasm_name,
        boot: boot_name,
        css: css_name,
    })
}

/// Copies `src` into `dir` as `<prefix><hash><suffix>` and returns that name.
fn hashed(dir: &Path, src: &Path, prefix: &str, suffix: &str) -> anyhow::Result<String> {
    let bytes = std::fs::read(src).with_context(|| format!("cannot read {}", src.display()))?;
    let digest = Sha256::digest(&bytes);
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    let name = format!("{prefix}{hash}{suffix}");
    std::fs::write(dir.join(&name), bytes)?;
    Ok(name)
}

fn node_bin(root: &Path, name: &str) -> PathBuf {
    root.join("xtask/node_modules/.bin").join(name)
}

fn esbuild(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    tools::run(Command::new(node_bin(root, "esbuild")).args(args).arg("--log-level=warning").current_dir(root))
}

/// binaryen's wasm-opt from npm, with the Wasm features Rust enables by default for wasm32-unknown-unknown.
///
/// Tuned for the brotli size, which is what visitors download, not the raw size: plain `-Oz` inlines every
/// function that has one caller, which makes the Wasm smaller but compresses worse (widget 136.6 KB brotli with
/// `-Oz`, 132.9 KB without wasm-opt at all). Inlining only small single-caller functions (`-ocimfs 20`) and
/// running the passes to a fixed point (`--converge`) gives 127.7 KB for the widget and 315.6 KB for the console
/// (from 342.7 KB). Measured with binaryen 132 on the bindgen output. `-Os` in place of `-Oz` (with the same two
/// flags) is smaller again once brotli'd: console 255,292 → 254,466 B, widget 87,933 → 87,826 B (Wasm alone,
/// 2026-12-01); other `--one-caller-inline-max-function-size` values (0, 50) were worse, `--gufa` saved under 0.1 KB.
fn wasm_opt(root: &Path, input: &Path, output: &Path) -> anyhow::Result<()> {
    tools::run(
        Command::new(node_bin(root, "wasm-opt"))
            .arg(input)
            .args([
                "-Os",
                "--one-caller-inline-max-function-size=20",
                "--converge",
                "--enable-bulk-memory",
                "--enable-nontrapping-float-to-int",
                "--enable-sign-ext",
                "--enable-mutable-globals",
                "--enable-reference-types",
                "--enable-multivalue",
                "-o",
            ])
            .arg(output),
    )
}

/// Writes `.br` (quality 11) and `.gz` (level 9) beside every JS, Wasm and CSS file under `dir`.
fn precompress(dir: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            precompress(&path)?;
            continue;
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "js" | "wasm" | "css") {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        std::fs::write(append_ext(&path, "br"), sizes::brotli(&bytes)?)?;
        std::fs::write(append_ext(&path, "gz"), sizes::gzip(&bytes)?)?;
    }
    Ok(())
}

fn append_ext(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}
