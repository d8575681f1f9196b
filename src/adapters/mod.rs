//! Adapters between the outside world's formats and the core's types: raw
//! mail to [`crate::core::model::InboundMessage`] ([`inbound`], [`html`]),
//! the TOML file to [`crate::core::settings::Settings`] ([`config`]), the
//! store and its backends ([`store`]), backfill input files ([`ingest`]),
//! and the knowledge base's articles ([`knowledge`]).

pub mod config;
pub mod html;
pub mod inbound;
pub mod ingest;
pub mod intent;
pub mod knowledge;
pub mod search;
pub mod store;
