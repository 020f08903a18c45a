//! Streaming CSV / NDJSON encoders for user exports.
//!
//! [`ExportEncoder`] turns [`User`]s into the bytes of an export file one user at a time, without
//! any I/O: the worker [`push`](ExportEncoder::push)es users, periodically
//! [`take`](ExportEncoder::take)s the bytes that are ready and uploads them, and finally calls
//! [`finish`](ExportEncoder::finish). Concatenating every `take()` and the `finish()` result gives
//! the whole file.
//!
//! Each user is rendered in the spec's view ([`User::view`]) and the spec's fields (RFC 6901
//! pointers) are evaluated against that JSON document.
//!
//! # CSV
//!
//! Authgear's dialect: `,` separator, LF line endings, no BOM, the header row (the spec's
//! [`headers`](ExportSpec::headers)) is always written. A field is quoted only when it contains
//! `,`, `"`, CR or LF, starts with a (Unicode) whitespace character, or is exactly `\.`; inside
//! quotes `"` is doubled (Go's `encoding/csv` rule). A record made of a single empty field is
//! written as `""` so that it does not read back as a blank line. Cells are rendered by
//! [`render_cell`]: strings as is, numbers in decimal without exponent, booleans as `true` /
//! `false`, null or unresolved pointers as an empty cell, arrays and objects as compact,
//! HTML-escaped JSON.
//!
//! **Formula-injection guard** ([`ExportSpec::formula_guard`], on by default): a string cell (header
//! cells included) whose first character is one of `= + - @ \t \r` is prefixed with `'`, as in
//! Descope's `csv.ts`, with two exemptions: cells rendered from JSON numbers or booleans are never
//! prefixed (`-5` stays `-5`), and a `+` followed only by digits (an E.164 phone number such as
//! `+15551234567`) is left alone — Descope prefixes those too, which corrupts every phone number.
//!
//! **Quote all** ([`ExportSpec::quote_all`], Auth0 style): every non-empty cell that did not come
//! from a JSON number or boolean is double-quoted. Empty cells stay empty.
//!
//! # NDJSON
//!
//! One JSON object per line, each ending with `\n`; zero users give zero bytes. Without fields the
//! line is the whole view; with fields it is `{header: value, …}` in field order, leaving out
//! fields whose pointer does not resolve. In the Authgear view `<`, `>`, `&`, U+2028 and U+2029 are
//! escaped as `\u003c`, `\u003e`, `\u0026`, `\u2028`, `\u2029`, like Go's `json.Marshal`.
//!
//! # Gzip
//!
//! With [`ExportSpec::gzip`] the output is one gzip member (level [`DEFAULT_GZIP_LEVEL`] unless
//! built with [`ExportEncoder::with_gzip_level`]); `take()` returns the compressed bytes produced
//! so far and `finish()` flushes the rest and writes the trailer. An export with no rows is still a
//! valid gzip file (of the CSV header, or of nothing).

use std::borrow::Cow;
use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;
use json::JsonOut;
use serde::Serialize as _;
use serde_json::{Number, Value};
use userexport_domain::user::{AuthgearPointer, UserParts, ViewValue, with_rfc3339_nano};
use userexport_domain::{Code, ErrorCode, ExportFormat, ExportSpec, JsonPointer, User, UserView};

/// Gzip compression level used by [`ExportEncoder::new`].
pub const DEFAULT_GZIP_LEVEL: u32 = 6;

/// Why encoding failed. Both cases are internal failures ([`Code::ExportFailed`]).
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The gzip compressor reported an error.
    #[error("gzip compression failed: {0}")]
    Compress(std::io::Error),
    /// A value could not be serialized as JSON.
    #[error("JSON serialization failed: {0}")]
    Json(#[from] serde_json::Error),
}

impl ErrorCode for EncodeError {
    fn error_code(&self) -> Code {
        Code::ExportFailed
    }
}

