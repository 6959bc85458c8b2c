//! Pieces the tabs share.

pub mod bar;
pub mod card;
pub mod error_box;
pub mod footer;
pub mod planned;
