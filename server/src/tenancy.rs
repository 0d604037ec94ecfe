//! Tenancy administration behind the CLI (`parley workspace …`, `parley page …`, `--workspace` of `site create` and
//! `agent create`): naming a workspace by key (none named: the default one), and connecting a Messenger Page to a
//! site or a workspace with its token sealed under `messenger.token_key`. Secrets come from a file or standard
//! input, never from the command line.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};

use crate::messenger::pages::TokenKey;
use crate::store::models::{PageRow, Workspace};
use crate::store::{DEFAULT_WORKSPACE, Store, StoreError};

/// The workspace with this key; `None` names the default workspace.
pub async fn workspace(store: &Store, key: Option<&str>) -> anyhow::Result<Workspace> {
    let key = key.unwrap_or(DEFAULT_WORKSPACE);
    store
        .workspace_by_key(key)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no workspace with key {key} (see `parley workspace list`)"))
}

/// Creates a workspace.
pub async fn create_workspace(store: &Store, key: &str, name: &str) -> anyhow::Result<Workspace> {
    let key = key.trim();
    anyhow::ensure!(
        !key.is_empty() && key.len() <= 64 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b)),
        "a workspace key is 1 to 64 letters, digits, - or _"
    );
    store.create_workspace(key, name.trim()).await.map_err(|e| match e {
        StoreError::Conflict(_) => anyhow::anyhow!("a workspace with key {key} already exists"),
        other => other.into(),
    })
}

/// Where a Page is connected: one site (its workspace follows), or a whole workspace (every site of it without a
/// Page of its own).
#[derive(Clone, Debug)]
pub enum PageTarget {
    Site(String),
    Workspace(Option<String>),
}

/// Connects (or reconnects, with a new token or place) a Page, its token sealed under `key`.
pub async fn connect_page(
    store: &Store,
    key: &TokenKey,
    target: &PageTarget,
    page_id: &str,
    token: &SecretString,
    username: Option<&str>,
) -> anyhow::Result<PageRow> {
    let page_id = page_id.trim();
    anyhow::ensure!(
        !page_id.is_empty() && page_id.len() <= 64 && page_id.bytes().all(|b| b.is_ascii_digit()),
        "a page id is the Page's numeric id"
    );
    anyhow::ensure!(!token.expose_secret().trim().is_empty(), "the Page token is empty");
    let (workspace_id, site_id) = match target {
        PageTarget::Site(site_key) => {
            let site =
                store.site_by_key(site_key).await?.ok_or_else(|| anyhow::anyhow!("no site with key {site_key}"))?;
            (site.workspace_id, Some(site.id))
        }
        PageTarget::Workspace(key) => (workspace(store, key.as_deref()).await?.id, None),
    };
    let (token_nonce, token_ciphertext) = key.seal(page_id, token)?;
    let row = PageRow {
        page_id: page_id.to_string(),
        workspace_id,
        site_id,
        username: username.map(str::trim).filter(|u| !u.is_empty()).map(str::to_string),
        token_nonce,
        token_ciphertext,
    };
    store.save_page(&row).await.map_err(|e| match e {
        StoreError::Conflict(_) => anyhow::anyhow!(
            "that site (or, for a workspace-wide Page, that workspace) has another Page: disconnect it first"
        ),
        other => other.into(),
    })?;
    Ok(row)
}

/// A secret from a file (trimmed) or the first line of standard input.
pub fn read_secret(file: Option<&Path>, stdin: bool) -> anyhow::Result<SecretString> {
    let text = match (file, stdin) {
        (Some(path), false) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        (None, true) => {
            let mut text = String::new();
            std::io::stdin().lock().read_to_string(&mut text).context("cannot read standard input")?;
            text
        }
        _ => anyhow::bail!("give the token with --token-file PATH or --token-stdin (never on the command line)"),
    };
    Ok(SecretString::from(text.trim().to_string()))
}