/// Where encoded bytes go: straight into a buffer, or through a gzip compressor into one.
enum Sink {
    Plain(Vec<u8>),
    Gzip(GzEncoder<Vec<u8>>),
}

impl Sink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        match self {
            Sink::Plain(out) => {
                out.extend_from_slice(bytes);
                Ok(())
            }
            Sink::Gzip(gz) => gz.write_all(bytes).map_err(EncodeError::Compress),
        }
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Sink::Plain(out) => out,
            Sink::Gzip(gz) => gz.get_mut(),
        }
    }
}

/// One exported column (CSV) or key (NDJSON), precomputed from the spec.
struct Column {
    pointer: JsonPointer,
    /// The pointer compiled for the Authgear view, evaluated without building the record.
    authgear: AuthgearPointer,
    /// NDJSON: the header as a JSON string followed by `:` (HTML-escaped in the Authgear view).
    json_key: Vec<u8>,
}

/// Cell options of a CSV export.
#[derive(Clone, Copy)]
struct CsvOptions {
    guard: bool,
    quote_all: bool,
}

/// Incremental encoder of one export file. See the [crate docs](crate) for the output rules.
pub struct ExportEncoder {
    format: ExportFormat,
    view: UserView,
    columns: Vec<Column>,
    csv: CsvOptions,
    /// NDJSON: HTML-escape the serialized lines (Authgear view).
    html_escape: bool,
    /// Evaluate pointers on the user directly (Authgear view) instead of on its built view document.
    direct: bool,
    sink: Sink,
    /// Bytes not yet handed to the sink: the CSV header of a gzip stream until the first push.
    pending: Vec<u8>,
    /// The record being encoded (gzip only: plain output is encoded in place).
    line: Vec<u8>,
    rows: u64,
}

