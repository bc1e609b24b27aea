//! `COPY … TO STDOUT` on the wire: the rows of the statement's query,
//! already encoded as DataRows by the pipeline (masks, limits, the audit
//! record's row count and cancellation all apply as for a SELECT), are
//! rewritten one at a time into COPY's text, CSV or binary format and sent
//! as CopyData messages (PostgreSQL sends one per row). Nothing is
//! collected: memory stays one row whatever the result size.
//!
//! Binary rows are DataRows encoded in binary format with the field count
//! in front; text and CSV rows re-escape the text-format fields the way
//! PostgreSQL's `CopyAttributeOutText` / `CopyAttributeOutCSV` do.

use std::fmt::Debug;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use futures::sink::{Sink, SinkExt};
use futures::stream::StreamExt;
use pgwire::api::results::{FieldInfo, QueryResponse, Tag};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use pgwire::messages::data::DataRow;

use crate::error::SqlError;
use crate::rewrite::gate::{CopyFormat, CopyOptions, ForceQuote};

/// The allocation rows are written into (64 KiB: many rows per
/// allocation, one row's worth of memory at a time on the wire).
const ROW_BUFFER: usize = 64 * 1024;

/// A `COPY … TO STDOUT` ready to send: its options and the query's rows.
pub(crate) struct CopyOut {
    options: CopyOptions,
    /// Per result column: forced quoting (CSV).
    force: Vec<bool>,
    rows: QueryResponse,
}

impl Debug for CopyOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOut")
            .field("options", &self.options)
            .finish()
    }
}

impl CopyOut {
    /// `rows` must be encoded in binary format for `FORMAT binary`, in
    /// text format otherwise. A `FORCE_QUOTE` column that is not in the
    /// result is refused (42P10), as PostgreSQL refuses it.
    pub(crate) fn new(options: CopyOptions, rows: QueryResponse) -> Result<CopyOut, SqlError> {
        let names: Vec<&str> = rows.row_schema.iter().map(|f| f.name()).collect();
        let force = match &options.force_quote {
            ForceQuote::None => vec![false; names.len()],
            ForceQuote::All => vec![true; names.len()],
            ForceQuote::Columns(cols) => {
                if let Some(missing) = cols.iter().find(|c| !names.contains(&c.as_str())) {
                    return Err(SqlError::new(
                        "42P10",
                        format!("FORCE_QUOTE column \"{missing}\" not referenced by COPY"),
                    ));
                }
                names.iter().map(|n| cols.iter().any(|c| c == n)).collect()
            }
        };
        Ok(CopyOut {
            options,
            force,
            rows,
        })
    }

