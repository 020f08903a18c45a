//! What to export: [`ExportFormat`], fields, filters and view, bundled in an always-valid [`ExportSpec`].

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::{Code, ErrorCode};
use crate::filter::UserFilter;
use crate::pointer::JsonPointer;
use crate::user::{AUTH0_DEFAULT_FIELDS, AUTHGEAR_DEFAULT_POINTERS, DESCOPE_DEFAULT_FIELDS, UserView};

/// Output file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Ndjson,
}

impl ExportFormat {
    /// `csv` or `ndjson`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Ndjson => "ndjson",
        }
    }

    /// File extension without gzip.
    pub fn extension(self) -> &'static str {
        self.as_str()
    }

    /// MIME type of the uncompressed file.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Csv => "text/csv; charset=utf-8",
            Self::Ndjson => "application/x-ndjson",
        }
    }
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "csv" => Ok(Self::Csv),
            "ndjson" => Ok(Self::Ndjson),
            _ => Err(format!("unknown format `{s}`; expected csv or ndjson")),
        }
    }
}

impl std::fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One exported column (CSV) or key (NDJSON with fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportField {
    pointer: JsonPointer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

impl ExportField {
    /// A field with an optional explicit header name.
    pub fn new(pointer: JsonPointer, name: Option<String>) -> Self {
        Self { pointer, name }
    }

    /// The pointer evaluated against the user view.
    pub fn pointer(&self) -> &JsonPointer {
        &self.pointer
    }

    /// The explicit header name, if one was given.
    pub fn explicit_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The effective header: the explicit name, else the pointer's tokens joined by `.`.
    pub fn header(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.pointer.header_name())
    }
}

/// Why an export specification was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// Two fields share a header name; carries all names in order (as Authgear's `info.field_names`).
    #[error("field names are not unique: {}", .0.join(", "))]
    NonUniqueFieldNames(Vec<String>),
    /// More fields than allowed.
    #[error("too many fields: {got} (at most {max})")]
    TooManyFields {
        /// The limit.
        max: usize,
        /// What was sent.
        got: usize,
    },
    /// An explicit header name is empty.
    #[error("field {index} has an empty name")]
    EmptyFieldName {
        /// Index of the field.
        index: usize,
    },
    /// A filter list is too long.
    #[error("filter `{0}` has more than {max} values", max = crate::filter::MAX_FILTER_VALUES)]
    FilterTooLarge(&'static str),
    /// `limit` is zero.
    #[error("limit must be at least 1")]
    ZeroLimit,
}

impl ErrorCode for SpecError {
    fn error_code(&self) -> Code {
        match self {
            SpecError::NonUniqueFieldNames(_) => Code::NonUniqueFieldNames,
            _ => Code::InvalidRequestBody,
        }
    }
}

/// The most fields one export may name.
pub const MAX_FIELDS: usize = 500;

/// A complete, valid description of one export. Built only through [`ExportSpec::builder`] (or by
/// deserializing a stored spec, which re-validates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SpecRepr", into = "SpecRepr")]
pub struct ExportSpec {
    format: ExportFormat,
    view: UserView,
    fields: Vec<ExportField>,
    fields_given: bool,
    filter: UserFilter,
    gzip: bool,
    formula_guard: bool,
    quote_all: bool,
    limit: Option<u64>,
}

/// Serialized form of [`ExportSpec`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecRepr {
    format: ExportFormat,
    view: UserView,
    #[serde(default)]
    fields: Vec<ExportField>,
    #[serde(default)]
    filter: UserFilter,
    #[serde(default)]
    gzip: bool,
    #[serde(default = "yes")]
    formula_guard: bool,
    #[serde(default)]
    quote_all: bool,
    #[serde(default)]
    limit: Option<u64>,
}

fn yes() -> bool {
    true
}

impl TryFrom<SpecRepr> for ExportSpec {
    type Error = SpecError;
    fn try_from(r: SpecRepr) -> Result<Self, SpecError> {
        let mut b = ExportSpec::builder(r.format)
            .view(r.view)
            .filter(r.filter)
            .gzip(r.gzip)
            .formula_guard(r.formula_guard)
            .quote_all(r.quote_all);
        if let Some(l) = r.limit {
            b = b.limit(l);
        }
        for f in r.fields {
            b = b.field(f.pointer, f.name);
        }
        b.build()
    }
}