impl std::fmt::Debug for ExportEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportEncoder")
            .field("format", &self.format)
            .field("view", &self.view)
            .field("columns", &self.columns.len())
            .field("gzip", &matches!(self.sink, Sink::Gzip(_)))
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl ExportEncoder {
    /// An encoder for `spec`; gzip (if the spec asks for it) uses [`DEFAULT_GZIP_LEVEL`]. For CSV the
    /// header row is written at once.
    pub fn new(spec: &ExportSpec) -> Self {
        Self::with_gzip_level(spec, DEFAULT_GZIP_LEVEL)
    }

    /// Like [`new`](Self::new) with gzip level `level` (0 = store … 9 = best; larger values are
    /// treated as 9). Ignored when the spec does not ask for gzip.
    pub fn with_gzip_level(spec: &ExportSpec, level: u32) -> Self {
        let html_escape = spec.view() == UserView::Authgear;
        let columns = spec
            .fields()
            .iter()
            .map(|f| {
                let mut json_key = Vec::new();
                // A string always serializes.
                let _ = f.header().serialize(&mut JsonOut::new(&mut json_key, html_escape, false));
                json_key.push(b':');
                Column { pointer: f.pointer().clone(), authgear: AuthgearPointer::new(f.pointer()), json_key }
            })
            .collect();
        let csv = CsvOptions { guard: spec.formula_guard(), quote_all: spec.quote_all() };
        let mut pending = Vec::new();
        if spec.format() == ExportFormat::Csv {
            let headers = spec.headers();
            for (i, h) in headers.iter().enumerate() {
                if i > 0 {
                    pending.push(b',');
                }
                write_text(&mut pending, h, csv);
            }
            end_record(&mut pending, 0, headers.len());
        }
        let sink = if spec.gzip() {
            Sink::Gzip(GzEncoder::new(Vec::new(), Compression::new(level.min(9))))
        } else {
            // Writing into a plain buffer cannot fail: emit the header right away.
            Sink::Plain(std::mem::take(&mut pending))
        };
        Self {
            format: spec.format(),
            view: spec.view(),
            columns,
            csv,
            html_escape,
            direct: html_escape,
            sink,
            pending,
            line: Vec::new(),
            rows: 0,
        }
    }

    /// The same encoder evaluating every pointer on the built view document (the reference the direct
    /// Authgear path is checked against).
    #[cfg(test)]
    fn via_documents(mut self) -> Self {
        self.direct = false;
        self
    }

    /// The parts of a user this encoder reads: [`push`](Self::push) gives the same bytes for a user
    /// whose other parts are empty ([`UserParts::project`]), so a reader may skip them.
    pub fn user_parts(&self) -> UserParts {
        match (self.direct, self.format) {
            (false, _) => UserParts::ALL,
            (true, ExportFormat::Ndjson) if self.columns.is_empty() => UserParts::AUTHGEAR_RECORD,
            (true, _) => self.columns.iter().fold(UserParts::NONE, |acc, c| acc.union(c.authgear.parts())),
        }
    }

    /// Encodes one user as the next row / line.
    pub fn push(&mut self, user: &User) -> Result<(), EncodeError> {
        self.flush_pending()?;
        let Self { format, view, columns, csv, html_escape, direct, sink, line, .. } = self;
        let gzip = matches!(sink, Sink::Gzip(_));
        let out = match sink {
            Sink::Plain(out) => out,
            Sink::Gzip(_) => {
                line.clear();
                &mut *line
            }
        };
        let start = out.len();
        let encoded = if *direct {
            let get = |c: &Column| user.authgear_get(&c.authgear);
            match format {
                ExportFormat::Csv => encode_csv(out, columns, *csv, get),
                ExportFormat::Ndjson => encode_ndjson(out, columns, *html_escape, ViewValue::Record(user), get),
            }
        } else {
            let doc = user.view(*view);
            let get = |c: &Column| c.pointer.resolve(&doc).map_or(ViewValue::Missing, ViewValue::Json);
            match format {
                ExportFormat::Csv => encode_csv(out, columns, *csv, get),
                ExportFormat::Ndjson => encode_ndjson(out, columns, *html_escape, ViewValue::Json(&doc), get),
            }
        };
        if let Err(e) = encoded {
            out.truncate(start);
            return Err(e);
        }
        if gzip {
            self.sink.write(&self.line)?;
        }
        self.rows += 1;
        Ok(())
    }

    /// Number of output bytes ready to be taken (compressed bytes when gzipping).
    pub fn buffered_len(&self) -> usize {
        match &self.sink {
            Sink::Plain(out) => out.len(),
            Sink::Gzip(gz) => gz.get_ref().len(),
        }
    }

    /// Drains the output bytes ready so far.
    pub fn take(&mut self) -> Vec<u8> {
        let out = self.sink.output();
        // Keep the capacity for the next chunk: steady state is one allocation per take.
        let capacity = out.capacity();
        std::mem::replace(out, Vec::with_capacity(capacity))
    }

    /// Like [`take`](Self::take), continuing in `spare` (cleared first) instead of a new buffer, so
    /// that a caller recycling its buffers allocates nothing in steady state.
    pub fn take_reusing(&mut self, mut spare: Vec<u8>) -> Vec<u8> {
        spare.clear();
        let out = self.sink.output();
        if spare.capacity() < out.capacity() {
            spare.reserve_exact(out.capacity());
        }
        std::mem::replace(out, spare)
    }

    /// Ends the file and returns the bytes not taken yet, including the gzip trailer.
    pub fn finish(mut self) -> Result<Vec<u8>, EncodeError> {
        self.flush_pending()?;
        match self.sink {
            Sink::Plain(out) => Ok(out),
            Sink::Gzip(gz) => gz.finish().map_err(EncodeError::Compress),
        }
    }

    /// Number of users pushed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn flush_pending(&mut self) -> Result<(), EncodeError> {
        if !self.pending.is_empty() {
            self.sink.write(&self.pending)?;
            self.pending = Vec::new();
        }
        Ok(())
    }
}

