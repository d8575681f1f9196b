//! The PostgreSQL backend: configuration, several instances on one
//! database and one mailbox, outages, and moving a sled desk over.

use crate::pg::Postgres;
use crate::support::*;

#[test]
fn check_names_bad_postgres_keys_with_line_and_column() {
    let desk = DeskConfig::new()
        .sled()
        .extra("[store]\nbackend = \"postgres\"\nurl = \"postgresql://u:pw@localhost/db\"\npool_size = 0\nlease_timeout = \"1s\"\ncompact_at_start = false\n")
        .build();
    let out = desk.run(&["check"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("leave the password out of the URL"), "{err}");
    assert!(err.contains("pool_size = 0: expected 1 to 256"), "{err}");
    assert!(err.contains("lease_timeout: expected 3s to 1h"), "{err}");
    assert!(err.contains("compact_at_start is for the sled store"), "{err}");
    assert!(err.contains("postdesk.toml:"), "names the file and line: {err}");

    let desk = DeskConfig::new()
        .sled()
        .extra("[store]\nbackend = \"sled\"\nhost = \"db\"\n")
        .build();
    let err = String::from_utf8_lossy(&desk.run(&["check"]).stderr).into_owned();
    assert!(err.contains("are for backend = \"postgres\""), "{err}");
}

#[test]
fn a_desk_on_postgres_keeps_tickets_across_restarts() {
    let pg = Postgres::start();
    let desk = DeskConfig::new().postgres(&pg).build();
    let first = mail(
        "Carol <carol@example.net>",
        "support@example.com",
        "Printer on fire",
        "p1@example.net",
        "",
        "It is burning.\n",
    );
    let v = desk.ingest(&[&first]);
    assert_eq!(v["new_tickets"], 1, "{v}");
    let reply = mail(
        "Carol <carol@example.net>",
        "support@example.com",
        "Re: Printer on fire",
        "p2@example.net",
        "In-Reply-To: <p1@example.net>",
        "Still burning.\n",
    );
    let v = desk.ingest(&[&reply, &first]);
    assert_eq!(v["appended"], 1, "{v}");
    assert_eq!(v["duplicates"], 1, "{v}");
    let t = desk.show(1);
    assert_eq!(
        t["messages"].as_array().unwrap().len(),
        3,
        "two inbound and the acknowledgement: {t}"
    );
    assert_eq!(t["requester"]["email"], "carol@example.net");
    // The rows are in the database, for SQL.
    let db = desk_database(&desk);
    assert_eq!(pg.query(&db, "SELECT count(*) FROM tickets"), "1");
    assert_eq!(pg.query(&db, "SELECT count(*) FROM messages"), "3");
    assert_eq!(
        pg.query(&db, "SELECT data->>'subject' FROM tickets WHERE id = 1"),
        "Printer on fire"
    );
    // A database is backed up with its own tools.
    let out = desk.run(&["backup"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{said}");
    assert!(said.contains("pg_dump"), "{said}");
}

/// The database name in a desk's `[store] url`.
fn desk_database(desk: &Desk) -> String {
    let text = std::fs::read_to_string(&desk.config).unwrap();
    let url = text
        .lines()
        .find(|l| l.starts_with("url = \"postgresql://"))
        .expect("a url");
    url.trim_end_matches('"').rsplit('/').next().unwrap().to_string()
}

/// A second instance of `desk`: the same config (mailboxes, database,
/// instance secret) with an HTTP port of its own.
fn second_instance(desk: &Desk) -> Desk {
    let dir = crate::servers::temp_dir("desk-b");
    let port = crate::servers::free_port();
    let text = std::fs::read_to_string(&desk.config).unwrap().replace(
        &format!("listen = \"127.0.0.1:{}\"", desk.http_port),
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let config = dir.join("postdesk.toml");
    std::fs::write(&config, text).unwrap();
    Desk {
        dir,
        config,
        http_port: port,
    }
}

/// The PID in the holder of a lease (`host:pid:random`), if held.
fn lease_holder(pg: &Postgres, db: &str, lease: &str) -> Option<u32> {
    let h = pg.query(db, &format!("SELECT holder FROM leases WHERE name = '{lease}'"));
    h.split(':').nth(1).and_then(|p| p.parse().ok())
}

fn conversation(i: usize, reply: bool) -> String {
    let from = format!("Customer {i} <c{i}@customer.test>");
    if reply {
        mail(
            &from,
            "support@example.com",
            &format!("Re: Question {i}"),
            &format!("r{i}@customer.test"),
            &format!("In-Reply-To: <q{i}@customer.test>"),
            "And one more thing.\n",
        )
    } else {
        mail(
            &from,
            "support@example.com",
            &format!("Question {i}"),
            &format!("q{i}@customer.test"),
            "",
            "Hello, a question.\n",
        )
    }
}

#[test]
fn two_instances_share_one_mailbox_and_database_through_kill_9() {
    const CONVERSATIONS: usize = 250;
    let pg = Postgres::start();
    let dovecot = crate::servers::Dovecot::start(&["support"]);
    let smtp = crate::servers::Smtp::start();
    let a = DeskConfig::new()
        .imap("support", "support@example.com", dovecot.port, "support", "")
        .smtp(smtp.port)
        .postgres(&pg)
        .build();
    let b = second_instance(&a);
    let db = desk_database(&a);
    let env = [("POSTDESK_TEST_IMAP_PASSWORD", crate::servers::PASSWORD)];
    let mut daemons = [Some(a.start_with_env(&env)), Some(b.start_with_env(&env))];

    // Mail arrives while instances die: 500 mails, a question and a reply per customer.
    let port = dovecot.port;
    let feeder = std::thread::spawn(move || {
        let mut imap = Imap::login(port, "support");
        for chunk in 0..10 {
            let range = chunk * CONVERSATIONS / 10..(chunk + 1) * CONVERSATIONS / 10;
            for i in range.clone() {
                imap.append("INBOX", &conversation(i, false));
            }
            for i in range {
                imap.append("INBOX", &conversation(i, true));
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    });
    let mut kills = 0;
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    while kills < 6 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(std::time::Duration::from_millis(300 + rng % 1200));
        // Kill whichever instance holds the mailbox now, and start it again.
        let Some(pid) = lease_holder(&pg, &db, "mailbox:support") else {
            continue;
        };
        let Some(slot) = daemons.iter().position(|d| d.as_ref().is_some_and(|d| d.pid() == pid)) else {
            continue;
        };
        daemons[slot].take().unwrap().kill();
        kills += 1;
        let desk = if slot == 0 { &a } else { &b };
        daemons[slot] = Some(desk.start_with_env(&env));
    }
    feeder.join().unwrap();

    let inbound = || {
        pg.query(
            &db,
            "SELECT count(*) FROM messages WHERE data->>'direction' = 'inbound'",
        )
        .parse::<usize>()
        .unwrap()
    };
    let mut imap = Imap::login(dovecot.port, "support");
    wait_until(120, "every mail stored and moved", || {
        inbound() >= 2 * CONVERSATIONS && imap.count("INBOX") == 0
    });
    // 0 lost, 0 doubled: one ticket per conversation, each message once.
    assert_eq!(pg.query(&db, "SELECT count(*) FROM tickets"), CONVERSATIONS.to_string());
    assert_eq!(inbound(), 2 * CONVERSATIONS, "each mail stored once");
    assert_eq!(
        pg.query(&db, "SELECT count(*) FROM (SELECT ticket FROM messages WHERE data->>'direction' = 'inbound' GROUP BY ticket HAVING count(*) = 2) t"),
        CONVERSATIONS.to_string(),
        "question and reply in one ticket"
    );
    assert_eq!(imap.count("Processed"), (2 * CONVERSATIONS) as u32);
    // One acknowledgement per ticket; a kill between sending and dequeuing may double one.
    wait_until(60, "the acknowledgements sent", || {
        pg.query(&db, "SELECT count(*) FROM outbox") == "0"
    });
    let mut doubled = 0;
    for i in 0..CONVERSATIONS {
        let acks = smtp.received_by(&format!("c{i}@customer.test")).len();
        assert!(acks >= 1, "customer {i} got no acknowledgement");
        doubled += acks - 1;
    }
    eprintln!("two instances: {kills} kills of the mailbox's holder, {doubled} doubled acknowledgements");
    assert!(doubled <= kills, "{doubled} doubled acknowledgements for {kills} kills");
    for d in daemons.into_iter().flatten() {
        d.stop();
    }
}

#[test]
fn a_database_outage_keeps_mail_at_its_source_until_it_is_back() {
    let mut pg = Postgres::start();
    let desk = DeskConfig::new().postgres(&pg).build();
    let db = desk_database(&desk);
    let daemon = desk.start();
    let inbox = desk.dir.join("inbox/new");
    // The mailbox task makes the Maildir once it holds the mailbox's lease; mail may come before.
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(desk.dir.join("inbox").join(sub)).unwrap();
    }
    let put = |range: std::ops::Range<usize>| {
        for i in range {
            std::fs::write(inbox.join(format!("{i:04}.eml")), conversation(i, false)).unwrap();
        }
    };
    put(0..20);
    // Stored and taken from the Maildir (the move follows the store's flush).
    daemon.wait(30, "the first mails stored", || {
        pg.query(&db, "SELECT count(*) FROM tickets") == "20" && std::fs::read_dir(&inbox).unwrap().count() == 0
    });
    pg.stop();
    put(20..60);
    // Not ready, and why; the mail stays in the Maildir.
    daemon.wait(30, "/readyz to say the store is away", || {
        let (code, body) = http_raw(desk.http_port, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"");
        code == 503 && body.contains("store_error")
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let left = std::fs::read_dir(&inbox).unwrap().count();
    assert_eq!(left, 40, "nothing taken from the source while the database is away");
    pg.resume();
    daemon.wait(60, "every mail stored after the outage", || {
        pg.query(&db, "SELECT count(*) FROM tickets") == "60" && std::fs::read_dir(&inbox).unwrap().count() == 0
    });
    assert_eq!(
        pg.query(
            &db,
            "SELECT count(*) FROM messages WHERE data->>'direction' = 'inbound'"
        ),
        "60",
        "0 lost, 0 doubled"
    );
    let (code, _) = http_raw(desk.http_port, "GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"");
    assert_eq!(code, 200);
    daemon.stop();
}

#[test]
fn migrate_moves_a_sled_desk_into_postgres() {
    let pg = Postgres::start();
    let desk = DeskConfig::new().sled().build();
    let mut mails: Vec<String> = (0..30).map(|i| conversation(i, false)).collect();
    mails.extend((0..10).map(|i| conversation(i, true)));
    mails.push("this is not a mail\r\n".into());
    // Three large ones (6 MB each: more than a statement's 16 MiB together).
    let large: Vec<String> = (0..3)
        .map(|i| {
            mail(
                &format!("Customer {i} <c{i}@customer.test>"),
                "support@example.com",
                &format!("Re: Question {i}"),
                &format!("large{i}@customer.test"),
                &format!("In-Reply-To: <q{i}@customer.test>"),
                &"All the logs you asked for, line after line.\n".repeat(140_000),
            )
        })
        .collect();
    mails.extend(large.iter().cloned());
    desk.ingest(&mails.iter().map(String::as_str).collect::<Vec<_>>());
    let before = desk.ok(&["export"]);
    // The admin points [store] at the database and moves the desk.
    let text = std::fs::read_to_string(&desk.config).unwrap();
    let database = pg.create_database();
    std::fs::write(
        &desk.config,
        text.replace("\n[http]", &format!("\n{}\n[http]", pg.store_config(&database))),
    )
    .unwrap();
    let counts: serde_json::Value = serde_json::from_str(&desk.ok(&["migrate", "--to", "postgres", "--json"])).unwrap();
    assert_eq!(counts["tickets"], 30, "{counts}");
    assert_eq!(counts["quarantine"], 1, "{counts}");
    assert_eq!(counts["messages"], 73, "43 inbound and 30 acknowledgements: {counts}");
    assert_eq!(pg.query(&database, "SELECT count(*) FROM tickets"), "30");
    assert_eq!(
        pg.query(&database, "SELECT count(*) FROM blobs"),
        counts["blobs"].to_string()
    );
    // The same desk, read from PostgreSQL, the large mails byte for byte.
    assert_eq!(desk.ok(&["export"]), before);
    for (i, sent) in large.iter().enumerate() {
        let messages = desk.show(i as u64 + 1)["messages"].clone();
        let m = messages
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["message_id"] == format!("large{i}@customer.test"))
            .unwrap_or_else(|| panic!("no large{i} on ticket {}", i + 1));
        let out = desk.run(&["raw", m["raw_key"].as_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            out.stdout == sent.as_bytes(),
            "large mail {i}: {} bytes back",
            out.stdout.len()
        );
    }
    let q = desk.ok(&["quarantine", "--json"]);
    assert!(q.contains("this is not a mail") || q.contains("raw_key"), "{q}");
    // It goes on from there: the next ticket is 31, threading still knows the old ids.
    let v = desk.ingest(&[&conversation(99, false), &conversation(20, true)]);
    assert_eq!(v["new_tickets"], 1, "{v}");
    assert_eq!(v["appended"], 1, "{v}");
    assert_eq!(desk.show(31)["subject"], "Question 99");
    // A second migration into a database with tickets is refused.
    let out = desk.run(&["migrate", "--to", "postgres"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds tickets"));
}

#[test]
fn racing_writes_from_two_instances_conflict_instead_of_overwriting() {
    use postdesk::adapters::store::postgres::PgStore;
    use postdesk::adapters::store::{Change, IdEntry, Op, PgSettings, Store, StoreError};
    use postdesk::core::model::{Mailbox, Ticket, TicketId};
    let pg = Postgres::start();
    let database = pg.create_database();
    let settings = PgSettings {
        url: Some(pg.url(&database)),
        ..PgSettings::default()
    };
    // Two instances on one database.
    let (one, two) = (PgStore::open(&settings).unwrap(), PgStore::open(&settings).unwrap());
    let now = jiff::Timestamp::now();
    let requester = Mailbox::new(None, "carol@customer.test");
    let mut open = Change::default();
    open.ticket(&Ticket::new(
        TicketId(1),
        "Printer",
        requester.clone(),
        "support",
        "general",
        now,
    ));
    open.push(Op::NextTicket(TicketId(2)));
    one.commit(open).unwrap();

    // Both read ticket 1 and change it: the second write is refused, nothing of it kept.
    let mut a = one.ticket(TicketId(1)).unwrap().unwrap();
    let mut b = two.ticket(TicketId(1)).unwrap().unwrap();
    a.tags.push("from-one".into());
    b.tags.push("from-two".into());
    let mut w = Change::default();
    w.ticket(&a);
    one.commit(w).unwrap();
    let mut w = Change::default();
    w.ticket(&b);
    w.push(Op::Hash("kept-only-if-committed".into()));
    assert!(matches!(two.commit(w), Err(StoreError::Conflict(_))));
    assert!(!one.has_hash("kept-only-if-committed").unwrap());
    // Read again, it applies.
    let mut b = two.ticket(TicketId(1)).unwrap().unwrap();
    b.tags.push("from-two".into());
    let mut w = Change::default();
    w.ticket(&b);
    two.commit(w).unwrap();
    assert_eq!(one.ticket(TicketId(1)).unwrap().unwrap().tags, ["from-one", "from-two"]);

    // Both open ticket 2 at once: one number, one ticket.
    let mut x = Change::default();
    x.ticket(&Ticket::new(
        TicketId(2),
        "Mine",
        requester.clone(),
        "support",
        "general",
        now,
    ));
    x.push(Op::NextTicket(TicketId(3)));
    let mut y = Change::default();
    y.ticket(&Ticket::new(
        TicketId(2),
        "Theirs",
        requester,
        "support",
        "general",
        now,
    ));
    y.push(Op::NextTicket(TicketId(3)));
    one.commit(x).unwrap();
    assert!(matches!(two.commit(y), Err(StoreError::Conflict(_))));
    assert_eq!(two.ticket(TicketId(2)).unwrap().unwrap().subject, "Mine");
    assert_eq!(two.next_ticket_id().unwrap(), TicketId(3));

    // A stored Message-ID is taken once; a reference may become stored.
    let stored = |t| IdEntry {
        ticket: TicketId(t),
        stored: true,
        hash: Some("h".into()),
    };
    let mut w = Change::default();
    w.push(Op::MessageId(
        "ref@x".into(),
        IdEntry {
            ticket: TicketId(1),
            stored: false,
            hash: None,
        },
    ));
    one.commit(w).unwrap();
    for (store, expect_ok) in [(&one, true), (&two, false)] {
        let mut w = Change::default();
        w.push(Op::MessageId("ref@x".into(), stored(2)));
        assert_eq!(store.commit(w).is_ok(), expect_ok);
    }
    assert_eq!(one.message_id("ref@x").unwrap().unwrap().ticket, TicketId(2));

    // The counters the trigger keeps follow the tickets.
    let counts = one.counts().unwrap();
    assert_eq!(counts.iter().map(|c| c.tickets).sum::<u64>(), 2, "{counts:?}");
}

#[test]
fn tls_to_the_database_checks_the_server_against_ca_file() {
    let pg = Postgres::start_tls();
    let cert = pg.cert.clone().unwrap();
    let database = pg.create_database();
    let with_ca = |ca: &std::path::Path| {
        DeskConfig::new()
            .store(format!(
                "[store]\nbackend = \"postgres\"\nurl = \"{}\"\nca_file = \"{}\"\n",
                pg.url(&database),
                ca.display()
            ))
            .build()
    };
    let desk = with_ca(&cert);
    let v = desk.ingest(&[&conversation(1, false)]);
    assert_eq!(v["new_tickets"], 1, "{v}");
    // The daemon's sessions really are TLS.
    let daemon = desk.start();
    daemon.wait(20, "a TLS session of the daemon", || {
        pg.query(&database, "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.application_name = 'postdesk'") != "0"
    });
    daemon.stop();
    // Another CA's certificate: refused, and the error says where.
    let other = crate::servers::temp_dir("other-ca");
    let (other_cert, _) = crate::servers::make_cert(&other);
    let out = with_ca(&other_cert).run(&["tickets"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("database") && (err.contains("certificate") || err.contains("UnknownIssuer")),
        "{err}"
    );
}

#[test]
fn a_group_committed_batch_reads_its_own_writes_and_keeps_nothing_after_a_conflict() {
    use postdesk::adapters::store::cache::BatchCache;
    use postdesk::adapters::store::postgres::PgStore;
    use postdesk::adapters::store::{Change, IdEntry, Op, PgSettings, Store, StoreError};
    use postdesk::core::model::{Mailbox, Ticket, TicketId};
    use std::sync::Arc;
    let pg = Postgres::start();
    let database = pg.create_database();
    let settings = PgSettings {
        url: Some(pg.url(&database)),
        ..PgSettings::default()
    };
    let one: Arc<dyn Store> = Arc::new(PgStore::open(&settings).unwrap());
    let two = PgStore::open(&settings).unwrap();
    let now = jiff::Timestamp::now();
    let stored = |t| IdEntry {
        ticket: TicketId(t),
        stored: true,
        hash: None,
    };

    // A batch: a new ticket, then a second mail changing it; each sees the one before.
    let batch = BatchCache::deferred(one.clone(), &["src:1".to_string()]).unwrap();
    assert!(!batch.has_source("src:1").unwrap());
    let mut w = Change::default();
    w.ticket(&Ticket::new(
        TicketId(1),
        "First",
        Mailbox::new(None, "c@x.test"),
        "support",
        "general",
        now,
    ));
    w.push(Op::NextTicket(TicketId(2)));
    w.push(Op::MessageId("m1@x".into(), stored(1)));
    w.push(Op::Source("src:1".into(), "blob".into()));
    batch.commit(w).unwrap();
    assert!(batch.has_source("src:1").unwrap());
    assert_eq!(batch.message_id("m1@x").unwrap().unwrap().ticket, TicketId(1));
    assert_eq!(batch.next_ticket_id().unwrap(), TicketId(2));
    assert!(
        one.ticket(TicketId(1)).unwrap().is_none(),
        "nothing in the database before the end"
    );
    let mut t = batch.ticket(TicketId(1)).unwrap().unwrap();
    t.tags.push("second".into());
    let mut w = Change::default();
    w.ticket(&t);
    batch.commit(w).unwrap();
    batch.finish().unwrap();
    assert_eq!(one.ticket(TicketId(1)).unwrap().unwrap().tags, ["second"]);
    assert!(one.has_source("src:1").unwrap());

    // Another instance stores a Message-ID this batch also stores: the batch keeps nothing.
    let batch = BatchCache::deferred(one.clone(), &[]).unwrap();
    let mut w = Change::default();
    w.push(Op::MessageId("m2@x".into(), stored(1)));
    w.push(Op::Hash("only-with-the-batch".into()));
    batch.commit(w).unwrap();
    let mut theirs = Change::default();
    theirs.push(Op::MessageId("m2@x".into(), stored(1)));
    two.commit(theirs).unwrap();
    assert!(matches!(batch.finish(), Err(StoreError::Conflict(_))));
    assert!(!one.has_hash("only-with-the-batch").unwrap());
}

/// A desk on `pg` (with `extra` config) whose daemon runs while a trigger
/// makes the database refuse every DELETE from `table`, and Carol's mail
/// in its Maildir; the daemon and the database's name.
fn refusing_deletes_from(pg: &Postgres, extra: &str, table: &str) -> (Desk, String, Daemon) {
    let desk = DeskConfig::new().postgres(pg).extra(extra).build();
    let db = desk_database(&desk);
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(desk.dir.join("inbox").join(sub)).unwrap();
    }
    let daemon = desk.start();
    daemon.wait(30, "the schema", || {
        pg.query(
            &db,
            &format!("SELECT count(*) FROM pg_tables WHERE tablename = '{table}'"),
        ) == "1"
    });
    pg.query(
        &db,
        &format!(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
             CREATE TRIGGER refuse BEFORE DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION refuse()"
        ),
    );
    std::fs::write(
        desk.dir.join("inbox/new/1.eml"),
        mail(
            "Carol <carol@example.net>",
            "support@example.com",
            "Printer on fire",
            "p1@example.net",
            "",
            "It is burning.\n",
        ),
    )
    .unwrap();
    (desk, db, daemon)
}

/// A mail sent whose record the database refuses (here a trigger refuses
/// its dequeue) goes out once: the sender holds the record and commits it
/// before it sends anything more, instead of sending the still-queued mail
/// again at every pass.
#[test]
fn a_mail_whose_record_the_database_refuses_goes_out_once() {
    let pg = Postgres::start();
    let (desk, db, daemon) = refusing_deletes_from(&pg, "", "outbox");
    daemon.wait(30, "the acknowledgement sent and its record refused", || {
        daemon.log().contains("the store refused its record")
    });
    // Three passes more, at a second each.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let acks = |log: &str| log.matches("purpose=acknowledgement").count();
    assert_eq!(acks(&daemon.log()), 1, "{}", daemon.log());
    assert_eq!(
        pg.query(
            &db,
            "SELECT count(*) FROM outbox WHERE entry->'mail'->>'purpose' = 'acknowledgement'"
        ),
        "1",
        "its dequeue refused, the acknowledgement is still queued"
    );
    pg.query(&db, "DROP TRIGGER refuse ON outbox");
    daemon.wait(30, "the record taken and the notification sent", || {
        pg.query(&db, "SELECT count(*) FROM outbox") == "0"
    });
    let log = daemon.stop();
    assert_eq!(acks(&log), 1, "{log}");
    let recorded = crate::support::event_kinds(&desk.show(1))
        .iter()
        .filter(|k| *k == "mail_sent")
        .count();
    assert_eq!(
        recorded,
        log.matches("mail sent ticket=1 ").count(),
        "one mail_sent for each mail: {log}"
    );
}

/// The same for a webhook delivery: the receiver gets it once, though the
/// database refuses its removal from the queue for a while.
#[test]
fn a_webhook_delivery_whose_record_the_database_refuses_goes_out_once() {
    let pg = Postgres::start();
    let hooks = crate::servers::HttpReceiver::start();
    let secret = crate::servers::temp_dir("hook-secret").join("secret");
    std::fs::write(&secret, "whsec-test-0123456789abcdef\n").unwrap();
    let webhook = format!(
        "[[webhook]]\nname = \"chat\"\nurl = \"{}\"\nevents = [\"ticket.created\"]\nsecret_file = \"{}\"\n",
        hooks.url("/chat"),
        secret.display()
    );
    let (_desk, db, daemon) = refusing_deletes_from(&pg, &webhook, "hooks");
    daemon.wait(30, "the delivery made and its record refused", || {
        daemon
            .log()
            .contains("webhook delivered, but the store refused its record")
    });
    // Three passes more, at a second each.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(hooks.received().len(), 1, "{}", daemon.log());
    pg.query(&db, "DROP TRIGGER refuse ON hooks");
    daemon.wait(30, "the record taken", || {
        pg.query(&db, "SELECT count(*) FROM hooks") == "0"
    });
    daemon.stop();
    assert_eq!(hooks.received().len(), 1);
}

/// A small deterministic generator (xorshift64*).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % n
    }
}

/// Every list filter, paged three at a time, and the counters and agent
/// loads of `store` are what the tickets themselves say (`model`).
pub(crate) fn agrees_with_a_recount(
    store: &dyn postdesk::adapters::store::Store,
    model: &std::collections::BTreeMap<u64, postdesk::core::model::Ticket>,
    what: &str,
) {
    use postdesk::adapters::store::TicketFilter;
    use postdesk::core::model::Status;
    use std::collections::BTreeMap;
    let listed = |filter: &TicketFilter| -> Vec<u64> {
        let (mut out, mut cursor) = (Vec::new(), None::<String>);
        loop {
            let page = store.list(filter, cursor.as_deref(), 3).unwrap();
            out.extend(page.tickets.iter().map(|t| t.id.0));
            match page.next {
                Some(n) => cursor = Some(n),
                None => return out,
            }
        }
    };
    let mut filters = vec![TicketFilter::default()];
    for s in [
        Status::New,
        Status::Open,
        Status::Pending,
        Status::Resolved,
        Status::Closed,
    ] {
        filters.push(TicketFilter {
            status: Some(s),
            ..TicketFilter::default()
        });
    }
    for q in QUEUES {
        filters.push(TicketFilter {
            queue: Some(q.into()),
            status: Some(Status::Open),
            ..TicketFilter::default()
        });
        filters.push(TicketFilter {
            queue: Some(q.into()),
            ..TicketFilter::default()
        });
    }
    for a in AGENTS.iter().flatten() {
        filters.push(TicketFilter {
            assignee: Some(a.to_string()),
            ..TicketFilter::default()
        });
    }
    for r in REQUESTERS {
        filters.push(TicketFilter {
            requester: Some(r.to_uppercase()),
            ..TicketFilter::default()
        });
    }
    for f in &filters {
        let want: Vec<u64> = model.values().filter(|t| f.matches(t)).map(|t| t.id.0).collect();
        assert_eq!(listed(f), want, "{what}: {f:?}");
    }
    let since = jiff::Timestamp::from_second(1_700_000_050).unwrap();
    let mut want: Vec<&postdesk::core::model::Ticket> = model.values().filter(|t| t.updated_at >= since).collect();
    want.sort_by_key(|t| (t.updated_at.as_second(), t.id.0));
    let f = TicketFilter {
        updated_since: Some(since),
        ..TicketFilter::default()
    };
    assert_eq!(
        listed(&f),
        want.iter().map(|t| t.id.0).collect::<Vec<_>>(),
        "{what}: by update time"
    );
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    for t in model.values() {
        *counts.entry((format!("{:?}", t.status), t.queue.clone())).or_default() += 1;
    }
    let stored: BTreeMap<(String, String), u64> = store
        .counts()
        .unwrap()
        .into_iter()
        .filter(|c| c.tickets > 0)
        .map(|c| ((format!("{:?}", c.status), c.queue), c.tickets))
        .collect();
    assert_eq!(stored, counts, "{what}: counters");
    let mut loads: BTreeMap<String, u32> = BTreeMap::new();
    for t in model.values().filter(|t| t.is_active()) {
        if let Some(a) = &t.assignee {
            *loads.entry(a.clone()).or_default() += 1;
        }
    }
    let stored: BTreeMap<String, u32> = store.loads().unwrap().into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(stored, loads, "{what}: agent loads");
}

/// One to four ticket puts (number, requester, status, queue, agent, update time), a ticket at times twice.
pub(crate) fn random_puts(rng: &mut Rng) -> Vec<[u64; 6]> {
    (0..=rng.below(4))
        .map(|_| {
            [
                1 + rng.below(24),
                rng.below(3),
                rng.below(5),
                rng.below(3),
                rng.below(4),
                rng.below(100),
            ]
        })
        .collect()
}

/// The change of `puts`, each made from the ticket as `store` holds it (its
/// revision); `model` takes the tickets as they are after it.
pub(crate) fn change_of(
    puts: &[[u64; 6]],
    store: &dyn postdesk::adapters::store::Store,
    model: &mut std::collections::BTreeMap<u64, postdesk::core::model::Ticket>,
) -> postdesk::adapters::store::Change {
    use postdesk::adapters::store::{Change, Op};
    use postdesk::core::model::{Mailbox, Status, Ticket, TicketId};
    let statuses = [
        Status::New,
        Status::Open,
        Status::Pending,
        Status::Resolved,
        Status::Closed,
    ];
    let mut change = Change::default();
    let mut written: std::collections::HashMap<u64, Ticket> = std::collections::HashMap::new();
    for &[id, requester, status, queue, agent, at] in puts {
        let mut t = match written.remove(&id) {
            Some(t) => t,
            None => store.ticket(TicketId(id)).unwrap().unwrap_or_else(|| {
                let r = Mailbox::new(None, REQUESTERS[requester as usize]);
                let at = jiff::Timestamp::from_second(1_700_000_000).unwrap();
                Ticket::new(TicketId(id), "Printer", r, "support", "general", at)
            }),
        };
        t.status = statuses[status as usize];
        t.queue = QUEUES[queue as usize].into();
        t.assignee = AGENTS[agent as usize].map(String::from);
        // Forwards and backwards in time.
        t.updated_at = jiff::Timestamp::from_second(1_700_000_000 + at as i64).unwrap();
        change.push(Op::Ticket(Box::new(t.clone())));
        model.insert(id, t.clone());
        written.insert(id, t);
    }
    change
}

/// Names where one is the start of another, as an index's prefix scan would confuse.
const QUEUES: [&str; 3] = ["general", "bill", "billing"];
const AGENTS: [Option<&str>; 4] = [None, Some("al"), Some("alice"), Some("bob")];
const REQUESTERS: [&str; 3] = ["a@x.test", "ab@x.test", "b@x.test"];

#[test]
fn indexes_counters_and_loads_agree_with_a_recount_on_both_backends() {
    use postdesk::adapters::store::cache::BatchCache;
    use postdesk::adapters::store::postgres::PgStore;
    use postdesk::adapters::store::sled::SledStore;
    use postdesk::adapters::store::{PgSettings, Store, StoreSettings};
    use std::sync::Arc;
    let pg = Postgres::start();
    let on_pg = || -> Arc<dyn Store> {
        let url = Some(pg.url(&pg.create_database()));
        Arc::new(
            PgStore::open(&PgSettings {
                url,
                ..PgSettings::default()
            })
            .unwrap(),
        )
    };
    let dir = crate::servers::temp_dir("recount");
    let on_sled = |name: &str| -> Arc<dyn Store> {
        Arc::new(SledStore::open(&dir.join(name), &StoreSettings::default()).unwrap())
    };
    // Each backend committing each change, and group-committing five changes
    // a transaction through the cache a batch of mail goes through.
    let stores: Vec<(Arc<dyn Store>, &str, bool)> = vec![
        (on_sled("one"), "sled", false),
        (on_sled("grouped"), "sled, group-committed", true),
        (on_pg(), "postgres", false),
        (on_pg(), "postgres, group-committed", true),
    ];
    let mut caches: Vec<Option<Arc<BatchCache>>> = vec![None; stores.len()];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut model = std::collections::BTreeMap::new();
    for step in 0..400 {
        // A change of one to four puts, the same ticket at times twice; each
        // store's put is made from the ticket as that store holds it (its revision).
        let puts = random_puts(&mut rng);
        for ((inner, _, grouped), cache) in stores.iter().zip(&mut caches) {
            let store: Arc<dyn Store> = match grouped {
                true => cache
                    .get_or_insert_with(|| Arc::new(BatchCache::deferred(inner.clone(), &[]).unwrap()))
                    .clone(),
                false => inner.clone(),
            };
            store.commit(change_of(&puts, &*store, &mut model)).unwrap();
            if step % 5 == 4
                && let Some(c) = cache.take()
            {
                c.finish().unwrap();
            }
        }
        if step % 50 == 49 {
            for (store, name, _) in &stores {
                agrees_with_a_recount(&**store, &model, &format!("{name} after {} changes", step + 1));
            }
        }
    }
}
