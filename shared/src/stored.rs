//! Enums stored as text: [`stored_enum!`] declares the enum with the text of
//! each variant, `as_str` for writing and `from_stored` for reading. Text the
//! enum does not know is an error (`UnknownStoredValue`), never a silent
//! default: a row the code cannot read is corruption to report, not a value
//! to guess.

/// A stored text no variant of the named enum has.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stored {kind} {text:?}")]
pub struct UnknownStoredValue {
    /// The enum's name.
    pub kind: &'static str,
    /// The text found.
    pub text: String,
}

impl From<UnknownStoredValue> for crate::db::DbError {
    fn from(err: UnknownStoredValue) -> Self {
        crate::db::DbError::Other(anyhow::anyhow!(err))
    }
}

/// Declares an enum stored as text:
///
/// ```
/// backroom_shared::stored_enum!(
///     /// Where a reservation is.
///     pub ReservationState {
///         /// Holding units.
///         Active = "ACTIVE",
///         /// Released.
///         Released = "RELEASED",
///     }
/// );
/// assert_eq!(ReservationState::Active.as_str(), "ACTIVE");
/// assert!(ReservationState::from_stored("GONE").is_err());
/// ```
#[macro_export]
macro_rules! stored_enum {
    ($(#[$doc:meta])* $vis:vis $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Reads stored text; text no variant has is an error.
            pub fn from_stored(text: &str) -> Result<Self, $crate::stored::UnknownStoredValue> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err($crate::stored::UnknownStoredValue {
                        kind: stringify!($name),
                        text: other.to_owned(),
                    }),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::stored_enum!(
        /// A test enum.
        Light {
            /// Stop.
            Red = "red",
            /// Go.
            Green = "green",
        }
    );

    #[test]
    fn every_variant_round_trips_and_unknown_text_is_an_error() {
        for light in Light::ALL {
            assert_eq!(Light::from_stored(light.as_str()).unwrap(), *light);
        }
        let err = Light::from_stored("amber").unwrap_err();
        assert_eq!(err.to_string(), r#"unknown stored Light "amber""#);
    }
}
