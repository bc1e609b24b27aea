//! `COPY … TO STDOUT`: the one form of COPY lakeward serves. The source
//! (a query, or a table with an optional column list, which is the query
//! `SELECT cols FROM table`) goes through the pipeline like any query;
//! the options say how its rows are written. `COPY … FROM`, and `COPY …
//! TO` a file or a program, stay refused.

use datafusion::sql::sqlparser::ast::{
    self, CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Ident,
    ObjectName, Query, SelectItem, SetExpr, Statement, TableFactor,
};

use super::{StatementKind, normalize};
use crate::error::SqlError;

/// The format of a `COPY … TO STDOUT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Csv,
    Binary,
}

/// Which columns `FORCE_QUOTE` names (CSV only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ForceQuote {
    #[default]
    None,
    /// `FORCE_QUOTE *`.
    All,
    /// `FORCE_QUOTE (a, b)`: result column names.
    Columns(Vec<String>),
}

/// How the rows of a `COPY … TO STDOUT` are written, with PostgreSQL's
/// defaults per format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    pub format: CopyFormat,
    /// One byte: `\t` for text, `,` for CSV.
    pub delimiter: u8,
    /// `\N` for text, the empty string for CSV.
    pub null: String,
    pub header: bool,
    /// CSV only: `"` by default.
    pub quote: u8,
    /// CSV only: the quote character by default.
    pub escape: u8,
    pub force_quote: ForceQuote,
}

/// The options as given, before defaults are applied and checked.
#[derive(Default)]
struct Given {
    format: Option<CopyFormat>,
    delimiter: Option<char>,
    null: Option<String>,
    header: Option<bool>,
    quote: Option<char>,
    escape: Option<char>,
    force_quote: Option<ForceQuote>,
}

/// Sort a `COPY` statement: `COPY (query) TO STDOUT` and `COPY table
/// [(cols)] TO STDOUT` become [`StatementKind::Copy`]; anything else is
/// refused as PostgreSQL would refuse a user without file privileges.
pub(super) fn classify_copy(stmt: Statement) -> Result<StatementKind, SqlError> {
    let Statement::Copy {
        source,
        to,
        target,
        options,
        legacy_options,
        values: _,
    } = stmt
    else {
        return Err(SqlError::internal());
    };
    if !to {
        return Err(SqlError::new(
            "42501",
            "permission denied: lakeward is read-only",
        ));
    }
    if !matches!(target, CopyTarget::Stdout) {
        return Err(SqlError::new(
            "42501",
            "permission denied: COPY to a file or program is not allowed; use COPY … TO STDOUT (psql: \\copy)",
        ));
    }
    let options = copy_options(options, legacy_options)?;
    let query = match source {
        CopySource::Query(q) => q,
        CopySource::Table {
            table_name,
            columns,
        } => Box::new(select_from(table_name, columns)?),
    };
    Ok(StatementKind::Copy {
        query: Box::new(Statement::Query(query)),
        options,
    })
}

/// `SELECT cols FROM table` (`*` for no column list): a constant query
/// parsed once, with the statement's own table name and columns put in.
fn select_from(table: ObjectName, columns: Vec<Ident>) -> Result<Query, SqlError> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let mut parsed = Parser::parse_sql(&PostgreSqlDialect {}, "SELECT * FROM copy_source")
        .map_err(|_| SqlError::internal())?;
    let Some(Statement::Query(mut query)) = parsed.pop() else {
        return Err(SqlError::internal());
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(SqlError::internal());
    };
    match select.from.first_mut().map(|t| &mut t.relation) {
        Some(TableFactor::Table { name, .. }) => *name = table,
        _ => return Err(SqlError::internal()),
    }
    if !columns.is_empty() {
        select.projection = columns
            .into_iter()
            .map(|c| SelectItem::UnnamedExpr(ast::Expr::Identifier(c)))
            .collect();
    }
    Ok(*query)
}

