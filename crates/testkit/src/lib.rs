//! Test fixtures that stand in for the internet: tests never leave 127.0.0.1.

pub mod http;
