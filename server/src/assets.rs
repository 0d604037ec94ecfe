//! The built front-end: where it lives on disk and the content-hashed names of its entry points.
//!
//! `cargo xtask build` writes `<assets.dir>/manifest.json` next to `widget.js` and `assets/`. The server reads it
//! once at start. When it is missing (a server built without the front-end) the server still runs: the frame page
//! and the console say the front-end is not built, and a warning is logged.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Paths (relative to the site root, e.g. `assets/widget-boot-1a2b3c.js`) of the hashed entry points.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Manifest {
    pub widget_boot: Option<String>,
    pub widget_css: Option<String>,
    pub console_boot: Option<String>,
    pub console_css: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Assets {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Assets {
    pub fn load(dir: &Path) -> Self {
        let path = dir.join("manifest.json");
        let manifest = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "invalid asset manifest; run `cargo xtask build`");
                Manifest::default()
            }),
            Err(_) => {
                tracing::warn!(path = %path.display(), "no asset manifest; run `cargo xtask build` to build the widget and console");
                Manifest::default()
            }
        };
        Self { dir: dir.to_path_buf(), manifest }
    }

    /// URL path of an asset named in the manifest.
    pub fn url(entry: &Option<String>) -> Option<String> {
        entry.as_ref().map(|p| format!("/{}", p.trim_start_matches('/')))
    }
}