    /// Send CopyOutResponse, the rows as CopyData, CopyDone and `COPY n`.
    /// An error mid-stream (cancel, a limit, an execution error) is
    /// returned before CopyDone, as PostgreSQL reports it: the caller
    /// sends it as an ErrorResponse.
    pub(crate) async fn send<C>(mut self, client: &mut C) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = self.rows.row_schema.clone();
        let binary = self.options.format == CopyFormat::Binary;
        let format = i8::from(binary);
        let columns = fields.len();
        client
            .send(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
                format,
                columns as i16,
                vec![i16::from(binary); columns],
            )))
            .await?;
        // Rows are written one after the other into one allocation, split
        // off as each is sent, so that a row costs no allocation of its own.
        let mut out = BytesMut::with_capacity(ROW_BUFFER);
        if binary {
            out.put_slice(b"PGCOPY\n\xff\r\n\0");
            out.put_i32(0); // flags
            out.put_i32(0); // header extension length
        } else if self.options.header {
            self.header(&fields, &mut out);
        }
        // The binary signature travels with the first row (or the
        // trailer), as PostgreSQL sends it: drivers (psycopg) parse it off
        // the first message.
        if !binary && !out.is_empty() {
            client
                .feed(PgWireBackendMessage::CopyData(CopyData::new(
                    out.split().freeze(),
                )))
                .await?;
        }
        let mut sent = 0usize;
        while let Some(row) = self.rows.data_rows.next().await {
            let row = row?;
            self.row(&row, &mut out)?;
            client
                .feed(PgWireBackendMessage::CopyData(CopyData::new(
                    out.split().freeze(),
                )))
                .await?;
            sent += 1;
        }
        if binary {
            out.put_i16(-1);
            client
                .feed(PgWireBackendMessage::CopyData(CopyData::new(
                    out.split().freeze(),
                )))
                .await?;
        }
        client
            .feed(PgWireBackendMessage::CopyDone(CopyDone::new()))
            .await?;
        client
            .feed(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(sent).into(),
            ))
            .await?;
        Ok(())
    }

    /// The header line: column names, written as values are.
    fn header(&self, fields: &Arc<Vec<FieldInfo>>, out: &mut BytesMut) {
        let single = fields.len() == 1;
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                out.put_u8(self.options.delimiter);
            }
            match self.options.format {
                CopyFormat::Csv => {
                    csv_value(&self.options, f.name().as_bytes(), false, single, out)
                }
                _ => text_value(self.options.delimiter, f.name().as_bytes(), out),
            }
        }
        out.put_u8(b'\n');
    }

    /// One row in the statement's format.
    fn row(&self, row: &DataRow, out: &mut BytesMut) -> PgWireResult<()> {
        if self.options.format == CopyFormat::Binary {
            out.put_i16(row.field_count);
            out.put_slice(&row.data);
            return Ok(());
        }
        let single = row.field_count == 1;
        for (i, value) in Fields::new(&row.data).enumerate() {
            let value = value.map_err(|e| e.into_pgwire())?;
            if i > 0 {
                out.put_u8(self.options.delimiter);
            }
            match value {
                None => out.put_slice(self.options.null.as_bytes()),
                Some(v) if self.options.format == CopyFormat::Csv => {
                    let force = self.force.get(i).copied().unwrap_or(false);
                    csv_value(&self.options, v, force, single, out)
                }
                Some(v) => text_value(self.options.delimiter, v, out),
            }
        }
        out.put_u8(b'\n');
        Ok(())
    }
}

/// The fields of a DataRow's body: `int32 length` (-1: NULL) then bytes.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(data: &'a [u8]) -> Fields<'a> {
        Fields { rest: data }
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Option<&'a [u8]>, SqlError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let broken = || SqlError::new("XX000", "could not encode a result value");
        let Some((len, rest)) = self.rest.split_first_chunk::<4>() else {
            self.rest = &[];
            return Some(Err(broken()));
        };
        let len = i32::from_be_bytes(*len);
        if len < 0 {
            self.rest = rest;
            return Some(Ok(None));
        }
        let len = len as usize;
        if rest.len() < len {
            self.rest = &[];
            return Some(Err(broken()));
        }
        let (value, rest) = rest.split_at(len);
        self.rest = rest;
        Some(Ok(Some(value)))
    }
}

/// A value in COPY's text format (`CopyAttributeOutText`): backslash,
/// the delimiter and control characters escaped. Runs without one are
/// copied whole.
fn text_value(delimiter: u8, value: &[u8], out: &mut BytesMut) {
    let special =
        |b: u8| matches!(b, 0x08 | 0x0c | b'\n' | b'\r' | b'\t' | 0x0b | b'\\') || b == delimiter;
    let mut rest = value;
    while let Some(i) = rest.iter().position(|&b| special(b)) {
        out.put_slice(&rest[..i]);
        match rest[i] {
            0x08 => out.put_slice(b"\\b"),
            0x0c => out.put_slice(b"\\f"),
            b'\n' => out.put_slice(b"\\n"),
            b'\r' => out.put_slice(b"\\r"),
            b'\t' => out.put_slice(b"\\t"),
            0x0b => out.put_slice(b"\\v"),
            b => {
                // backslash or the delimiter
                out.put_u8(b'\\');
                out.put_u8(b);
            }
        }
        rest = &rest[i + 1..];
    }
    out.put_slice(rest);
}