impl From<ExportSpec> for SpecRepr {
    fn from(s: ExportSpec) -> Self {
        SpecRepr {
            format: s.format,
            view: s.view,
            fields: if s.fields_given { s.fields } else { Vec::new() },
            filter: s.filter,
            gzip: s.gzip,
            formula_guard: s.formula_guard,
            quote_all: s.quote_all,
            limit: s.limit,
        }
    }
}

/// Builder for [`ExportSpec`]; `build` validates.
#[derive(Debug, Clone)]
pub struct ExportSpecBuilder {
    format: ExportFormat,
    view: UserView,
    fields: Vec<ExportField>,
    filter: UserFilter,
    gzip: bool,
    formula_guard: bool,
    quote_all: bool,
    limit: Option<u64>,
}

impl ExportSpec {
    /// Starts a spec for `format` with the Authgear view, no fields (defaults), no filter, no gzip and
    /// the formula guard on.
    pub fn builder(format: ExportFormat) -> ExportSpecBuilder {
        ExportSpecBuilder {
            format,
            view: UserView::Authgear,
            fields: Vec::new(),
            filter: UserFilter::default(),
            gzip: false,
            formula_guard: true,
            quote_all: false,
            limit: None,
        }
    }

    /// Output format.
    pub fn format(&self) -> ExportFormat {
        self.format
    }
    /// The user view pointers are evaluated against.
    pub fn view(&self) -> UserView {
        self.view
    }
    /// Effective fields (defaults applied for CSV). Empty for NDJSON without fields: the whole record.
    pub fn fields(&self) -> &[ExportField] {
        &self.fields
    }
    /// Whether fields were given explicitly.
    pub fn fields_given(&self) -> bool {
        self.fields_given
    }
    /// Effective header names, in order.
    pub fn headers(&self) -> Vec<String> {
        self.fields.iter().map(ExportField::header).collect()
    }
    /// User filter.
    pub fn filter(&self) -> &UserFilter {
        &self.filter
    }
    /// Gzip the output file.
    pub fn gzip(&self) -> bool {
        self.gzip
    }
    /// Prefix CSV cells starting with `= + - @ \t \r` with `'`.
    pub fn formula_guard(&self) -> bool {
        self.formula_guard
    }
    /// Quote every CSV string cell (Auth0 style).
    pub fn quote_all(&self) -> bool {
        self.quote_all
    }
    /// Most users to export.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }
    /// File extension, e.g. `csv.gz`.
    pub fn file_extension(&self) -> String {
        if self.gzip { format!("{}.gz", self.format.extension()) } else { self.format.extension().to_owned() }
    }
    /// Content type of the stored object.
    pub fn content_type(&self) -> &'static str {
        if self.gzip { "application/gzip" } else { self.format.content_type() }
    }
}

impl ExportSpecBuilder {
    /// Sets the view.
    pub fn view(mut self, view: UserView) -> Self {
        self.view = view;
        self
    }
    /// Appends a field.
    pub fn field(mut self, pointer: JsonPointer, name: Option<String>) -> Self {
        self.fields.push(ExportField { pointer, name });
        self
    }
    /// Replaces the filter.
    pub fn filter(mut self, filter: UserFilter) -> Self {
        self.filter = filter;
        self
    }
    /// Gzip on/off.
    pub fn gzip(mut self, on: bool) -> Self {
        self.gzip = on;
        self
    }
    /// Formula guard on/off.
    pub fn formula_guard(mut self, on: bool) -> Self {
        self.formula_guard = on;
        self
    }
    /// Quote every string cell.
    pub fn quote_all(mut self, on: bool) -> Self {
        self.quote_all = on;
        self
    }
    /// Caps the number of users.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Validates and builds.
    pub fn build(self) -> Result<ExportSpec, SpecError> {
        if self.fields.len() > MAX_FIELDS {
            return Err(SpecError::TooManyFields { max: MAX_FIELDS, got: self.fields.len() });
        }
        if let Some(index) = self.fields.iter().position(|f| f.name.as_deref() == Some("")) {
            return Err(SpecError::EmptyFieldName { index });
        }
        if self.limit == Some(0) {
            return Err(SpecError::ZeroLimit);
        }
        self.filter.check_sizes().map_err(SpecError::FilterTooLarge)?;
        let fields_given = !self.fields.is_empty();
        let fields =
            if fields_given || self.format == ExportFormat::Ndjson { self.fields } else { default_fields(self.view) };
        let names: Vec<String> = fields.iter().map(ExportField::header).collect();
        let mut seen = HashSet::new();
        if !names.iter().all(|n| seen.insert(n.as_str())) {
            return Err(SpecError::NonUniqueFieldNames(names));
        }
        Ok(ExportSpec {
            format: self.format,
            view: self.view,
            fields,
            fields_given,
            filter: self.filter,
            gzip: self.gzip,
            formula_guard: self.formula_guard,
            quote_all: self.quote_all,
            limit: self.limit,
        })
    }
}

