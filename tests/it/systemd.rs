//! Running under systemd: the unit file, sd_notify messages, SIGHUP reloads.

use crate::support::{BIN, DeskConfig, mail, wait_until};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The unit as the repository ships it.
fn unit_file() -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/postdesk.service")).unwrap()
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let dir = crate::servers::temp_dir("unit");
    let unit = unit_file();
    for want in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=",
        "ExecStartPre=",
        "RestartPreventExitStatus=78",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
    ] {
        assert!(unit.contains(want), "unit lacks {want:?}");
    }
    // verify wants the binaries to exist: point it at the one cargo built.
    let path = dir.join("postdesk.service");
    std::fs::write(&path, unit.replace("/usr/bin/postdesk", BIN)).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (tests/run installs systemd)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("postdesk.service:"),
        "warnings about the unit: {stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_backup_timer_and_its_service_pass_systemd_analyze_verify() {
    let dir = crate::servers::temp_dir("backup-unit");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let service = std::fs::read_to_string(root.join("postdesk-backup.service")).unwrap();
    let timer = std::fs::read_to_string(root.join("postdesk-backup.timer")).unwrap();
    for want in [
        "Type=oneshot",
        " backup --keep ",
        "DynamicUser=yes",
        "StateDirectory=postdesk",
        "ProtectSystem=strict",
        "SystemCallFilter=@system-service",
    ] {
        assert!(service.contains(want), "the backup service lacks {want:?}");
    }
    for want in ["OnCalendar=", "Persistent=true", "WantedBy=timers.target"] {
        assert!(timer.contains(want), "the backup timer lacks {want:?}");
    }
    std::fs::write(
        dir.join("postdesk-backup.service"),
        service.replace("/usr/bin/postdesk", BIN),
    )
    .unwrap();
    std::fs::write(dir.join("postdesk-backup.timer"), &timer).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("postdesk-backup.timer"))
        .arg(dir.join("postdesk-backup.service"))
        .output()
        .expect("systemd-analyze (tests/run installs systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("postdesk-backup."),
        "warnings about the units: {stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// jemalloc ignores a setting it does not know, saying so only on stderr:
/// the unit's must all be taken.
/// `cargo deb` packages a unit only when a `[[package.metadata.deb.systemd-units]]`
/// entry names it: every unit in `systemd/` is named by one, none enabled or
/// started on install (the daemon needs its config first), so a new unit is
/// not left out of the Debian package.
#[test]
fn the_debian_package_ships_every_unit_and_enables_none() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest: toml::Table = toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let entries = manifest["package"]["metadata"]["deb"]["systemd-units"]
        .as_array()
        .expect("systemd-units is a list of entries");
    let mut named = Vec::new();
    for e in entries {
        assert_eq!(e["unit-scripts"].as_str(), Some("systemd/"), "{e}");
        assert_eq!(e["enable"].as_bool(), Some(false), "{e}");
        assert_eq!(e["start"].as_bool(), Some(false), "{e}");
        named.push(e["unit-name"].as_str().expect("each entry names its unit").to_string());
    }
    let mut units: Vec<String> = std::fs::read_dir(root.join("systemd"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    units.sort();
    units.dedup();
    assert_eq!(units, ["postdesk", "postdesk-backup"]);
    for unit in &units {
        assert!(
            named.contains(unit),
            "{unit} is in no [[package.metadata.deb.systemd-units]] entry"
        );
    }
}

#[test]
fn the_units_allocator_settings_are_all_taken() {
    let unit = unit_file();
    let conf = unit
        .lines()
        .find_map(|l| l.strip_prefix("Environment=_RJEM_MALLOC_CONF="))
        .expect("the unit sets the allocator's settings");
    for (conf, taken) in [(conf, true), ("tcache_maximum:1024", false)] {
        let out = std::process::Command::new(BIN)
            .arg("--version")
            .env("_RJEM_MALLOC_CONF", conf)
            .output()
            .unwrap();
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(!stderr.contains("Invalid conf"), taken, "{conf}: {stderr}");
    }
}

struct Listener {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Listener {
    fn wait_for(&mut self, want: &str) {
        let start = std::time::Instant::now();
        let mut buf = [0u8; 4096];
        while !self.seen.iter().any(|m| m.lines().any(|l| l == want)) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no {want:?}; got {:?}",
                self.seen
            );
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }
}

#[test]
fn sd_notify_ready_reload_watchdog_stopping_and_sighup_keeps_a_bad_config_out() {
    let desk = DeskConfig::new().build();
    let sock_path = desk.dir.join("notify.sock");
    let socket = UnixDatagram::bind(&sock_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut notes = Listener {
        socket,
        seen: Vec::new(),
    };
    let log = desk.dir.join("notify-daemon.log");
    let mut child = Guard(
        desk.command()
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "1000000")
            .arg("run")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    notes.wait_for("READY=1");
    notes.wait_for("WATCHDOG=1");
    let pid = child.0.id().to_string();
    let new_mail = |n: u32| {
        std::fs::write(
            desk.dir.join(format!("inbox/new/{n}.eml")),
            mail(
                "bob@customer.test",
                "support@example.com",
                &format!("please reload {n}"),
                &format!("rl{n}@customer.test"),
                "",
                "x",
            ),
        )
        .unwrap();
    };
    // A good config with a new rule: it takes effect.
    // ...and a second mailbox, whose task starts on the reload.
    let good = std::fs::read_to_string(&desk.config).unwrap()
        + "\n[[rule]]\nname = \"reloaded\"\nwhen.subject = \"reload\"\nset.priority = \"urgent\"\n"
        + &format!(
            "\n[[mailbox]]\nname = \"second\"\naddress = \"second@example.com\"\nmaildir = {{ path = \"{}/inbox2\" }}\n",
            desk.dir.display()
        );
    std::fs::write(&desk.config, &good).unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    notes.wait_for("RELOADING=1");
    notes.wait_for("STATUS=config reloaded");
    new_mail(1);
    wait_until(20, "ticket 1", || desk.run(&["show", "1", "--json"]).status.success());
    let t: serde_json::Value = serde_json::from_str(&desk.ok(&["show", "1", "--json"])).unwrap();
    assert_eq!(t["priority"], "urgent", "the reloaded rule applies");
    let start = std::time::Instant::now();
    while !desk.dir.join("inbox2/new").is_dir() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no task for the added mailbox: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(
        desk.dir.join("inbox2/new/x.eml"),
        mail(
            "dora@customer.test",
            "second@example.com",
            "to the new mailbox",
            "nb1@customer.test",
            "",
            "x",
        ),
    )
    .unwrap();
    wait_until(20, "ticket 2 from the added mailbox", || {
        desk.run(&["show", "2", "--json"]).status.success()
    });
    let t: serde_json::Value = serde_json::from_str(&desk.ok(&["show", "2", "--json"])).unwrap();
    assert_eq!(t["mailbox"], "second");
    // A broken config: the old one keeps running.
    std::fs::write(
        &desk.config,
        good.replace("set.priority = \"urgent\"", "set.priority = \"asap\""),
    )
    .unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    notes.wait_for("STATUS=config reload failed; running the previous config");
    new_mail(3);
    // The CLI needs a readable config to find the API: put the good one back, without a reload.
    std::fs::write(&desk.config, &good).unwrap();
    wait_until(20, "ticket 3", || desk.run(&["show", "3", "--json"]).status.success());
    let t: serde_json::Value = serde_json::from_str(&desk.ok(&["show", "3", "--json"])).unwrap();
    assert_eq!(t["priority"], "urgent", "the previous config still runs");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("config reload failed; keeping the running config"),
        "{text}"
    );
    assert!(
        text.contains("set.priority \\\"asap\\\"") || text.contains("set.priority \"asap\""),
        "the log names the problem: {text}"
    );
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    notes.wait_for("STOPPING=1");
    assert!(child.0.wait().unwrap().success());
}

/// Kills the daemon if the test fails half-way.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
