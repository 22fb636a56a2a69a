//! AIP-158 pagination shared by every List RPC: page-size rules and opaque
//! page tokens bound to the request's filters.
//!
//! A token is base64url(JSON `{"after": <last key>, "f": <filter fingerprint>}`).
//! Reusing it with different filters, or sending garbage, is INVALID_ARGUMENT
//! on `page_token`, never a silent wrong page.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::errors::FieldViolation;

/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: i64 = 20;
/// Larger requested sizes are lowered to this.
pub const MAX_PAGE_SIZE: i64 = 100;

/// A validated page request: how many rows, and after which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Rows to return.
    pub size: i64,
    /// Sort key of the last row of the previous page, if any.
    pub after: Option<String>,
    fingerprint: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Token {
    after: String,
    f: String,
}

/// A fingerprint of a request's filters (anything that must stay the same
/// across pages).
pub fn fingerprint(filters: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for filter in filters {
        hasher.update((filter.len() as u64).to_le_bytes());
        hasher.update(filter.as_bytes());
    }
    URL_SAFE_NO_PAD.encode(&hasher.finalize()[..12])
}

/// The violation for a page token this API did not issue (or that does not
/// fit the listing).
pub fn bad_token() -> FieldViolation {
    FieldViolation::new("page_token", "is not a token this API issued")
}

/// Parses the paging fields of a List request bound to `filters`,
/// recording violations (`None` when any).
pub fn page(
    violations: &mut crate::errors::Violations,
    page_size: i32,
    page_token: &str,
    filters: &[&str],
) -> Option<PageRequest> {
    match PageRequest::parse(page_size, page_token, fingerprint(filters)) {
        Ok(page) => Some(page),
        Err(found) => {
            violations.extend(found);
            None
        }
    }
}

impl PageRequest {
    /// The sort key of the previous page as a UUID (listings keyed by
    /// UUIDv7 ids).
    pub fn after_uuid(&self) -> Result<Option<uuid::Uuid>, FieldViolation> {
        self.after
            .as_deref()
            .map(|after| uuid::Uuid::try_parse(after).map_err(|_| bad_token()))
            .transpose()
    }

    /// Validates `page_size` and `page_token` for a request whose filters
    /// have `fingerprint`. Field names are the proto's.
    pub fn parse(
        page_size: i32,
        page_token: &str,
        fingerprint: String,
    ) -> Result<Self, Vec<FieldViolation>> {
        Self::parse_with_limits(
            page_size,
            page_token,
            fingerprint,
            DEFAULT_PAGE_SIZE,
            MAX_PAGE_SIZE,
        )
    }

    /// [`Self::parse`] for a listing with its own default and maximum page
    /// sizes (one that machines read whole, in large pages).
    pub fn parse_with_limits(
        page_size: i32,
        page_token: &str,
        fingerprint: String,
        default_size: i64,
        max_size: i64,
    ) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Vec::new();
        let size = match page_size {
            0 => default_size,
            n if n < 0 => {
                violations.push(FieldViolation::new("page_size", "must not be negative"));
                default_size
            }
            n => i64::from(n).min(max_size),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            let token = URL_SAFE_NO_PAD
                .decode(page_token)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Token>(&bytes).ok());
            match token {
                Some(token) if token.f == fingerprint => Some(token.after),
                Some(_) => {
                    violations.push(FieldViolation::new(
                        "page_token",
                        "belongs to a request with different filters",
                    ));
                    None
                }
                None => {
                    violations.push(FieldViolation::new(
                        "page_token",
                        "is not a token this API issued",
                    ));
                    None
                }
            }
        };
        if violations.is_empty() {
            Ok(Self {
                size,
                after,
                fingerprint,
            })
        } else {
            Err(violations)
        }
    }

    /// Rows to fetch: one more than the page, to learn whether a next page
    /// exists without a count query.
    pub fn fetch_limit(&self) -> i64 {
        self.size + 1
    }

    /// Cuts `rows` (fetched with [`Self::fetch_limit`]) to the page and
    /// returns the next page token (empty on the last page); `key` gives a
    /// row's sort key.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> String) -> (Vec<T>, String) {
        let page_size = usize::try_from(self.size).unwrap_or(usize::MAX);
        if rows.len() <= page_size {
            return (rows, String::new());
        }
        rows.truncate(page_size);
        let next = rows.last().map(|last| {
            let token = Token {
                after: key(last),
                f: self.fingerprint.clone(),
            };
            // Serializing two strings cannot fail.
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
        });
        (rows, next.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_cap_and_reject_negatives() {
        let fp = fingerprint(&[]);
        assert_eq!(PageRequest::parse(0, "", fp.clone()).unwrap().size, 20);
        assert_eq!(PageRequest::parse(7, "", fp.clone()).unwrap().size, 7);
        assert_eq!(PageRequest::parse(1000, "", fp.clone()).unwrap().size, 100);
        let err = PageRequest::parse(-1, "", fp).unwrap_err();
        assert_eq!(err[0].field, "page_size");
    }

    #[test]
    fn tokens_round_trip_and_are_bound_to_filters() {
        let fp = fingerprint(&["active"]);
        let page = PageRequest::parse(2, "", fp.clone()).unwrap();
        let (rows, next) = page.finish(vec!["a", "b", "c"], |r| r.to_string());
        assert_eq!(rows, ["a", "b"]);
        let again = PageRequest::parse(2, &next, fp).unwrap();
        assert_eq!(again.after.as_deref(), Some("b"));
        let (rows, next) = again.finish(vec!["c"], |r| r.to_string());
        assert_eq!((rows, next), (vec!["c"], String::new()));

        let other = fingerprint(&["inactive"]);
        let err = PageRequest::parse(
            2,
            &URL_SAFE_NO_PAD.encode(br#"{"after":"b","f":"x"}"#),
            other,
        )
        .unwrap_err();
        assert_eq!(err[0].field, "page_token");
        let err = PageRequest::parse(2, "%%%not-base64", fingerprint(&[])).unwrap_err();
        assert_eq!(err[0].field, "page_token");
    }
}
