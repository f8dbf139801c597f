//! `choice!`: declares a configuration choice, an enum parsed from fixed lowercase names whose
//! parse error lists every valid name. The enums live with the strategies they select (a load
//! balancer kind in `balance`, a retry strategy in `fault`); the configuration only reads them.

/// The message of a bad choice: the value and every valid name.
pub(crate) fn not_one_of(value: &str, valid: &[&str]) -> String {
    format!("\"{value}\" is not one of {}", valid.join(", "))
}

/// Declares a choice enum with `name()`, `ALL`, `FromStr`, `Display` and `Deserialize`.
macro_rules! choice {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every choice, in documentation order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used in configuration files.
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::choice::not_one_of(other, &[$($text),+])),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as ::serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(<D::Error as ::serde::de::Error>::custom)
            }
        }
    };
}

pub(crate) use choice;
