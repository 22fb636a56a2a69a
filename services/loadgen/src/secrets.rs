//! Secret scan: after a run, every row of every table and every log line is
//! searched for what must never be stored or logged — card numbers (any
//! 13–19 digit Luhn-valid number, also typed in groups), PEM private keys,
//! and each secret the run handled (passwords, tokens, keys), given by the
//! caller.
//!
//! Layout: [`card_numbers_in`] finds card numbers in text; [`SecretScan`]
//! holds the needles and scans text, log files ([`SecretScan::scan_logs`])
//! and a whole database ([`SecretScan::scan_database`]), returning a
//! [`ScanReport`] of what it read and every [`Leak`] with its context.

use std::path::PathBuf;

use anyhow::Context as _;
use backroom_shared::validate::{is_date_time_stamp, luhn_valid, mask_uuids};
use diesel::{QueryableByName, RunQueryDsl as _, sql_query, sql_types::Text};

/// The marker every PEM private key carries (`-----BEGIN PRIVATE KEY-----`,
/// `… EC PRIVATE KEY…`, …).
pub const PRIVATE_KEY_MARKER: &str = "PRIVATE KEY";

/// Characters of context shown on each side of a finding.
const CONTEXT: usize = 60;

/// A maximal run of ASCII digits that stands alone: neither neighbour is a
/// letter, digit or `_` (digits inside hex ids, base64 or identifiers are
/// not numbers anyone typed).
struct Group {
    start: usize,
    end: usize,
}

fn standalone_digit_groups(bytes: &[u8]) -> Vec<Group> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut groups = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let before = start.checked_sub(1).map(|k| bytes[k]);
        let after = bytes.get(i).copied();
        if !before.is_some_and(word) && !after.is_some_and(word) {
            groups.push(Group { start, end: i });
        }
    }
    groups
}

/// Every card number in `text`: a standalone digit run of 13–19 digits, or
/// consecutive standalone groups joined by one space or dash (`4242 4242
/// 4242 4242`), that passes Luhn. UUIDs, digits touching letters (hex ids,
/// tokens) and date-time stamps (`20261201000001`) do not count. Returns the
/// byte offset and the digits.
pub fn card_numbers_in(text: &str) -> Vec<(usize, String)> {
    let bytes = mask_uuids(text).into_bytes();
    let groups = standalone_digit_groups(&bytes);
    let digits = |from: usize, to: usize| -> String {
        groups[from..=to]
            .iter()
            .map(|g| &text[g.start..g.end])
            .collect()
    };
    let mut found = Vec::new();
    let mut first = 0;
    while first < groups.len() {
        // The chain of groups starting at `first`, each one separator apart.
        let mut last = first;
        while last + 1 < groups.len()
            && groups[last + 1].start == groups[last].end + 1
            && matches!(bytes[groups[last].end], b' ' | b'-')
        {
            last += 1;
        }
        // Every sub-chain, so a number typed in groups next to other numbers
        // is still seen.
        for (from, group) in groups.iter().enumerate().take(last + 1).skip(first) {
            for to in from..=last {
                let candidate = digits(from, to);
                if (13..=19).contains(&candidate.len())
                    && luhn_valid(&candidate)
                    && !is_date_time_stamp(&candidate)
                {
                    found.push((group.start, candidate));
                }
            }
        }
        first = last + 1;
    }
    found
}

/// One place a secret was found.
#[derive(Debug, Clone)]
pub struct Leak {
    /// Where: `log <file>:<line>` or `table <schema>.<table>`.
    pub source: String,
    /// What: the needle's label, or `card number <digits>`.
    pub what: String,
    /// The surrounding text.
    pub context: String,
}

impl std::fmt::Display for Leak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in {}: …{}…", self.what, self.source, self.context)
    }
}

/// What a scan read and found.
#[derive(Debug, Default, Clone)]
pub struct ScanReport {
    /// Tables read.
    pub tables: usize,
    /// Rows read (each also as its bytea columns decoded).
    pub rows: usize,
    /// Log files read.
    pub log_files: usize,
    /// Log lines read.
    pub log_lines: usize,
    /// Every finding.
    pub leaks: Vec<Leak>,
}

impl ScanReport {
    /// Adds another report's counts and findings.
    pub fn merge(&mut self, other: ScanReport) {
        self.tables += other.tables;
        self.rows += other.rows;
        self.log_files += other.log_files;
        self.log_lines += other.log_lines;
        self.leaks.extend(other.leaks);
    }
}

/// What to look for: card numbers and private-key markers always, plus every
/// secret added with [`SecretScan::secret`].
#[derive(Debug, Clone, Default)]
pub struct SecretScan {
    needles: Vec<(String, String)>,
}

fn context(text: &str, at: usize, len: usize) -> String {
    let mut from = at.saturating_sub(CONTEXT);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    let mut to = (at + len + CONTEXT).min(text.len());
    while !text.is_char_boundary(to) {
        to += 1;
    }
    text[from..to].to_owned()
}

