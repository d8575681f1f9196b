//! The HTTP API and the CLI's read commands while the daemon holds the store.

use crate::support::{DeskConfig, Imap, imap_desk, mail};
use std::net::SocketAddr;

fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    postdesk::transports::http::get(addr, path, token).unwrap()
}

/// A minimal Prometheus text-format parser: every sample line is
/// `name{label="value",...} number`, every metric has HELP and TYPE first.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut typed = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            typed.insert(parts.next().unwrap().to_string());
            assert!(
                matches!(parts.next(), Some("counter" | "gauge" | "histogram")),
                "{line}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            for pair in labels[1..labels.len() - 1].split("\",") {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label in {line:?}"));
                assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
                assert!(v.starts_with('"'), "{line}");
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(
            typed.contains(name) || typed.contains(family),
            "{name} has no TYPE line"
        );
        out.push((series.to_string(), value));
    }
    out
}

#[test]
fn api_metrics_and_cli_reads_while_the_daemon_runs() {
    let (dovecot, smtp, desk) = imap_desk();
    let daemon = desk.start();
    let port = desk.http_port;
    assert_eq!(get(port, "/healthz", None), (200, "ok\n".to_string()));
    daemon.wait(20, "readiness", || get(port, "/readyz", None).0 == 200);
    let mut imap = Imap::login(dovecot.port, "support");
    imap.append(
        "INBOX",
        &mail(
            "bob@customer.test",
            "support@example.com",
            "API test",
            "api1@customer.test",
            "",
            "x",
        ),
    );
    imap.append("INBOX", "Subject: broken\r\n\r\nno sender\r\n");
    daemon.wait(20, "the ack", || smtp.received().len() == 1);
    daemon.wait(20, "both mails handled", || imap.count("INBOX") == 0);

    // The CLI's read commands go through the API while the daemon holds the store.
    let tickets: serde_json::Value = serde_json::from_str(&desk.ok(&["tickets", "--json", "--status", "new"])).unwrap();
    assert_eq!(tickets.as_array().unwrap().len(), 1);
    let show: serde_json::Value = serde_json::from_str(&desk.ok(&["show", "1", "--json"])).unwrap();
    assert_eq!(show["subject"], "API test");
    assert!(show["events"].as_array().unwrap().len() >= 3);
    assert!(desk.ok(&["show", "1"]).contains("Ticket #1: API test"));
    assert_eq!(desk.run(&["show", "99"]).status.code(), Some(1));
    assert_eq!(desk.ok(&["export"]).lines().count(), 1);
    let q: serde_json::Value = serde_json::from_str(&desk.ok(&["quarantine", "--json"])).unwrap();
    assert_eq!(q.as_array().unwrap().len(), 1);
    assert!(desk.ok(&["tickets"]).contains("API test"));
    // explain too: the daemon answers, nothing is stored.
    let eml = desk.dir.join("again.eml");
    std::fs::write(
        &eml,
        mail(
            "bob@customer.test",
            "support@example.com",
            "API test",
            "api1@customer.test",
            "",
            "x",
        ),
    )
    .unwrap();
    let out = desk.ok(&["explain", eml.to_str().unwrap()]);
    assert!(
        out.contains("duplicate:      Message-ID <api1@customer.test> is stored on ticket 1"),
        "{out}"
    );
    let report: serde_json::Value = serde_json::from_str(&desk.ok(&["report", "--json"])).unwrap();
    assert_eq!(report["overall"]["volume"], 1, "report through the API");
    assert_eq!(get(port, "/api/report?since=bogus", None).0, 400);
    // The signed one-click survey link records a rating, once.
    let secret = std::fs::read_to_string(desk.dir.join("secret")).unwrap();
    let token = postdesk::core::token::Signer::new(secret.trim_end().as_bytes())
        .survey_token(postdesk::core::model::TicketId(1));
    assert_eq!(get(port, "/csat/1/aaaaaaaaaa/5", None).0, 403);
    assert_eq!(get(port, &format!("/csat/1/{token}/9"), None).0, 400);
    // Opening the link records nothing (mail scanners open every link); its button POSTs.
    let (status, page) = get(port, &format!("/csat/1/{token}/5"), None);
    assert_eq!(status, 200);
    assert!(page.contains("<form method=post>"), "{page}");
    let shown: serde_json::Value = serde_json::from_str(&desk.ok(&["show", "1", "--json"])).unwrap();
    assert_eq!(shown["csat"], serde_json::Value::Null, "a GET must not cast the rating");
    let vote = |rating: u8| {
        crate::support::http_raw(
            port,
            &format!(
                "POST /csat/1/{token}/{rating} HTTP/1.1\nHost: 127.0.0.1:{port}\nOrigin: http://127.0.0.1:{port}\nContent-Type: application/x-www-form-urlencoded"
            ),
            b"",
        )
    };
    let (status, page) = vote(5);
    assert_eq!(status, 200);
    assert!(page.contains("Thank you for your rating"), "{page}");
    assert!(vote(1).1.contains("already recorded"));
    let show: serde_json::Value = serde_json::from_str(&desk.ok(&["show", "1", "--json"])).unwrap();
    assert_eq!(show["csat"], 5);
    let (status, body) = get(port, "/api/tickets?status=closed", None);
    assert_eq!((status, body.trim()), (200, "[]"));
    assert_eq!(get(port, "/api/tickets?status=bogus", None).0, 400);
    assert_eq!(get(port, "/api/tickets/1", None).0, 200);
    assert_eq!(get(port, "/nope", None).0, 404);

    let (status, metrics) = get(port, "/metrics", None);
    assert_eq!(status, 200);
    let samples = parse_prometheus(&metrics);
    // And the reference parser, from the Prometheus Python client.
    let mut py = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.parser import text_string_to_metric_families as parse\nfams = list(parse(sys.stdin.read()))\nprint(len(fams), sum(len(f.samples) for f in fams))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (tests/run installs it)");
    std::io::Write::write_all(py.stdin.as_mut().unwrap(), metrics.as_bytes()).unwrap();
    drop(py.stdin.take());
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejects /metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = String::from_utf8_lossy(&out.stdout);
    let families: usize = counts.split_whitespace().next().unwrap().parse().unwrap();
    assert!(families >= 13, "{counts}");
    let value = |series: &str| samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v);
    assert_eq!(value("postdesk_tickets{status=\"new\",queue=\"general\"}"), Some(1.0));
    assert_eq!(value("postdesk_mails_ingested_total"), Some(1.0));
    assert_eq!(value("postdesk_mails_quarantined_total"), Some(1.0));
    assert_eq!(value("postdesk_mails_sent_total"), Some(1.0));
    assert_eq!(value("postdesk_outbox_depth"), Some(0.0));
    assert_eq!(value("postdesk_mailbox_up{mailbox=\"support\"}"), Some(1.0));
    assert_eq!(value("postdesk_processing_seconds_count"), Some(2.0));
    assert!(value("postdesk_mailbox_last_fetch_timestamp_seconds{mailbox=\"support\"}").unwrap() > 1.7e9);
    // sled's files and the blob packs are the daemon's to report; a
    // database server's are not. A store never compacted has no baseline.
    let (index, blobs) = (
        value("postdesk_store_bytes{part=\"index\"}"),
        value("postdesk_store_bytes{part=\"blobs\"}"),
    );
    if crate::pg::suite_on_postgres() {
        assert_eq!((index, blobs), (None, None));
    } else {
        assert!(index.unwrap() > 0.0 && blobs.unwrap() > 0.0, "{metrics}");
    }
    assert_eq!(value("postdesk_store_compacted_bytes"), None);
    daemon.stop();
}