/// A value in COPY's CSV format (`CopyAttributeOutCSV`): quoted when
/// forced, when it equals the NULL string, when it holds the delimiter,
/// the quote, a CR or LF, or when it is `\.` alone on its line; inside
/// quotes, quote and escape characters are escaped.
fn csv_value(o: &CopyOptions, value: &[u8], force: bool, single: bool, out: &mut BytesMut) {
    let quote = force
        || value == o.null.as_bytes()
        || (single && value == b"\\.")
        || value
            .iter()
            .any(|&b| b == o.delimiter || b == o.quote || b == b'\n' || b == b'\r');
    if !quote {
        out.put_slice(value);
        return;
    }
    out.put_u8(o.quote);
    for &b in value {
        if b == o.quote || b == o.escape {
            out.put_u8(o.escape);
        }
        out.put_u8(b);
    }
    out.put_u8(o.quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(format: CopyFormat) -> CopyOptions {
        let csv = format == CopyFormat::Csv;
        CopyOptions {
            format,
            delimiter: if csv { b',' } else { b'\t' },
            null: if csv { "" } else { "\\N" }.to_owned(),
            header: false,
            quote: b'"',
            escape: b'"',
            force_quote: ForceQuote::None,
        }
    }

    fn text(delimiter: u8, v: &str) -> String {
        let mut out = BytesMut::new();
        text_value(delimiter, v.as_bytes(), &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    fn csv(o: &CopyOptions, v: &str, force: bool) -> String {
        let mut out = BytesMut::new();
        csv_value(o, v.as_bytes(), force, false, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn text_format_escapes_as_postgresql() {
        assert_eq!(text(b'\t', "plain"), "plain");
        assert_eq!(text(b'\t', "a\tb"), "a\\tb");
        assert_eq!(text(b'\t', "line\nnext\r"), "line\\nnext\\r");
        assert_eq!(text(b'\t', "back\\slash"), "back\\\\slash");
        assert_eq!(text(b'|', "a|b"), "a\\|b");
        assert_eq!(text(b'|', "a\tb"), "a\\tb");
        assert_eq!(text(b'\t', "\u{8}\u{b}\u{c}"), "\\b\\v\\f");
        assert_eq!(text(b'\t', "\\N"), "\\\\N", "a value never reads as NULL");
    }

    #[test]
    fn csv_format_quotes_as_postgresql() {
        let o = options(CopyFormat::Csv);
        assert_eq!(csv(&o, "plain", false), "plain");
        assert_eq!(csv(&o, "a,b", false), "\"a,b\"");
        assert_eq!(csv(&o, "say \"hi\"", false), "\"say \"\"hi\"\"\"");
        assert_eq!(csv(&o, "two\nlines", false), "\"two\nlines\"");
        assert_eq!(csv(&o, "", false), "\"\"", "empty string is not NULL");
        assert_eq!(csv(&o, "x", true), "\"x\"");
        let mut e = options(CopyFormat::Csv);
        e.escape = b'\\';
        assert_eq!(csv(&e, "a\"b\\c", false), "\"a\\\"b\\\\c\"");
        let mut single = BytesMut::new();
        csv_value(&o, b"\\.", false, true, &mut single);
        assert_eq!(&single[..], b"\"\\.\"");
    }

    #[test]
    fn data_row_fields_are_read_with_nulls_and_refuse_truncation() {
        let mut data = BytesMut::new();
        data.put_i32(2);
        data.put_slice(b"ab");
        data.put_i32(-1);
        data.put_i32(0);
        let got: Vec<_> = Fields::new(&data).map(|f| f.unwrap()).collect();
        assert_eq!(got, vec![Some(&b"ab"[..]), None, Some(&b""[..])]);
        let mut short = BytesMut::new();
        short.put_i32(5);
        short.put_slice(b"ab");
        assert!(Fields::new(&short).next().unwrap().is_err());
    }
}