#[derive(QueryableByName)]
struct TableName {
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct RowText {
    #[diesel(sql_type = Text)]
    row: String,
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl SecretScan {
    /// A scan for card numbers and private keys only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also looks for `value`, reported as `label`. Empty values are
    /// ignored; a value shorter than 8 characters is refused (it would match
    /// by chance).
    pub fn secret(&mut self, label: impl Into<String>, value: impl Into<String>) -> &mut Self {
        let value = value.into();
        if !value.is_empty() {
            assert!(
                value.len() >= 8,
                "secret needles must be at least 8 characters"
            );
            self.needles.push((label.into(), value));
        }
        self
    }

    /// How many secrets (besides card numbers and key markers) it looks for.
    pub fn secrets(&self) -> usize {
        self.needles.len()
    }

    /// Every finding in `text`, attributed to `source`.
    pub fn scan_text(&self, source: &str, text: &str) -> Vec<Leak> {
        let mut leaks = Vec::new();
        let mut find = |what: &str, needle: &str| {
            if let Some(at) = text.find(needle) {
                leaks.push(Leak {
                    source: source.to_owned(),
                    what: what.to_owned(),
                    context: context(text, at, needle.len()),
                });
            }
        };
        find("private key marker", PRIVATE_KEY_MARKER);
        for (label, needle) in &self.needles {
            find(label, needle);
        }
        for (at, digits) in card_numbers_in(text) {
            leaks.push(Leak {
                source: source.to_owned(),
                what: format!("card number {digits}"),
                context: context(text, at, digits.len()),
            });
        }
        leaks
    }

    /// Scans every line of every file in `paths`.
    pub fn scan_logs(&self, paths: &[PathBuf]) -> anyhow::Result<ScanReport> {
        let mut report = ScanReport::default();
        for path in paths {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let text = String::from_utf8_lossy(&bytes);
            report.log_files += 1;
            for (n, line) in text.lines().enumerate() {
                report.log_lines += 1;
                report
                    .leaks
                    .extend(self.scan_text(&format!("log {}:{}", path.display(), n + 1), line));
            }
        }
        Ok(report)
    }

    /// Scans every row of every table in every schema of the database at
    /// `admin_url` (a superuser URL) except Postgres's own: each row as JSON
    /// (`row_to_json`), and each bytea column decoded (`encode(…,
    /// 'escape')`), since JSON shows bytes as hex. Blocking: call it on the
    /// blocking pool.
    pub fn scan_database(&self, admin_url: &str) -> anyhow::Result<ScanReport> {
        let mut conn = backroom_shared::db::connect(admin_url)?;
        let tables: Vec<TableName> = sql_query(
            "SELECT table_schema::text AS schema, table_name::text AS name
             FROM information_schema.tables
             WHERE table_type = 'BASE TABLE'
               AND table_schema NOT IN ('pg_catalog', 'information_schema')
               AND table_schema NOT LIKE 'pg\\_%'
             ORDER BY 1, 2",
        )
        .load(&mut conn)?;
        let mut report = ScanReport::default();
        for table in tables {
            let qualified = format!(
                "{}.{}",
                quote_ident(&table.schema),
                quote_ident(&table.name)
            );
            let source = format!("table {}.{}", table.schema, table.name);
            let rows: Vec<RowText> = sql_query(format!(
                "SELECT row_to_json(t)::text AS row FROM {qualified} t"
            ))
            .load(&mut conn)
            .with_context(|| format!("cannot read {qualified}"))?;
            report.tables += 1;
            report.rows += rows.len();
            for row in &rows {
                report.leaks.extend(self.scan_text(&source, &row.row));
            }
            let bytea: Vec<RowText> = sql_query(format!(
                "SELECT column_name::text AS row FROM information_schema.columns
                 WHERE table_schema = '{}' AND table_name = '{}' AND data_type = 'bytea'",
                table.schema.replace('\'', "''"),
                table.name.replace('\'', "''")
            ))
            .load(&mut conn)?;
            for column in bytea {
                let column = quote_ident(&column.row);
                let values: Vec<RowText> = sql_query(format!(
                    "SELECT encode({column}, 'escape') AS row FROM {qualified} WHERE {column} IS NOT NULL"
                ))
                .load(&mut conn)?;
                for value in &values {
                    report
                        .leaks
                        .extend(self.scan_text(&format!("{source}.{column}"), &value.row));
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_are_found_plain_and_in_groups() {
        let text = "card 4242424242424242, amex 3782-822463-10005, spaced 5555 5555 5555 4444.";
        let found: Vec<String> = card_numbers_in(text).into_iter().map(|(_, d)| d).collect();
        assert!(found.contains(&"4242424242424242".to_owned()), "{found:?}");
        assert!(found.contains(&"378282246310005".to_owned()), "{found:?}");
        assert!(found.contains(&"5555555555554444".to_owned()), "{found:?}");
    }

    #[test]
    fn uuids_hex_ids_timestamps_stamps_and_non_luhn_numbers_are_not_card_numbers() {
        // 4242424242424242 is Luhn-valid: inside hex or after a letter it is
        // part of an id, not a number.
        let text = r#"{"id":"01890a5d-ac96-7000-8000-424242424242","trace_id":"4242424242424242ab","span":"x4242424242424242","at":"2025-06-01T12:34:56.123456+00:00","n":4242424242424241,"ts":"2025-06-01 12:34:56","version":"20261201000001"}"#;
        assert!(
            luhn_valid("20261201000001"),
            "the migration version passes Luhn"
        );
        assert!(
            card_numbers_in(text).is_empty(),
            "{:?}",
            card_numbers_in(text)
        );
    }

    #[test]
    fn a_scan_reports_each_secret_with_its_context() {
        let mut scan = SecretScan::new();
        scan.secret("password", "correct horse battery");
        let leaks = scan.scan_text(
            "log x:1",
            "login with correct horse battery and -----BEGIN PRIVATE KEY-----",
        );
        let what: Vec<&str> = leaks.iter().map(|l| l.what.as_str()).collect();
        assert_eq!(what, ["private key marker", "password"]);
        assert!(leaks[1].context.contains("login with"));
        assert!(scan.scan_text("log x:2", "nothing to see").is_empty());
    }
}
