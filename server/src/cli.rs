//! The `parley` command line: `serve`, `migrate`, `agent create|set-password`, `site create|list|identity`, `demo`,
//! `messenger quarantine list|replay`, `db copy`, `workspace create|list`, `page connect|list|disconnect|key`.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::auth;
use crate::config::Settings;
use crate::demo;
use crate::startup::Application;
use crate::store::{Store, StoreError};

#[derive(Parser, Debug)]
#[command(name = "parley", version, about = "Parley: website live chat that continues on Messenger")]
pub struct Cli {
    /// TOML settings file (default: $PARLEY_CONFIG, else ./parley.toml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the chat server.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Manage sites (websites that embed the widget).
    #[command(subcommand)]
    Site(SiteCommand),
    /// Run the demo: a demo site and agent, the chat server, and a host page on another origin.
    Demo(demo::DemoArgs),
    /// Messenger channel maintenance.
    #[command(subcommand)]
    Messenger(MessengerCommand),
    /// Database maintenance.
    #[command(subcommand)]
    Db(DbCommand),
    /// Manage workspaces (tenants: each owns its sites, agents and Messenger Pages).
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// Manage Messenger Pages (several in one deployment; tokens stored encrypted under messenger.token_key).
    #[command(subcommand)]
    Page(PageCommand),
}

#[derive(Subcommand, Debug)]
pub enum WorkspaceCommand {
    /// Create a workspace.
    #[command(alias = "add")]
    Create(WorkspaceArgs),
    /// List workspaces: key, name.
    List,
}

#[derive(Args, Debug)]
pub struct WorkspaceArgs {
    /// Key the other commands take with --workspace (letters, digits, - and _).
    #[arg(long)]
    pub key: String,
    #[arg(long)]
    pub name: String,
}

#[derive(Subcommand, Debug)]
pub enum PageCommand {
    /// Connect a Page to a site (--site), or to a workspace for every site of it without its own Page
    /// (--workspace; neither: the default workspace). Again with the same page id: replaces its token or place.
    Connect(PageConnectArgs),
    /// List connected Pages: page id, workspace, site (or * for workspace-wide), username.
    List,
    /// Disconnect a Page (its customers' pending sends fail with a note to agents).
    Disconnect(PageIdArgs),
    /// Print a new random messenger.token_key (32 bytes, base64).
    Key,
}

#[derive(Args, Debug)]
pub struct PageConnectArgs {
    /// The Page's numeric id.
    #[arg(long)]
    pub page_id: String,
    /// The site whose customers this Page serves.
    #[arg(long, conflicts_with = "workspace")]
    pub site: Option<String>,
    /// The workspace whose sites without a Page of their own this Page serves (default: the default workspace).
    #[arg(long)]
    pub workspace: Option<String>,
    /// File holding the Page access token.
    #[arg(long, conflicts_with = "token_stdin")]
    pub token_file: Option<PathBuf>,
    /// Read the Page access token from standard input.
    #[arg(long)]
    pub token_stdin: bool,
    /// Page username for m.me links (default: the page id).
    #[arg(long)]
    pub username: Option<String>,
}

#[derive(Args, Debug)]
pub struct PageIdArgs {
    #[arg(long)]
    pub page_id: String,
}

#[derive(Subcommand, Debug)]
pub enum DbCommand {
    /// Copy a whole installation from SQLite into a new, empty PostgreSQL database (stop the server first), e.g.
    /// `parley db copy --from sqlite://data/parley.db --to postgres://parley@db.internal/parley`.
    Copy(DbCopyArgs),
}

#[derive(Args, Debug)]
pub struct DbCopyArgs {
    /// The SQLite database to copy (`sqlite://path`).
    #[arg(long)]
    pub from: String,
    /// The empty PostgreSQL database to copy into (`postgres://user@host[:port]/database`); it must exist.
    #[arg(long)]
    pub to: String,
}

#[derive(Subcommand, Debug)]
pub enum MessengerCommand {
    /// Webhook deliveries that kept failing and were set aside.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
}

#[derive(Subcommand, Debug)]
pub enum QuarantineCommand {
    /// List quarantined deliveries: id, received (epoch ms), attempts, last error.
    List,
    /// Hand quarantined deliveries back to the intake (the running server applies them within 30 s).
    Replay(ReplayArgs),
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct ReplayArgs {
    /// The delivery to replay.
    pub id: Option<i64>,
    /// Replay every quarantined delivery.
    #[arg(long)]
    pub all: bool,
}

#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Create an agent who can sign in to the console.
    Create(AgentArgs),
    /// Replace an agent's password (signs them out everywhere).
    SetPassword(AgentPasswordArgs),
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    #[arg(long)]
    pub email: String,
    /// Display name shown to visitors.
    #[arg(long)]
    pub name: String,
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
    /// The workspace whose conversations the agent sees (default: the default workspace).
    #[arg(long)]
    pub workspace: Option<String>,
}

