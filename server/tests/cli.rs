//! The `parley` command line, run as a real process against a temporary SQLite database (and, for `db copy`, a
//! PostgreSQL database on the test cluster).

#[path = "support/parley_cli.rs"]
mod parley_cli;

use std::process::{Command, Output, Stdio};

use parley_cli::{parley, parley_env, text};

#[test]
fn migrate_site_create_site_list_and_agent_create_work_from_the_command_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("cli.db").display());

    let out = parley(&db, &["migrate"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("migrations applied"));

    let out =
        parley(&db, &["site", "create", "--name", "Shop", "--key", "shop", "--origin", "https://Shop.Example/"], None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(r#"<script src="http://127.0.0.1:3000/widget.js" data-site="shop" async></script>"#));

    let out = parley(&db, &["site", "create", "--key", "shop", "--origin", "https://other.example"], None);
    assert!(!out.status.success());
    assert!(text(&out).contains("already exists"), "{}", text(&out));

    let out = parley(&db, &["site", "create", "--origin", "not-an-origin"], None);
    assert!(!out.status.success());
    assert!(text(&out).contains("must start with http"), "{}", text(&out));

    let out = parley(&db, &["site", "list"], None);
    assert!(text(&out).contains("shop\tShop\thttps://shop.example"), "{}", text(&out));

    let out = parley(
        &db,
        &["agent", "create", "--email", "dana@shop.example", "--name", "Dana", "--password-stdin"],
        Some("correct horse battery\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("agent Dana <dana@shop.example> created"));

    let out = parley(
        &db,
        &["agent", "create", "--email", "eve@shop.example", "--name", "Eve", "--password-stdin"],
        Some("short\n"),
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("at least 8 characters"), "{}", text(&out));
}

/// The Messenger keys of a complete configuration, ids numeric as Meta's are.
const MESSENGER: &[(&str, &str)] = &[
    ("PARLEY_MESSENGER__ENABLED", "true"),
    ("PARLEY_MESSENGER__APP_ID", "1517776481860111"),
    ("PARLEY_MESSENGER__PAGE_ID", "100000000000001"),
    ("PARLEY_MESSENGER__PAGE_TOKEN", "EAAB-token"),
    ("PARLEY_MESSENGER__APP_SECRET", "app-secret"),
    ("PARLEY_MESSENGER__VERIFY_TOKEN", "verify-token"),
];

/// Runs parley with extra variables; one still running after 30 s is killed and fails the test.
fn parley_with(db: &str, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
        .args(args)
        .env("PARLEY_DATABASE__URL", db)
        .env("RUST_LOG", "warn")
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("parley starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("status").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("parley {args:?} did not exit");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn numeric_messenger_ids_in_the_environment_are_accepted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("cli.db").display());
    let out = parley_with(&db, &["migrate"], MESSENGER);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn serve_refuses_to_start_with_messenger_on_and_an_empty_id_or_secret_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("cli.db").display());
    for (var, key) in [
        ("PARLEY_MESSENGER__APP_SECRET", "messenger.app_secret"),
        ("PARLEY_MESSENGER__APP_ID", "messenger.app_id"),
        ("PARLEY_MESSENGER__PAGE_ID", "messenger.page_id"),
    ] {
        let mut vars: Vec<(&str, &str)> = MESSENGER.iter().copied().filter(|(k, _)| *k != var).collect();
        vars.push((var, ""));
        // Port 0: should it start after all, it collides with nothing (and is killed as a failure).
        vars.push(("PARLEY_HTTP__BIND", "127.0.0.1:0"));
        let out = parley_with(&db, &["serve"], &vars);
        assert!(!out.status.success());
        assert!(text(&out).contains(key), "{}", text(&out));
    }
}

#[test]
fn agent_set_password_replaces_the_password_and_names_an_unknown_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("cli.db").display());
    let create = ["agent", "create", "--email", "dana@shop.example", "--name", "Dana", "--password-stdin"];
    let out = parley(&db, &create, Some("correct horse battery\n"));
    assert!(out.status.success(), "{}", text(&out));

    let out =
        parley(&db, &["agent", "set-password", "--email", "dana@shop.example", "--password-stdin"], Some("short\n"));
    assert!(!out.status.success());
    assert!(text(&out).contains("at least 8 characters"), "{}", text(&out));

    let out = parley(
        &db,
        &["agent", "set-password", "--email", "dana@shop.example", "--password-stdin"],
        Some("a new passphrase\n"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("password changed; dana@shop.example was signed out everywhere"), "{}", text(&out));

    let out = parley(
        &db,
        &["agent", "set-password", "--email", "nobody@shop.example", "--password-stdin"],
        Some("long enough\n"),
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("no agent with email nobody@shop.example"), "{}", text(&out));
}

/// `parley db copy` as an operator runs it: a SQLite installation made with the CLI moves to PostgreSQL, the
/// commands then work on the PostgreSQL URL, and a second copy into the filled database is refused.
#[tokio::test]
async fn db_copy_moves_an_installation_to_postgres_from_the_command_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite://{}", dir.path().join("cli.db").display());
    let out = parley(
        &sqlite,
        &["site", "create", "--name", "Shop", "--key", "shop", "--origin", "https://shop.example"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out));
    let postgres = testpg::database().await.url;

    let copy = ["db", "copy", "--from", sqlite.as_str(), "--to", postgres.as_str()];
    let out = parley(&sqlite, &copy, None);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("sites\t1"), "{}", text(&out));
    let out = parley(&postgres, &["site", "list"], None);
    assert!(text(&out).contains("shop\tShop\thttps://shop.example"), "{}", text(&out));
    let out = parley(
        &postgres,
        &["agent", "create", "--email", "dana@shop.example", "--name", "Dana", "--password-stdin"],
        Some("correct horse battery\n"),
    );
    assert!(out.status.success(), "the copied database takes new rows: {}", text(&out));

    let out = parley(&sqlite, &copy, None);
    assert!(!out.status.success());
    assert!(text(&out).contains("not empty"), "{}", text(&out));
    let out = parley(&sqlite, &["db", "copy", "--from", sqlite.as_str(), "--to", sqlite.as_str()], None);
    assert!(!out.status.success());
    assert!(text(&out).contains("--to must be a postgres"), "{}", text(&out));
    let missing = format!("sqlite://{}", dir.path().join("missing.db").display());
    let out = parley(&sqlite, &["db", "copy", "--from", missing.as_str(), "--to", postgres.as_str()], None);
    assert!(!out.status.success());
    assert!(text(&out).contains("no SQLite database"), "{}", text(&out));
}

#[test]
fn workspaces_sites_agents_and_pages_are_managed_from_the_command_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}", dir.path().join("cli.db").display());
    let ok = |out: Output| {
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
    };
    let failed = |out: Output| {
        assert!(!out.status.success(), "{}", text(&out));
        text(&out)
    };
    let key = ok(parley(&db, &["page", "key"], None)).trim().to_string();
    assert_eq!(key.len(), 44, "32 bytes in base64: {key}");
    let with_key = [("PARLEY_MESSENGER__TOKEN_KEY", key.as_str())];

    assert!(ok(parley(&db, &["workspace", "create", "--key", "acme", "--name", "Acme"], None)).contains("created"));
    assert!(
        failed(parley(&db, &["workspace", "add", "--key", "acme", "--name", "Again"], None)).contains("already exists")
    );
    let list = ok(parley(&db, &["workspace", "list"], None));
    assert!(list.contains("default\tDefault") && list.contains("acme\tAcme"), "{list}");

    let site = ["site", "create", "--key", "acme-shop", "--origin", "https://acme.example", "--workspace", "acme"];
    ok(parley(&db, &site, None));
    let nope = ["site", "create", "--key", "x", "--origin", "https://x.example", "--workspace", "nope"];
    assert!(failed(parley(&db, &nope, None)).contains("no workspace with key nope"));
    ok(parley(&db, &["site", "create", "--key", "shop", "--origin", "https://shop.example"], None));
    let sites = ok(parley(&db, &["site", "list"], None));
    assert!(sites.contains("acme-shop\tMy site\thttps://acme.example\tacme"), "{sites}");
    assert!(sites.contains("shop\tMy site\thttps://shop.example\tdefault"), "{sites}");
    let agent = ["agent", "create", "--email", "bea@acme.example", "--name", "Bea", "--password-stdin", "--workspace"];
    ok(parley(&db, &[&agent[..], &["acme"]].concat(), Some("correct horse battery\n")));

    let token_file = dir.path().join("page-token");
    std::fs::write(&token_file, "EAAB-acme-page-token\n").expect("token file");
    let token_path = token_file.to_string_lossy().to_string();
    let connect = ["page", "connect", "--site", "acme-shop", "--page-id", "222", "--token-file", token_path.as_str()];
    assert!(failed(parley(&db, &connect, None)).contains("messenger.token_key"), "no key, no Page");
    assert!(ok(parley_env(&db, &connect, &with_key, None)).contains("Page 222 connected"));
    let wide = ["page", "connect", "--page-id", "333", "--token-stdin", "--username", "shop"];
    ok(parley_env(&db, &wide, &with_key, Some("EAAB-default-page-token\n")));
    assert!(
        failed(parley_env(&db, &["page", "connect", "--page-id", "1", "--token", "EAAB"], &with_key, None))
            .contains("--token"),
        "a token is never taken on the command line"
    );
    let pages = ok(parley(&db, &["page", "list"], None));
    assert!(pages.contains("222\tacme\tacme-shop\t") && pages.contains("333\tdefault\t*\tshop"), "{pages}");
    // The database files (main, WAL) hold no clear token.
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        if path == token_file {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        for token in [b"EAAB-acme-page-token".as_slice(), b"EAAB-default-page-token"] {
            assert!(!bytes.windows(token.len()).any(|w| w == token), "clear token in {}", path.display());
        }
    }

    // Started with another key, the server refuses and names the key; the Page disconnects.
    let mut vars: Vec<(&str, &str)> = MESSENGER.to_vec();
    let other = ok(parley(&db, &["page", "key"], None)).trim().to_string();
    vars.push(("PARLEY_MESSENGER__TOKEN_KEY", other.as_str()));
    vars.push(("PARLEY_HTTP__BIND", "127.0.0.1:0"));
    let refused = parley_with(&db, &["serve"], &vars);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("messenger.token_key"), "{}", text(&refused));
    assert!(!text(&refused).contains("EAAB"), "{}", text(&refused));
    ok(parley(&db, &["page", "disconnect", "--page-id", "333"], None));
    assert!(failed(parley(&db, &["page", "disconnect", "--page-id", "333"], None)).contains("no Page 333"));
}