fn copy_options(
    options: Vec<CopyOption>,
    legacy: Vec<CopyLegacyOption>,
) -> Result<CopyOptions, SqlError> {
    let mut g = Given::default();
    fn once<T>(slot: &mut Option<T>, v: T) -> Result<(), SqlError> {
        if slot.is_some() {
            return Err(SqlError::new("42601", "conflicting or redundant options"));
        }
        *slot = Some(v);
        Ok(())
    }
    for o in options {
        match o {
            CopyOption::Format(name) => {
                let f = match name.value.to_lowercase().as_str() {
                    "text" => CopyFormat::Text,
                    "csv" => CopyFormat::Csv,
                    "binary" => CopyFormat::Binary,
                    _ => return Err(SqlError::new("22023", "COPY format not recognized")),
                };
                once(&mut g.format, f)?
            }
            CopyOption::Delimiter(c) => once(&mut g.delimiter, c)?,
            CopyOption::Null(s) => once(&mut g.null, s)?,
            CopyOption::Header(b) => once(&mut g.header, b)?,
            CopyOption::Quote(c) => once(&mut g.quote, c)?,
            CopyOption::Escape(c) => once(&mut g.escape, c)?,
            CopyOption::ForceQuote(cols) => once(&mut g.force_quote, force_quote(cols))?,
            CopyOption::Encoding(e) => encoding(&e)?,
            CopyOption::Freeze(_) => {
                return Err(SqlError::new(
                    "0A000",
                    "COPY FREEZE cannot be used with COPY TO",
                ));
            }
            CopyOption::ForceNotNull(_) | CopyOption::ForceNull(_) => {
                return Err(SqlError::new(
                    "0A000",
                    "COPY FORCE_NOT_NULL and FORCE_NULL apply to COPY FROM only",
                ));
            }
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Binary => once(&mut g.format, CopyFormat::Binary)?,
            CopyLegacyOption::Delimiter(c) => once(&mut g.delimiter, c)?,
            CopyLegacyOption::Null(s) => once(&mut g.null, s)?,
            CopyLegacyOption::Header => once(&mut g.header, true)?,
            CopyLegacyOption::Csv(csv) => {
                once(&mut g.format, CopyFormat::Csv)?;
                for c in csv {
                    match c {
                        CopyLegacyCsvOption::Header => once(&mut g.header, true)?,
                        CopyLegacyCsvOption::Quote(q) => once(&mut g.quote, q)?,
                        CopyLegacyCsvOption::Escape(e) => once(&mut g.escape, e)?,
                        CopyLegacyCsvOption::ForceQuote(cols) => {
                            once(&mut g.force_quote, force_quote(cols))?
                        }
                        CopyLegacyCsvOption::ForceNotNull(_) => {
                            return Err(SqlError::new(
                                "0A000",
                                "COPY FORCE NOT NULL applies to COPY FROM only",
                            ));
                        }
                    }
                }
            }
            _ => {
                return Err(SqlError::new(
                    "0A000",
                    "COPY option is not supported by lakeward",
                ));
            }
        }
    }
    resolve(g)
}

/// `FORCE_QUOTE *` parses as a column named `*`.
fn force_quote(cols: Vec<Ident>) -> ForceQuote {
    if cols.len() == 1 && cols[0].value == "*" && cols[0].quote_style.is_none() {
        ForceQuote::All
    } else {
        ForceQuote::Columns(cols.iter().map(normalize).collect())
    }
}

/// lakeward sends UTF-8 only (`client_encoding` is UTF8).
fn encoding(name: &str) -> Result<(), SqlError> {
    let n = name.to_ascii_lowercase().replace(['-', '_'], "");
    if n == "utf8" || n == "unicode" {
        Ok(())
    } else {
        Err(SqlError::new(
            "0A000",
            "COPY ENCODING other than UTF8 is not supported by lakeward",
        ))
    }
}

/// PostgreSQL's defaults and checks (`ProcessCopyOptions`).
fn resolve(g: Given) -> Result<CopyOptions, SqlError> {
    let format = g.format.unwrap_or(CopyFormat::Text);
    let csv = format == CopyFormat::Csv;
    if format == CopyFormat::Binary {
        let given = [
            (g.delimiter.is_some(), "DELIMITER"),
            (g.null.is_some(), "NULL"),
            (g.header.is_some(), "HEADER"),
        ];
        if let Some((_, name)) = given.iter().find(|(g, _)| *g) {
            return Err(SqlError::new(
                "42601",
                format!("cannot specify {name} in BINARY mode"),
            ));
        }
    }
    if !csv {
        let csv_only = [
            (g.quote.is_some(), "quote"),
            (g.escape.is_some(), "escape"),
            (g.force_quote.is_some(), "force quote"),
        ];
        if let Some((_, name)) = csv_only.iter().find(|(g, _)| *g) {
            return Err(SqlError::new(
                "0A000",
                format!("COPY {name} available only in CSV mode"),
            ));
        }
    }
    let byte = |c: char, what: &str| -> Result<u8, SqlError> {
        u8::try_from(u32::from(c))
            .ok()
            .filter(|b| b.is_ascii())
            .ok_or_else(|| {
                SqlError::new(
                    "0A000",
                    format!("COPY {what} must be a single one-byte character"),
                )
            })
    };
    let delimiter = byte(
        g.delimiter.unwrap_or(if csv { ',' } else { '\t' }),
        "delimiter",
    )?;
    if matches!(delimiter, b'\r' | b'\n') {
        return Err(SqlError::new(
            "22023",
            "COPY delimiter cannot be newline or carriage return",
        ));
    }
    let null = g
        .null
        .unwrap_or_else(|| if csv { "" } else { "\\N" }.to_owned());
    if null.contains(['\r', '\n']) {
        return Err(SqlError::new(
            "22023",
            "COPY null representation cannot use newline or carriage return",
        ));
    }
    if !csv && (delimiter == b'\\' || delimiter.is_ascii_alphanumeric() || delimiter == b'.') {
        return Err(SqlError::new(
            "22023",
            "COPY delimiter cannot be this character in text format",
        ));
    }
    let quote = byte(g.quote.unwrap_or('"'), "quote")?;
    let escape = match g.escape {
        Some(e) => byte(e, "escape")?,
        None => quote,
    };
    if csv && delimiter == quote {
        return Err(SqlError::new(
            "22023",
            "COPY delimiter and quote must be different",
        ));
    }
    if csv && null.as_bytes().contains(&delimiter) {
        return Err(SqlError::new(
            "22023",
            "COPY delimiter must not appear in the NULL specification",
        ));
    }
    Ok(CopyOptions {
        format,
        delimiter,
        null,
        header: g.header.unwrap_or(false),
        quote,
        escape,
        force_quote: g.force_quote.unwrap_or_default(),
    })
}