#[derive(Args, Debug)]
pub struct AgentPasswordArgs {
    #[arg(long)]
    pub email: String,
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Subcommand, Debug)]
pub enum SiteCommand {
    /// Create a site and print its embed tag.
    Create(SiteArgs),
    /// List sites: key, name, allowed origins, workspace.
    List,
    /// Signed identity for logged-in customers: make a new identity secret (printed once) or remove it, and
    /// require identity or not.
    Identity(SiteIdentityArgs),
}

#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("change").required(true).multiple(true).args(["generate", "clear", "require", "no_require"]))]
pub struct SiteIdentityArgs {
    /// The site's key.
    #[arg(long)]
    pub site: String,
    /// Make a new identity secret (replacing any old one: hashes made with it stop verifying) and print it once.
    #[arg(long, conflicts_with = "clear")]
    pub generate: bool,
    /// Remove the identity secret: no identity verifies any more.
    #[arg(long)]
    pub clear: bool,
    /// Only identified customers may chat; others see no history and cannot send.
    #[arg(long, conflicts_with = "no_require")]
    pub require: bool,
    /// Anonymous visitors may chat again (the default).
    #[arg(long)]
    pub no_require: bool,
}

#[derive(Args, Debug)]
pub struct SiteArgs {
    /// Exact origin allowed to embed the widget, e.g. https://shop.example (repeat for several).
    #[arg(long = "origin", required = true)]
    pub origins: Vec<String>,
    #[arg(long, default_value = "My site")]
    pub name: String,
    /// Public site key for the embed tag (default: random).
    #[arg(long)]
    pub key: Option<String>,
    /// First message the widget shows.
    #[arg(long, default_value = "Hi! How can we help?")]
    pub greeting: String,
    /// The workspace that owns the site (default: the default workspace).
    #[arg(long)]
    pub workspace: Option<String>,
}

/// `parley site identity`: applies the changes; a generated secret is printed once, to stdout only.
async fn site_identity(store: &Store, args: &SiteIdentityArgs) -> anyhow::Result<()> {
    let site = store.site_by_key(&args.site).await?.ok_or_else(|| anyhow::anyhow!("no site with key {}", args.site))?;
    if args.generate || args.clear {
        let secret = args.generate.then(crate::identity::IdentitySecret::generate);
        store.set_identity_secret(&site.key, secret.as_ref()).await?;
        match &secret {
            Some(secret) => {
                println!("identity secret for site {} (shown once; keep it on your backend only):", site.key);
                println!("{}", secret.expose());
                println!("hash = hex(HMAC-SHA256(key = this secret as UTF-8, message = the customer's id))");
            }
            None => println!("identity secret of site {} removed", site.key),
        }
    }
    if args.require || args.no_require {
        store.set_identity_required(&site.key, args.require).await?;
        let state = if args.require { "requires" } else { "does not require" };
        println!("site {} {state} identity", site.key);
    }
    if args.require && store.site_identity(&site.id).await?.secret.is_none() {
        eprintln!("warning: site {} has no identity secret, so nobody can chat until you --generate one", site.key);
    }
    Ok(())
}

/// `parley page connect|list|disconnect`.
async fn page_command(store: &Store, settings: &Settings, command: PageCommand) -> anyhow::Result<()> {
    match command {
        PageCommand::Connect(args) => {
            let key = settings.messenger.token_key()?.ok_or_else(|| {
                anyhow::anyhow!(
                    "set messenger.token_key (or messenger.token_key_file) first: Page tokens are stored encrypted \
                     under it (make one with `parley page key`)"
                )
            })?;
            let token = crate::tenancy::read_secret(args.token_file.as_deref(), args.token_stdin)?;
            let target = match args.site {
                Some(site) => crate::tenancy::PageTarget::Site(site),
                None => crate::tenancy::PageTarget::Workspace(args.workspace),
            };
            let row =
                crate::tenancy::connect_page(store, &key, &target, &args.page_id, &token, args.username.as_deref())
                    .await?;
            println!("Page {} connected (token stored encrypted)", row.page_id);
        }
        PageCommand::List => {
            let workspaces = store.workspaces().await?;
            let sites = store.sites().await?;
            for page in store.pages().await? {
                let workspace = workspaces.iter().find(|w| w.id == page.workspace_id).map_or("?", |w| w.key.as_str());
                let site = match &page.site_id {
                    Some(id) => sites.iter().find(|s| &s.id == id).map_or("?", |s| s.key.as_str()),
                    None => "*",
                };
                println!("{}\t{workspace}\t{site}\t{}", page.page_id, page.username.as_deref().unwrap_or(""));
            }
        }
        PageCommand::Disconnect(args) => {
            anyhow::ensure!(store.delete_page(&args.page_id).await?, "no Page {} is connected", args.page_id);
            println!("Page {} disconnected", args.page_id);
        }
        PageCommand::Key => println!("{}", crate::messenger::pages::TokenKey::generate()),
    }
    Ok(())
}

