//! Checks for free-text request fields, shared by every service so the same
//! text is refused the same way everywhere.
//!
//! - Control characters are refused outright: Postgres cannot store NUL in
//!   `text` or `jsonb`, and no field of the API is meant to carry terminal
//!   escapes or line breaks. So are the invisible characters that make text
//!   show other than it reads ([`is_deceptive_format`]): the bidirectional
//!   embeddings, overrides and isolates of "Trojan Source" (CVE-2021-42574)
//!   and the zero-width space, word joiner and byte-order mark. The joiners
//!   that scripts and emoji need (U+200C, U+200D) and the direction marks
//!   of right-to-left text (U+200E, U+200F) stay allowed.
//! - Card numbers are refused in every free-text field ([`optional_text`],
//!   [`required_text`], [`no_card_number`]): a PAN typed into a display
//!   name, an address line, a note or a description would otherwise be
//!   stored and logged, which no part of Backroom may do (PCI DSS keeps
//!   every system that stores a PAN in scope). [`contains_card_number`]
//!   says what counts as one.
//!
//! Layout: the text validators first, then the card-number detector and its
//! helpers ([`decimal_digit`], [`luhn_valid`], [`is_date_time_stamp`],
//! [`mask_uuids`]), which the secret scan of the fault tests reuses.

use crate::errors::FieldViolation;

/// The violation description of a control or deceptive formatting
/// character found in text.
pub const CONTROL_IN_TEXT: &str = "must not contain control characters or invisible formatting (bidirectional overrides, zero-width spaces)";

/// Whether `c` is an invisible formatting character that makes text display
/// other than it reads: a bidirectional embedding, override or isolate
/// (U+202A–U+202E, U+2066–U+2069), the zero-width space (U+200B), the word
/// joiner and invisible operators (U+2060–U+2064), the Mongolian vowel
/// separator (U+180E) or the byte-order mark (U+FEFF).
pub fn is_deceptive_format(c: char) -> bool {
    matches!(
        c,
        '\u{202A}'..='\u{202E}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200B}'
            | '\u{2060}'..='\u{2064}'
            | '\u{180E}'
            | '\u{FEFF}'
    )
}

/// Whether `c` is refused in text: a control character or a deceptive
/// formatting one.
pub fn is_refused_in_text(c: char) -> bool {
    c.is_control() || is_deceptive_format(c)
}

/// Refuses control characters (NUL, escapes, line breaks) and deceptive
/// invisible formatting ([`is_deceptive_format`]) in `raw`.
pub fn no_control_characters(field: &str, raw: &str) -> Result<(), FieldViolation> {
    if raw.chars().any(is_refused_in_text) {
        Err(FieldViolation::new(field, CONTROL_IN_TEXT))
    } else {
        Ok(())
    }
}

/// The violation description of a card number found in free text.
pub const CARD_NUMBER_IN_TEXT: &str = "must not contain a card number";

/// Refuses `raw` if it contains a card number ([`contains_card_number`]).
/// The description never echoes the value.
pub fn no_card_number(field: &str, raw: &str) -> Result<(), FieldViolation> {
    if contains_card_number(raw) {
        Err(FieldViolation::new(field, CARD_NUMBER_IN_TEXT))
    } else {
        Ok(())
    }
}

