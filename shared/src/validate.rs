//! Checks for free-text request fields, shared by every service so the same
//! text is refused the same way everywhere. Control characters are refused
//! outright: Postgres cannot store NUL in `text` or `jsonb`, and no field of
//! the API is meant to carry terminal escapes or line breaks.

use crate::errors::FieldViolation;

/// Refuses control characters (NUL, escapes, line breaks) in `raw`.
pub fn no_control_characters(field: &str, raw: &str) -> Result<(), FieldViolation> {
    if raw.chars().any(char::is_control) {
        Err(FieldViolation::new(
            field,
            "must not contain control characters",
        ))
    } else {
        Ok(())
    }
}

/// An optional text field: trimmed, at most `max` characters, no control
/// characters.
pub fn optional_text(field: &str, raw: &str, max: usize) -> Result<String, FieldViolation> {
    let value = raw.trim();
    if value.chars().count() > max {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    no_control_characters(field, value)?;
    Ok(value.to_owned())
}

/// A required text field: as [`optional_text`], and not blank.
pub fn required_text(field: &str, raw: &str, max: usize) -> Result<String, FieldViolation> {
    if raw.trim().is_empty() {
        return Err(FieldViolation::new(field, "is required"));
    }
    optional_text(field, raw, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_bounded_and_free_of_control_characters() {
        assert_eq!(optional_text("f", "  Mug  ", 10).unwrap(), "Mug");
        assert_eq!(optional_text("f", "", 10).unwrap(), "");
        assert_eq!(required_text("f", "   ", 10).unwrap_err().field, "f");
        assert!(optional_text("f", "x\0y", 10).is_err());
        assert!(optional_text("f", "x\u{1b}[31m", 10).is_err());
        assert!(optional_text("f", "ü€😀", 3).is_ok());
        assert!(optional_text("f", "ü€😀!", 3).is_err());
    }
}
