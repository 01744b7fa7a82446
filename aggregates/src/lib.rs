//! The pure domain of Domizan: aggregates, their commands and events, and the rules that
//! decide between them. No I/O: the clock, generated ids, sealed (encrypted) personal data
//! and anything looked up elsewhere are put into the command by the caller.

pub mod admin;
pub mod lead;
pub mod text;