/// Appends one CSV record of `columns` to `out`, evaluating each column with `get`.
fn encode_csv<'u>(
    out: &mut Vec<u8>,
    columns: &[Column],
    csv: CsvOptions,
    get: impl Fn(&Column) -> ViewValue<'u>,
) -> Result<(), EncodeError> {
    let start = out.len();
    for (i, col) in columns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match get(col) {
            ViewValue::Missing => {}
            ViewValue::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
            ViewValue::Int(n) => write_int(out, n),
            ViewValue::Str(s) => write_text(out, s, csv),
            ViewValue::Time(t) => with_rfc3339_nano(t, |s| write_text(out, s, csv)),
            ViewValue::Json(v) => write_value_cell(out, v, csv)?,
            ViewValue::Owned(v) => write_value_cell(out, &v, csv)?,
            composite => write_json_cell(out, &composite, csv)?,
        }
    }
    end_record(out, start, columns.len());
    Ok(())
}

/// Appends one NDJSON line to `out`: `whole` without columns, else the columns evaluated with `get`.
fn encode_ndjson<'u>(
    out: &mut Vec<u8>,
    columns: &[Column],
    html_escape: bool,
    whole: ViewValue<'_>,
    get: impl Fn(&Column) -> ViewValue<'u>,
) -> Result<(), EncodeError> {
    if columns.is_empty() {
        write_json(out, &whole, html_escape)?;
    } else {
        out.push(b'{');
        let mut first = true;
        for col in columns {
            let v = get(col);
            if v != ViewValue::Missing {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(&col.json_key);
                write_json(out, &v, html_escape)?;
            }
        }
        out.push(b'}');
    }
    out.push(b'\n');
    Ok(())
}

/// Writes the CSV cell of a JSON value: null → empty, booleans, numbers, strings, else JSON text.
fn write_value_cell(out: &mut Vec<u8>, v: &Value, csv: CsvOptions) -> Result<(), EncodeError> {
    match v {
        Value::Null => {}
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_text(out, s, csv),
        composite => write_json_cell(out, &ViewValue::Json(composite), csv)?,
    }
    Ok(())
}

/// Writes an array or object as a CSV cell: compact, HTML-escaped JSON, quoted when needed.
///
/// The JSON is serialized straight into `out` inside quotes by [`JsonOut`], which writes every `"`
/// doubled as it goes and knows whether it wrote a `"` or a `,`; the opening quote is taken out
/// again when the cell turns out not to need quoting (`[]`, `[1]`, `{}`), so that the cell is
/// written in one pass instead of serialized, scanned and copied.
fn write_json_cell(out: &mut Vec<u8>, v: &ViewValue<'_>, csv: CsvOptions) -> Result<(), EncodeError> {
    let start = out.len();
    out.push(b'"');
    let mut json = JsonOut::new(out, true, true);
    json.view_value(v)?;
    // Compact JSON starts with `[` or `{`: never a formula, never leading whitespace. It has no raw
    // CR or LF (they are escaped in strings), so `,` and `"` are what force quoting.
    if csv.quote_all || json.special() {
        out.push(b'"');
    } else {
        out.remove(start);
    }
    Ok(())
}

/// Appends `bytes` with every `"` doubled, as inside a quoted CSV field.
fn push_doubling_quotes(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut rest = bytes;
    while let Some(pos) = rest.iter().position(|&b| b == b'"') {
        out.extend_from_slice(&rest[..=pos]);
        out.push(b'"');
        rest = &rest[pos + 1..];
    }
    out.extend_from_slice(rest);
}

/// Writes an integer in decimal.
fn write_int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Renders a value found at a pointer as an Authgear CSV cell, before quoting and the formula
/// guard: string as is; number in decimal without exponent; `true` / `false`; null or missing →
/// empty; array / object → compact JSON with `<`, `>`, `&`, U+2028, U+2029 escaped as `\uXXXX`.
pub fn render_cell(v: Option<&Value>) -> Cow<'_, str> {
    match v {
        None | Some(Value::Null) => Cow::Borrowed(""),
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Bool(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Some(Value::Number(n)) => {
            let mut out = Vec::new();
            write_number(&mut out, n);
            Cow::Owned(String::from_utf8_lossy(&out).into_owned())
        }
        Some(v) => {
            let mut out = Vec::new();
            // A `Value` always serializes (its map keys are strings).
            let _ = v.serialize(&mut JsonOut::new(&mut out, true, false));
            // Escaping replaces whole characters with ASCII, so the bytes stay valid UTF-8.
            Cow::Owned(String::from_utf8_lossy(&out).into_owned())
        }
    }
}

