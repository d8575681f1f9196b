//! The functional core: pure decisions over plain types. No module here
//! performs I/O, reads the clock, or imports an adapter or a transport; the
//! shell passes in the time, the parsed mail and the validated [`settings`].

pub mod agent;
pub mod authres;
pub mod calendar;
pub mod classify;
pub mod embed;
pub mod intent;
pub mod language;
pub mod merge;
pub mod model;
pub mod outgoing;
pub mod portal;
pub mod reply;
pub mod report;
pub mod route;
pub mod sentiment;
pub mod settings;
pub mod sla;
pub mod subject;
pub mod summary;
pub mod thread;
pub mod ticket;
pub mod token;