/// The whole program behind both binaries: parse the command line, run it, report an error on stderr.
pub async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line (logging starts once the settings, which choose its format, are loaded).
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(cli.config.as_deref())?;
    crate::telemetry::init(settings.log.format);
    match cli.command {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            let store = Store::connect(&settings.database.url, 1).await?;
            store.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Agent(AgentCommand::Create(args)) => {
            let store = Store::connect(&settings.database.url, 1).await?;
            let workspace = crate::tenancy::workspace(&store, args.workspace.as_deref()).await?;
            let password = read_password(args.password_stdin)?;
            let agent = create_agent_in(&store, &workspace.id, &args.email, &args.name, &password).await?;
            println!("agent {} <{}> created", agent.name, agent.email);
            Ok(())
        }
        Command::Agent(AgentCommand::SetPassword(args)) => {
            let store = Store::connect(&settings.database.url, 1).await?;
            let password = read_password(args.password_stdin)?;
            check_password(&password)?;
            let hash = auth::hash_password(&password)?;
            anyhow::ensure!(store.set_agent_password(&args.email, &hash).await?, "no agent with email {}", args.email);
            println!("password changed; {} was signed out everywhere", args.email);
            Ok(())
        }
        Command::Site(SiteCommand::Create(args)) => {
            let store = Store::connect(&settings.database.url, 1).await?;
            let key = args.key.unwrap_or_else(|| auth::new_token()[..16].to_string());
            let origins = normalize_origins(&args.origins)?;
            let workspace = crate::tenancy::workspace(&store, args.workspace.as_deref()).await?;
            let site =
                store.create_site_in(&workspace.id, &key, &args.name, &origins, &args.greeting).await.map_err(|e| {
                    match e {
                        StoreError::Conflict(_) => anyhow::anyhow!("a site with key {key} already exists"),
                        other => other.into(),
                    }
                })?;
            println!("site {} created with key {}", site.name, site.key);
            println!("embed it with:");
            println!(
                "<script src=\"{}/widget.js\" data-site=\"{}\" async></script>",
                settings.public_origin(),
                site.key
            );
            Ok(())
        }
        Command::Site(SiteCommand::List) => {
            let store = Store::connect(&settings.database.url, 1).await?;
            let workspaces = store.workspaces().await?;
            for site in store.sites().await? {
                let workspace = workspaces.iter().find(|w| w.id == site.workspace_id).map_or("?", |w| w.key.as_str());
                println!("{}\t{}\t{}\t{workspace}", site.key, site.name, site.allowed_origins().join(" "));
            }
            Ok(())
        }
        Command::Site(SiteCommand::Identity(args)) => {
            let store = Store::connect(&settings.database.url, 1).await?;
            site_identity(&store, &args).await?;
            store.close().await;
            Ok(())
        }
        Command::Demo(args) => demo::run(settings, args).await,
        Command::Workspace(command) => {
            let store = Store::connect(&settings.database.url, 1).await?;
            match command {
                WorkspaceCommand::Create(args) => {
                    let workspace = crate::tenancy::create_workspace(&store, &args.key, &args.name).await?;
                    println!("workspace {} created with key {}", workspace.name, workspace.key);
                }
                WorkspaceCommand::List => {
                    for workspace in store.workspaces().await? {
                        println!("{}\t{}", workspace.key, workspace.name);
                    }
                }
            }
            store.close().await;
            Ok(())
        }
        Command::Page(PageCommand::Key) => {
            println!("{}", crate::messenger::pages::TokenKey::generate());
            Ok(())
        }
        Command::Page(command) => {
            let store = Store::connect(&settings.database.url, 1).await?;
            page_command(&store, &settings, command).await?;
            store.close().await;
            Ok(())
        }
        Command::Db(DbCommand::Copy(args)) => {
            let report = crate::store::copy::copy(&args.from, &args.to).await?;
            for (table, rows) in &report.tables {
                println!("{table}\t{rows}");
            }
            println!("copied; point database.url at the PostgreSQL database and start parley");
            Ok(())
        }
        Command::Messenger(MessengerCommand::Quarantine(command)) => {
            let store = Store::connect(&settings.database.url, 1).await?;
            match command {
                QuarantineCommand::List => {
                    let rows = store.quarantined_deliveries().await?;
                    for row in &rows {
                        println!(
                            "{}\t{}\t{}\t{}",
                            row.id,
                            row.received_at,
                            row.attempts,
                            row.error.as_deref().unwrap_or("")
                        );
                    }
                    println!("{} quarantined", rows.len());
                }
                QuarantineCommand::Replay(args) => {
                    let released = store.replay_quarantined(if args.all { None } else { args.id }).await?;
                    anyhow::ensure!(
                        released > 0 || args.all,
                        "no quarantined delivery with id {}",
                        args.id.unwrap_or(0)
                    );
                    println!("{released} delivery(ies) released for replay");
                }
            }
            store.close().await;
            Ok(())
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    // Every socket is a file descriptor: take all the system allows (README, Deployment).
    match crate::accept::raise_open_file_limit() {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let listener = crate::startup::bind_listener(settings.http.bind)
        .with_context(|| format!("cannot listen on {}", settings.http.bind))?;
    let app = Application::build(settings, listener).await?;
    tracing::info!(addr = %app.local_addr()?, "parley is listening");
    app.run_until_stopped(shutdown_signal()).await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// Creates an agent of the default workspace with an argon2id-hashed password.
pub async fn create_agent(
    store: &Store,
    email: &str,
    name: &str,
    password: &str,
) -> anyhow::Result<crate::store::models::Agent> {
    create_agent_in(store, crate::store::DEFAULT_WORKSPACE, email, name, password).await
}

/// Creates an agent of a workspace (by id) with an argon2id-hashed password.
pub async fn create_agent_in(
    store: &Store,
    workspace_id: &str,
    email: &str,
    name: &str,
    password: &str,
) -> anyhow::Result<crate::store::models::Agent> {
    anyhow::ensure!(email.contains('@'), "{email} is not an email address");
    check_password(password)?;
    let hash = auth::hash_password(password)?;
    store.create_agent_in(workspace_id, email.trim(), name.trim(), &hash).await.map_err(|e| match e {
        StoreError::Conflict(_) => anyhow::anyhow!("an agent with email {email} already exists"),
        StoreError::NotFound => anyhow::anyhow!("there is no such workspace"),
        other => other.into(),
    })
}

fn check_password(password: &str) -> anyhow::Result<()> {
    anyhow::ensure!(password.chars().count() >= 8, "the password needs at least 8 characters");
    Ok(())
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("cannot read the password from stdin")?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let first = rpassword::prompt_password("Password: ").context("cannot prompt (use --password-stdin)")?;
    let second = rpassword::prompt_password("Repeat password: ").context("cannot prompt")?;
    anyhow::ensure!(first == second, "the passwords differ");
    Ok(first)
}

/// Checks and normalizes allowed origins: `scheme://host[:port]`, no path, no trailing slash.
pub fn normalize_origins(origins: &[String]) -> anyhow::Result<Vec<String>> {
    origins
        .iter()
        .map(|o| {
            let o = o.trim().trim_end_matches('/');
            let rest = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .with_context(|| format!("origin {o} must start with http:// or https://"))?;
            anyhow::ensure!(
                !rest.is_empty()
                    && !rest.contains('/')
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)),
                "origin {o} must be scheme://host[:port] with no path"
            );
            Ok(o.to_ascii_lowercase())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::normalize_origins;

    #[test]
    fn origins_are_normalized_and_checked() {
        let ok = normalize_origins(&["https://Shop.Example/".into(), "http://127.0.0.1:8080".into()]).expect("valid");
        assert_eq!(ok, vec!["https://shop.example", "http://127.0.0.1:8080"]);
        assert!(normalize_origins(&["shop.example".into()]).is_err());
        assert!(normalize_origins(&["https://shop.example/path".into()]).is_err());
        assert!(normalize_origins(&["https://a.example; script-src *".into()]).is_err());
    }
}