/// The default CSV fields of a view.
pub fn default_fields(view: UserView) -> Vec<ExportField> {
    match view {
        UserView::Authgear => AUTHGEAR_DEFAULT_POINTERS
            .iter()
            .map(|p| ExportField::new(JsonPointer::parse(p).expect("static pointer"), None))
            .collect(),
        UserView::Auth0 => AUTH0_DEFAULT_FIELDS
            .iter()
            .map(|p| ExportField::new(JsonPointer::from_auth0_path(p).expect("static path"), Some((*p).to_owned())))
            .collect(),
        UserView::Descope => DESCOPE_DEFAULT_FIELDS
            .iter()
            .map(|(p, n)| ExportField::new(JsonPointer::parse(p).expect("static pointer"), Some((*n).to_owned())))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ptr(s: &str) -> JsonPointer {
        JsonPointer::parse(s).unwrap()
    }

    #[test]
    fn csv_without_fields_uses_the_41_defaults() {
        let s = ExportSpec::builder(ExportFormat::Csv).build().unwrap();
        assert_eq!(s.fields().len(), 41);
        assert_eq!(s.headers()[17], "address.formatted");
        assert!(!s.fields_given());
        let nd = ExportSpec::builder(ExportFormat::Ndjson).build().unwrap();
        assert!(nd.fields().is_empty());
    }

    #[test]
    fn duplicate_headers_are_rejected_with_all_names() {
        let e = ExportSpec::builder(ExportFormat::Csv)
            .field(ptr("/claims/0/email"), None)
            .field(ptr("/sub"), None)
            .field(ptr("/claims/0/email"), None)
            .build()
            .unwrap_err();
        assert_eq!(
            e,
            SpecError::NonUniqueFieldNames(vec!["claims.0.email".into(), "sub".into(), "claims.0.email".into()])
        );
        assert_eq!(e.error_code(), Code::NonUniqueFieldNames);
        // `/a.b` and `/a/b` collide, as in Authgear.
        assert!(
            ExportSpec::builder(ExportFormat::Ndjson)
                .field(ptr("/a.b"), None)
                .field(ptr("/a/b"), None)
                .build()
                .is_err()
        );
        // An explicit name resolves the collision.
        assert!(
            ExportSpec::builder(ExportFormat::Csv)
                .field(ptr("/a.b"), None)
                .field(ptr("/a/b"), Some("ab".into()))
                .build()
                .is_ok()
        );
    }

    #[test]
    fn limits_are_enforced() {
        let mut b = ExportSpec::builder(ExportFormat::Csv);
        for i in 0..=MAX_FIELDS {
            b = b.field(ptr(&format!("/f{i}")), None);
        }
        assert!(matches!(b.build(), Err(SpecError::TooManyFields { .. })));
        assert_eq!(ExportSpec::builder(ExportFormat::Csv).limit(0).build(), Err(SpecError::ZeroLimit));
        assert!(matches!(
            ExportSpec::builder(ExportFormat::Csv).field(ptr("/a"), Some(String::new())).build(),
            Err(SpecError::EmptyFieldName { index: 0 })
        ));
    }

    #[test]
    fn serde_round_trip_keeps_given_fields_and_revalidates() {
        let s = ExportSpec::builder(ExportFormat::Csv)
            .view(UserView::Descope)
            .field(ptr("/email"), Some("mail".into()))
            .gzip(true)
            .build()
            .unwrap();
        let json = serde_json::to_string(&s).unwrap();
        let back: ExportSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.file_extension(), "csv.gz");
        let dup = r#"{"format":"csv","view":"authgear","fields":[{"pointer":"/a"},{"pointer":"/a"}]}"#;
        assert!(serde_json::from_str::<ExportSpec>(dup).is_err());
        let defaults = ExportSpec::builder(ExportFormat::Csv).build().unwrap();
        let v = serde_json::to_value(&defaults).unwrap();
        assert_eq!(v["fields"], serde_json::json!([]));
    }
}
