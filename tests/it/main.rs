//! The one integration-test binary: real Dovecot and aiosmtpd servers on
//! loopback, the real `postdesk` binary. `tests/run` installs the servers.

mod agents;
mod api;
mod browser;
mod channels;
mod cli;
mod crm;
mod golden;
mod hooks;
mod imap;
mod intent;
mod knowledge;
mod mail;
mod merge;
mod oauth2;
mod openapi;
mod pg;
mod postgres;
mod replies;
mod report;
mod rules;
mod security;
mod servers;
mod sla;
mod store;
mod support;
mod systemd;
mod tidy;
mod web;
