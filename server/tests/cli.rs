//! The `parley` command line, run as a real process against a temporary SQLite database.

#[path = "support/parley_cli.rs"]
mod parley_cli;

use parley_cli::{parley, text};

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