/// Writes a JSON number in decimal without exponent: integers exactly, floats in their shortest
/// round-trip form (Rust's `Display` for `f64` never uses an exponent: `1e21` → `1000000000000000000000`).
fn write_number(out: &mut Vec<u8>, n: &Number) {
    // Writing into a Vec cannot fail.
    let _ = if let Some(i) = n.as_i64() {
        write!(out, "{i}")
    } else if let Some(u) = n.as_u64() {
        write!(out, "{u}")
    } else if let Some(f) = n.as_f64() {
        write!(out, "{f}")
    } else {
        Ok(())
    };
}

/// Serializes `v` as compact JSON onto `out`, HTML-escaped if asked.
fn write_json(out: &mut Vec<u8>, v: &ViewValue<'_>, html_escape: bool) -> Result<(), EncodeError> {
    JsonOut::new(out, html_escape, false).view_value(v)?;
    Ok(())
}

/// Whether a field contains a byte that forces quoting (`,` `"` CR LF). Eight bytes at a time: most
/// cells are short and need no quoting, so the whole scan is the common case.
fn has_special(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const fn splat(b: u8) -> u64 {
        u64::from_ne_bytes([b; 8])
    }
    // Non-zero exactly when some byte of `x` is zero.
    const fn zero_byte(x: u64) -> u64 {
        x.wrapping_sub(ONES) & !x & HIGHS
    }
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let x = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
        let hit = zero_byte(x ^ splat(b','))
            | zero_byte(x ^ splat(b'"'))
            | zero_byte(x ^ splat(b'\r'))
            | zero_byte(x ^ splat(b'\n'));
        if hit != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
}

/// Whether the formula guard prefixes `s`: it starts with `= + - @ \t \r`, unless it is a `+`
/// followed only by digits (a phone number).
fn is_formula(s: &str) -> bool {
    match s.as_bytes() {
        [b'+', rest @ ..] => rest.is_empty() || !rest.iter().all(u8::is_ascii_digit),
        [b'=' | b'-' | b'@' | b'\t' | b'\r', ..] => true,
        _ => false,
    }
}

/// Writes a string cell: formula guard, then Go's `encoding/csv` quoting (or quote-all).
fn write_text(line: &mut Vec<u8>, s: &str, opts: CsvOptions) {
    let prefix = opts.guard && is_formula(s);
    let quote = (opts.quote_all && !s.is_empty())
        || has_special(s.as_bytes())
        // With the `'` prefix the field starts with `'`: no leading whitespace, never `\.`.
        || (!prefix && (s == "\\." || s.chars().next().is_some_and(char::is_whitespace)));
    write_field(line, s.as_bytes(), prefix, quote);
}

/// Writes one field, optionally prefixed with `'` and/or quoted with `"` doubled.
fn write_field(line: &mut Vec<u8>, bytes: &[u8], prefix: bool, quote: bool) {
    if quote {
        line.push(b'"');
    }
    if prefix {
        line.push(b'\'');
    }
    if quote {
        push_doubling_quotes(line, bytes);
        line.push(b'"');
    } else {
        line.extend_from_slice(bytes);
    }
}

/// Ends the CSV record of `fields` fields that starts at `start` in `line`. A lone empty field is
/// written as `""`, else the record would read back as a blank line.
fn end_record(line: &mut Vec<u8>, start: usize, fields: usize) {
    if fields == 1 && line.len() == start {
        line.extend_from_slice(b"\"\"");
    }
    line.push(b'\n');
}

mod json;
#[cfg(test)]
mod tests;