/// An optional text field: trimmed, at most `max` characters, no control
/// characters, no card number.
pub fn optional_text(field: &str, raw: &str, max: usize) -> Result<String, FieldViolation> {
    let value = raw.trim();
    if value.chars().count() > max {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    // A card number first: however it is spelled (zero-width spaces
    // between its groups included), the caller learns that it was one.
    no_card_number(field, value)?;
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

/// The code point of the digit zero of every run of Unicode decimal digits
/// (general category Nd): Unicode encodes each decimal digit set as ten
/// consecutive code points with the values 0–9, so a digit's value is its
/// distance from its run's zero. Unicode 14.0 (generated with Python's
/// `unicodedata`), plus the sets of 15.0 (Kawi, Nag Mundari) and 16.0
/// (Garay, Sunuwar, Myanmar Extended-C, Gurung Khema, Kirat Rai, outlined
/// digits, Ol Onal). Sorted.
const DIGIT_ZEROS: [u32; 76] = [
    0x30, 0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66,
    0xDE6, 0xE50, 0xED0, 0xF20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90,
    0x1B50, 0x1BB0, 0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0xFF10,
    0x104A0, 0x10D30, 0x10D40, 0x11066, 0x110F0, 0x11136, 0x111D0, 0x112F0, 0x11450, 0x114D0,
    0x11650, 0x116C0, 0x116D0, 0x116DA, 0x11730, 0x118E0, 0x11950, 0x11BF0, 0x11C50, 0x11D50,
    0x11DA0, 0x11F50, 0x16130, 0x16A60, 0x16AC0, 0x16B50, 0x16D70, 0x1CCF0, 0x1D7CE, 0x1D7D8,
    0x1D7E2, 0x1D7EC, 0x1D7F6, 0x1E140, 0x1E2F0, 0x1E4F0, 0x1E5F1, 0x1E950, 0x1FBF0,
];

/// The value of `c` if it is a decimal digit of any script (ASCII `4`,
/// full-width `４`, Arabic-Indic `٤`, mathematical bold `𝟒`, …).
pub fn decimal_digit(c: char) -> Option<u8> {
    let cp = u32::from(c);
    if c.is_ascii_digit() {
        return u8::try_from(cp - 0x30).ok();
    }
    let zero = match DIGIT_ZEROS.binary_search(&cp) {
        Ok(at) => DIGIT_ZEROS[at],
        Err(0) => return None,
        Err(at) => DIGIT_ZEROS[at - 1],
    };
    u8::try_from(cp - zero).ok().filter(|value| *value < 10)
}

/// Whether `digits` (ASCII digits only) passes the Luhn check.
pub fn luhn_valid(digits: &str) -> bool {
    digits.bytes().all(|b| b.is_ascii_digit())
        && luhn(&digits.bytes().map(|b| b - b'0').collect::<Vec<_>>())
}

/// Luhn over digit values (each 0–9); false for no digits.
fn luhn(values: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, value) in values.iter().rev().enumerate() {
        let mut d = u32::from(*value);
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !values.is_empty() && sum.is_multiple_of(10)
}

/// Card numbers are 13–19 digits long (ISO/IEC 7812; 12-digit numbers are
/// not issued by the networks people type into forms): the lengths the guard
/// spots and the lengths a card number field accepts.
pub const PAN_DIGITS: std::ops::RangeInclusive<usize> = 13..=19;

/// Whether `text` contains a card number someone typed in: 13–19 decimal
/// digits that pass Luhn, written
/// - in any script's decimal digits, taken by value (`４２４２…`, `٤٢٤٢…`),
///   and in their compatibility forms (superscript `⁴²`, subscript `₄₂`,
///   circled `④②`);
/// - in one run or in groups separated by characters that are neither
///   letters nor digits (spaces, dashes, dots, slashes, underscores, brackets,
///   no-break and zero-width spaces, combining marks, full-width
///   punctuation…):
///   `4242.4242.4242.4242`, `3782-822463-10005`, `4242 – 4242 – 4242 – 4242`;
/// - next to other digit groups (`ref 7: 4242 4242 4242 4242 / 1`): every
///   run of consecutive groups is tried.
///
/// A letter ends a number. Not card numbers, to keep false alarms low:
/// canonical UUIDs (resource ids: their digit groups joined across the
/// dashes may pass Luhn), numbers inside a single group of more than 19
/// digits, and 14 digits that read as a date-time `YYYYMMDDhhmmss` of
/// 1970–2099 (`2026-12-01 10:30:15`; no network issues 14-digit numbers
/// starting with 19 or 20). Other digit-heavy text — 13 or more digits in
/// short groups, such as an IBAN — passes Luhn by chance one time in ten
/// and is then refused too; the caller rewrites it.
pub fn contains_card_number(text: &str) -> bool {
    // Compatibility forms first (NFKD): `⁴²⁴²…`, `₄₂₄₂…`, `④②④②…` and
    // other digit look-alikes read as the digits they stand for.
    let text = icu_normalizer::DecomposingNormalizerBorrowed::new_nfkd().normalize(text);
    let text = mask_uuids(&text);
    // The digit groups since the last letter, and the group being read.
    let mut chain: Vec<Vec<u8>> = Vec::new();
    let mut group: Vec<u8> = Vec::new();
    for c in text.chars() {
        if let Some(value) = decimal_digit(c) {
            group.push(value);
        } else if c.is_alphanumeric() {
            // A letter (or a numeral with no digit form, such as `Ⅻ`) ends
            // the number.
            if !group.is_empty() {
                chain.push(std::mem::take(&mut group));
            }
            if chain_has_card_number(&chain) {
                return true;
            }
            chain.clear();
        } else if !group.is_empty() {
            chain.push(std::mem::take(&mut group));
        }
    }
    if !group.is_empty() {
        chain.push(group);
    }
    chain_has_card_number(&chain)
}

/// Whether some run of consecutive groups of `chain` is a card number.
fn chain_has_card_number(chain: &[Vec<u8>]) -> bool {
    (0..chain.len()).any(|first| {
        let mut digits: Vec<u8> = Vec::new();
        for group in &chain[first..] {
            digits.extend_from_slice(group);
            if digits.len() > *PAN_DIGITS.end() {
                return false;
            }
            if PAN_DIGITS.contains(&digits.len()) && luhn(&digits) && !date_time_stamp(&digits) {
                return true;
            }
        }
        false
    })
}

/// Whether `digits` (ASCII) are 14 that read as a date-time stamp
/// `YYYYMMDDhhmmss` of 1970–2099 (diesel's migration versions look like
/// that). No card network issues 14-digit numbers starting with 19 or 20
/// (14-digit Diners Club cards start with 30, 36 or 38), so such a run is
/// never a card number.
pub fn is_date_time_stamp(digits: &str) -> bool {
    digits.bytes().all(|b| b.is_ascii_digit())
        && date_time_stamp(&digits.bytes().map(|b| b - b'0').collect::<Vec<_>>())
}

/// [`is_date_time_stamp`] over digit values.
fn date_time_stamp(digits: &[u8]) -> bool {
    let field = |from: usize, to: usize| {
        digits
            .get(from..to)
            .map(|part| part.iter().fold(0u32, |n, d| n * 10 + u32::from(*d)))
    };
    digits.len() == 14
        && field(0, 4).is_some_and(|year| (1970..=2099).contains(&year))
        && field(4, 6).is_some_and(|month| (1..=12).contains(&month))
        && field(6, 8).is_some_and(|day| (1..=31).contains(&day))
        && field(8, 10).is_some_and(|hour| hour <= 23)
        && field(10, 12).is_some_and(|minute| minute <= 59)
        && field(12, 14).is_some_and(|second| second <= 59)
}

/// `text` with the hex digits of every canonical UUID (8-4-4-4-12)
/// replaced by `u`, dashes kept: the same length, byte for byte, so offsets
/// into the masked text are offsets into `text` (the secret scan relies on
/// it).
pub fn mask_uuids(text: &str) -> String {
    const DASHES: [usize; 4] = [8, 13, 18, 23];
    let mut bytes = text.as_bytes().to_vec();
    let mut i = 0;
    while i + 36 <= bytes.len() {
        let is_uuid = bytes[i..i + 36].iter().enumerate().all(|(k, b)| {
            if DASHES.contains(&k) {
                *b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
        if is_uuid {
            for b in &mut bytes[i..i + 36] {
                if *b != b'-' {
                    *b = b'u';
                }
            }
            i += 36;
        } else {
            i += 1;
        }
    }
    // Only ASCII hex digits were replaced (by ASCII), so this is UTF-8.
    String::from_utf8(bytes).unwrap_or_else(|_| text.to_owned())
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
        // Text that displays other than it reads is refused ("Trojan
        // Source" overrides and isolates, zero-width spaces, a BOM)...
        for deceptive in [
            "admin\u{202E}nimda",
            "\u{2066}x\u{2069}",
            "pay\u{200B}pal",
            "\u{FEFF}Mug",
            "a\u{2060}b",
        ] {
            let err = optional_text("note", deceptive, 50).unwrap_err();
            assert_eq!(
                (err.field.as_str(), err.description.as_str()),
                ("note", CONTROL_IN_TEXT)
            );
        }
        // ...while the joiners of emoji and scripts and the marks of
        // right-to-left text stay allowed.
        for fine in ["👩\u{200D}💻", "می\u{200C}خواهم", "שלום\u{200F}!"] {
            assert!(optional_text("f", fine, 20).is_ok(), "{fine:?}");
        }
    }

    #[test]
    fn every_digit_run_is_ten_numeric_code_points_and_digits_read_by_value() {
        assert!(DIGIT_ZEROS.windows(2).all(|w| w[0] < w[1]), "sorted");
        for zero in DIGIT_ZEROS {
            for value in 0..10u8 {
                let c = char::from_u32(zero + u32::from(value)).unwrap();
                assert!(c.is_numeric(), "U+{:04X} is not numeric", u32::from(c));
                assert_eq!(decimal_digit(c), Some(value), "U+{:04X}", u32::from(c));
            }
        }
        for (c, value) in [('7', 7), ('７', 7), ('٧', 7), ('७', 7), ('𝟕', 7), ('৭', 7)] {
            assert_eq!(decimal_digit(c), Some(value), "{c}");
        }
        for c in ['a', '²', '½', 'Ⅻ', '-', ' ', '/', '٫'] {
            assert_eq!(decimal_digit(c), None, "{c}");
        }
    }

    #[test]
    fn the_attackers_spellings_of_a_card_number_are_spotted() {
        for text in [
            "pay with 4242424242424242 please",
            "x04242424242424242",
            "card 4242-4242-4242-4242",
            "4242.4242.4242.4242",
            "4242 4242 4242 4242",
            "4242/4242/4242/4242",
            "4242_4242_4242_4242",
            "4242,4242,4242,4242",
            "4242 – 4242 – 4242 – 4242",
            "4242\u{a0}4242\u{a0}4242\u{a0}4242",
            "4242\u{200b}4242\u{200b}4242\u{200b}4242",
            "4\u{301}242424242424242",
            "(4242) [4242] {4242} <4242>",
            "4242    4242 ---- 4242 ... 4242",
            "42.42.42.42.42.42.42.42",
            "４２４２４２４２４２４２４２４２",
            "４２４２．４２４２．４２４２．４２４２",
            "４２４２－４２４２－４２４２－４２４２",
            "4242 ４２４２ 4242 ４２４２",
            "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢",
            "४२४२ ४२४२ ४२४२ ४२४२",
            "𝟒𝟐𝟒𝟐𝟒𝟐𝟒𝟐𝟒𝟐𝟒𝟐𝟒𝟐𝟒𝟐",
            // Compatibility forms (found by an outside attacker).
            "⁴²⁴²⁴²⁴²⁴²⁴²⁴²⁴²",
            "₄₂₄₂ ₄₂₄₂ ₄₂₄₂ ₄₂₄₂",
            "④②④②④②④②④②④②④②④②",
            "4242 ⁴²⁴² ₄₂₄₂ ④②④②",
            "Amex 3782 822463 10005",
            "5555-5555-5555-4444 exp 12/30",
            // Next to other digit groups, before and after.
            "ref 7: 4242 4242 4242 4242 / 1",
            "1 4242.4242.4242.4242",
            "order 2: 4242.4242.4242.4242.2030",
        ] {
            assert!(contains_card_number(text), "not spotted: {text:?}");
            assert_eq!(
                optional_text("f", text, 100).unwrap_err().description,
                CARD_NUMBER_IN_TEXT,
                "{text:?}"
            );
        }
    }

    #[test]
    fn ordinary_text_ids_dates_and_invalid_numbers_are_not_card_numbers() {
        // An order id whose digit groups happen to pass Luhn when joined
        // across the dash (8000 + 424242424005).
        assert!(luhn_valid("8000424242424005"));
        for id in [
            "01a21281-fd20-719d-8000-424242424005",
            "01a21281-fd20-719d-8224-362751234567",
        ] {
            assert!(!contains_card_number(&format!("order {id}")), "{id}");
            assert!(!contains_card_number(&format!("orders/{id}")), "{id}");
        }
        assert!(
            luhn_valid("20261201103011"),
            "a date-time stamp that passes Luhn"
        );
        for text in [
            "order 12345",
            "4242424242424241",
            "4242 4242 4242 4241",
            "Unter den Linden 1, 10117 Berlin",
            "Flat 4, 221B Baker Street, London NW1 6XE",
            "+49 30 1234567",
            "restocked 2026-12-01 10:30:11",
            "2026-12-01T10:30:11.123456Z",
            "20261201103011",
            "Mug 350 ml, 12 x 9 cm, 4 colours",
            "4242a4242b4242c4242",
            "",
        ] {
            assert!(!contains_card_number(text), "false alarm: {text:?}");
        }
    }
}
