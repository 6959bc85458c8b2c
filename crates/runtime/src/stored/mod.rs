//! The files the app keeps, in formats of its own.
//!
//! The window's transfer types (`crates/ipc`) change with the window; a user's registry, its
//! validation cache and its settings must not. So every kept file has a type here, with a
//! `format` number, and conversions to and from the transfer type. The field names below are
//! the files' contract: renaming a field of an `ipc` type fails to compile here until its
//! conversion is written out keeping the stored name, and the fixtures in
//! `tests/fixtures/stored/` (files as the app wrote them) keep loading.
//!
//! Reading goes through [`crate::storage::read_versioned`]: a file without `format` is format 0
//! (what the app wrote before these types), a file from a newer version is refused with a
//! message and never written over.

pub mod applog;
pub mod endpoint;
pub mod llm;
pub mod model;
pub mod orchestrator;
pub mod runtime;

/// A kept file: its format number beside the fields of `T` (no `format`: format 0).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Kept<T> {
    #[serde(default)]
    pub format: u32,
    #[serde(flatten)]
    pub value: T,
}

impl<T> Kept<T> {
    /// `value` as this version writes it, in format `format`.
    pub fn of<I>(format: u32, value: &I) -> Self
    where
        I: Conv<T>,
    {
        Self { format, value: value.conv() }
    }

    /// The transfer type's value.
    pub fn get<I>(&self) -> I
    where
        T: Conv<I>,
    {
        self.value.conv()
    }
}

/// A value converted field by field between a stored type and a transfer type.
pub trait Conv<T> {
    fn conv(&self) -> T;
}

/// Plain values are the same on both sides.
macro_rules! same {
    ($($t:ty),*) => {$(
        impl Conv<$t> for $t {
            fn conv(&self) -> $t {
                self.clone()
            }
        }
    )*};
}
same!(String, bool, u16, u32, u64, f64, (u32, u32), (String, String));

impl<A: Conv<B>, B> Conv<Option<B>> for Option<A> {
    fn conv(&self) -> Option<B> {
        self.as_ref().map(Conv::conv)
    }
}

impl<A: Conv<B>, B> Conv<Vec<B>> for Vec<A> {
    fn conv(&self) -> Vec<B> {
        self.iter().map(Conv::conv).collect()
    }
}

/// A stored struct that mirrors a transfer struct field by field (same names), with [`Conv`]
/// both ways. When a transfer field is renamed this stops compiling: write that struct's two
/// conversions out by hand then, keeping the stored name.
macro_rules! mirror_struct {
    (
        $(#[$m:meta])*
        pub struct $name:ident <=> $ipc:ty {
            $( $(#[$fm:meta])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub struct $name {
            $( $(#[$fm])* pub $field: $ty, )*
        }

        impl $crate::stored::Conv<$ipc> for $name {
            fn conv(&self) -> $ipc {
                type Ipc = $ipc;
                Ipc { $( $field: $crate::stored::Conv::conv(&self.$field), )* }
            }
        }

        impl $crate::stored::Conv<$name> for $ipc {
            fn conv(&self) -> $name {
                $name { $( $field: $crate::stored::Conv::conv(&self.$field), )* }
            }
        }
    };
}
pub(crate) use mirror_struct;

/// A stored enum of unit variants (snake_case in the file) that mirrors a transfer enum.
macro_rules! mirror_enum {
    (
        $(#[$m:meta])*
        pub enum $name:ident <=> $ipc:ty { $( $variant:ident ),* $(,)? }
    ) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $( $variant, )*
        }

        impl $crate::stored::Conv<$ipc> for $name {
            fn conv(&self) -> $ipc {
                type Ipc = $ipc;
                match self {
                    $( Self::$variant => Ipc::$variant, )*
                }
            }
        }

        impl $crate::stored::Conv<$name> for $ipc {
            fn conv(&self) -> $name {
                type Ipc = $ipc;
                match self {
                    $( Ipc::$variant => $name::$variant, )*
                }
            }
        }
    };
}
pub(crate) use mirror_enum;