#[test]
fn a_token_guards_the_api_and_is_required_beyond_loopback() {
    let desk = DeskConfig::new().http("token_env = \"POSTDESK_TEST_TOKEN\"").build();
    let mut cmd = desk.command();
    cmd.env("POSTDESK_TEST_TOKEN", "s3cret-token").arg("run");
    let log = desk.dir.join("token-daemon.log");
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = cmd.spawn().unwrap();
    crate::support::wait_until(20, "the daemon", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("postdesk running")
    });
    let port = desk.http_port;
    assert_eq!(get(port, "/healthz", None).0, 200, "health needs no token");
    assert_eq!(get(port, "/api/tickets", None).0, 401);
    assert_eq!(get(port, "/api/tickets", Some("wrong-token!")).0, 401);
    assert_eq!(get(port, "/api/tickets", Some("s3cret-token")).0, 200);
    // The CLI reads the token from the same place.
    let out = desk
        .command()
        .env("POSTDESK_TEST_TOKEN", "s3cret-token")
        .args(["tickets", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    let dir = crate::servers::temp_dir("open-api");
    let path = dir.join("p.toml");
    std::fs::write(
        &path,
        "[instance]\nname = \"x\"\ndata_dir = \"d\"\nsecret_env = \"S\"\n[http]\nlisten = \"0.0.0.0:8025\"\n[[mailbox]]\nname = \"a\"\naddress = \"a@b.test\"\nmaildir = { path = \"m\" }\n[outgoing]\nfile = { path = \"o\" }\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::support::BIN)
        .arg("-c")
        .arg(&path)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("beyond loopback: set token_file or token_env"));
    let _ = std::fs::remove_dir_all(dir);
}
