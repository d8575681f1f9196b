//! postdesk: an email-first shared-inbox helpdesk daemon.
//!
//! The folders are the layers (see ARCHITECTURE.md):
//!
//! - [`core`]: the functional core — the ticket model, threading, routing,
//!   replies, SLA, reports and outgoing mail, and the validated settings it
//!   decides by. It never performs I/O, reads the clock or names an adapter.
//! - [`adapters`]: the parsed-mail adapter (mail-parser), the configuration
//!   file (TOML), the store and its backends, and backfill input files.
//! - [`transports`]: IMAP, Maildir, SMTP and HTTP.
//! - On top, the imperative shell: [`pipeline`] joins the core to the store,
//!   [`view`] answers read queries, and [`daemon`] and [`cli`] run it all.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod cli;
pub mod core;
pub mod daemon;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod transports;
pub mod view;
