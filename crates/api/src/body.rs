//! Request bodies: size limit, content type, UTF-8 and JSON checks, then typed deserialization with
//! JSON-pointer error locations.
//!
//! Handlers read the raw [`web::Payload`] through [`read_json`] rather than actix's `Json` extractor,
//! so that every failure is an [`ApiError`] in the dialect of the path (413 `PayloadTooLarge`, 415
//! `UnsupportedMediaType`, 400 `MalformedJson`). [`from_value`] then maps the JSON onto a DTO with
//! `serde_path_to_error`, so schema errors carry the pointer of the offending value.

use actix_web::http::header;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use userexport_domain::Code;

use crate::error::{ApiDialect, ApiError};

/// Checks that the request declares `application/json` (optionally `; charset=utf-8`).
pub fn check_json_content_type(req: &HttpRequest) -> Result<(), ApiError> {
    let dialect = ApiDialect::from_path(req.path());
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Err(ApiError::new(dialect, Code::UnsupportedMediaType));
    };
    let ok = value.to_str().is_ok_and(|ct| {
        let mut parts = ct.split(';').map(str::trim);
        let essence = parts.next().unwrap_or_default();
        essence.eq_ignore_ascii_case("application/json")
            && parts.all(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                k.trim().eq_ignore_ascii_case("charset") && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
    });
    if ok { Ok(()) } else { Err(ApiError::new(dialect, Code::UnsupportedMediaType)) }
}

fn too_large(dialect: ApiDialect, limit: usize) -> ApiError {
    ApiError::with_message(dialect, Code::PayloadTooLarge, format!("the request body is larger than {limit} bytes"))
        .info(json!({ "limit": limit }))
}

/// Reads the whole body, refusing more than `limit` bytes (declared or actual).
pub async fn read_limited(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    let dialect = ApiDialect::from_path(req.path());
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(dialect, limit));
    }
    let mut buf = web::BytesMut::with_capacity(declared.map_or(1024, |n| n as usize));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::with_message(dialect, Code::MalformedJson, format!("could not read the request body: {e}"))
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large(dialect, limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Parses bytes as UTF-8 JSON; anything else is 400 `MalformedJson`.
pub fn parse_json(dialect: ApiDialect, bytes: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ApiError::with_message(dialect, Code::MalformedJson, format!("the request body is not valid UTF-8: {e}"))
    })?;
    serde_json::from_str(text).map_err(|e| {
        ApiError::with_message(dialect, Code::MalformedJson, format!("the request body is not valid JSON: {e}"))
    })
}

/// Content type, size limit and JSON syntax in one go: the body as a JSON value.
pub async fn read_json(req: &HttpRequest, payload: web::Payload, limit: usize) -> Result<Value, ApiError> {
    check_json_content_type(req)?;
    let bytes = read_limited(req, payload, limit).await?;
    parse_json(ApiDialect::from_path(req.path()), &bytes)
}

/// A schema violation at one place of a JSON document.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// JSON pointer of the offending value (of its parent object for missing and unknown keys).
    pub location: String,
    /// Authgear-style keyword: `required`, `type`, `enum`, `additionalProperties`, `format`,
    /// `minItems`, `minLength`, `general`.
    pub kind: &'static str,
    /// Keyword-specific details (as in Authgear's `info.causes[].details`).
    pub details: Value,
    /// The code this violation is reported under.
    pub code: Code,
}

impl FieldError {
    /// A violation with `details = {"error": message}` under `InvalidRequestBody`.
    pub fn general(location: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            location: location.into(),
            kind: "general",
            details: json!({ "msg": message.into() }),
            code: Code::InvalidRequestBody,
        }
    }

    /// A one-line description, e.g. `/format: missing field "format"`.
    pub fn describe(&self) -> String {
        let detail = self
            .details
            .get("error")
            .or_else(|| self.details.get("msg"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{} {}", self.kind, self.details));
        let at = if self.location.is_empty() { "(root)" } else { &self.location };
        format!("{at}: {detail}")
    }

    /// The Authgear cause object `{location, kind, details}`.
    pub fn cause(&self) -> Value {
        json!({ "location": self.location, "kind": self.kind, "details": self.details })
    }
}

/// Turns a list of violations into one 400: code of the first violation, message listing them all,
/// `info.causes` with every cause.
pub fn validation_error(dialect: ApiDialect, errors: &[FieldError]) -> ApiError {
    let code = errors.first().map_or(Code::InvalidRequestBody, |e| e.code);
    let code = if code == Code::InvalidFieldPointer && errors.iter().any(|e| e.code != code) {
        Code::InvalidRequestBody
    } else {
        code
    };
    let listed: Vec<String> = errors.iter().map(FieldError::describe).collect();
    ApiError::with_message(dialect, code, format!("invalid request body: {}", listed.join("; ")))
        .info(json!({ "causes": errors.iter().map(FieldError::cause).collect::<Vec<_>>() }))
}

/// Escapes one reference token for a JSON pointer.
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn path_to_pointer(base: &str, path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = base.to_owned();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                out.push('/');
                out.push_str(&escape_token(key));
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// The JSON Schema type name of a value (`integer` for whole numbers), for validation messages.
pub fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Extracts the first backquoted name of a serde message (`missing field `format``).
fn quoted(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

/// Deserializes `value` into `T`; `base` is the pointer of `value` inside the whole body (`""` for
/// the root). Errors carry the pointer and an Authgear-style keyword.
pub fn from_value<T: DeserializeOwned>(value: &Value, base: &str) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let location = path_to_pointer(base, e.path());
        let msg = e.inner().to_string();
        classify(location, &msg)
    })
}

fn classify(location: String, msg: &str) -> FieldError {
    let error_details = |extra: Value| {
        let mut d = json!({ "error": msg });
        if let (Some(d), Value::Object(extra)) = (d.as_object_mut(), extra) {
            d.extend(extra);
        }
        d
    };
    if msg.starts_with("missing field") {
        let missing = quoted(msg).unwrap_or_default();
        FieldError {
            location,
            kind: "required",
            details: error_details(json!({ "missing": [missing] })),
            code: Code::InvalidRequestBody,
        }
    } else if msg.starts_with("unknown field") {
        let property = quoted(msg).unwrap_or_default();
        // serde_path_to_error ends the path with the unknown key itself; report its object.
        let suffix = format!("/{}", escape_token(property));
        let location = location.strip_suffix(&suffix).map(str::to_owned).unwrap_or(location);
        FieldError {
            location,
            kind: "additionalProperties",
            details: error_details(json!({ "property": property })),
            code: Code::InvalidRequestBody,
        }
    } else if msg.starts_with("invalid type") {
        FieldError { location, kind: "type", details: error_details(json!({})), code: Code::InvalidRequestBody }
    } else if msg.starts_with("unknown variant") {
        FieldError { location, kind: "enum", details: error_details(json!({})), code: Code::InvalidRequestBody }
    } else if msg.starts_with("invalid JSON pointer") {
        FieldError {
            location,
            kind: "format",
            details: error_details(json!({ "format": "json-pointer" })),
            code: Code::InvalidFieldPointer,
        }
    } else {
        FieldError { location, kind: "general", details: error_details(json!({})), code: Code::InvalidRequestBody }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;
    use actix_web::test as atest;
    use actix_web::{App, HttpMessage, HttpResponse};
    use serde::Deserialize;
    use userexport_domain::JsonPointer;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Dto {
        name: String,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        pointer: JsonPointer,
        #[serde(default)]
        n: Option<u32>,
    }

    async fn echo(req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, ApiError> {
        let value = read_json(&req, payload, 64).await?;
        Ok(HttpResponse::Ok().json(value))
    }

    async fn call(path: &str, content_type: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let app = atest::init_service(
            App::new().route("/v1/echo", web::post().to(echo)).route("/_api/admin/echo", web::post().to(echo)),
        )
        .await;
        let mut req = atest::TestRequest::post().uri(path).set_payload(body);
        if let Some(ct) = content_type {
            req = req.insert_header((header::CONTENT_TYPE, ct));
        }
        let res = atest::call_service(&app, req.to_request()).await;
        let status = res.status().as_u16();
        let bytes = res.into_body().try_into_bytes().unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[actix_web::test]
    async fn accepts_json_with_or_without_utf8_charset() {
        for ct in ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"] {
            let (status, body) = call("/v1/echo", Some(ct), br#"{"a":1}"#.to_vec()).await;
            assert_eq!(status, 200, "{ct}");
            assert_eq!(body, json!({"a": 1}));
        }
    }

    #[actix_web::test]
    async fn other_content_types_are_415_in_the_dialect_envelope() {
        for ct in [None, Some("text/plain"), Some("application/json; charset=latin1"), Some("application/jsonx")] {
            let (status, body) = call("/v1/echo", ct, b"{}".to_vec()).await;
            assert_eq!(status, 415, "{ct:?}");
            assert_eq!(body["code"], "unsupported_media_type");
        }
        let (status, body) = call("/_api/admin/echo", Some("text/plain"), b"{}".to_vec()).await;
        assert_eq!(status, 415);
        assert_eq!(body["error"]["reason"], "UnsupportedMediaType");
    }

    #[actix_web::test]
    async fn oversized_bodies_are_413_with_the_limit() {
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(100));
        let (status, body) = call("/_api/admin/echo", Some("application/json"), big.clone().into_bytes()).await;
        assert_eq!(status, 413);
        assert_eq!(body["error"]["reason"], "JSONTooLarge");
        assert_eq!(body["error"]["info"]["limit"], 64);
        let (status, body) = call("/v1/echo", Some("application/json"), big.into_bytes()).await;
        assert_eq!(status, 413);
        assert_eq!(body["code"], "payload_too_large");
    }

    #[actix_web::test]
    async fn streamed_bodies_without_content_length_are_limited_too() {
        let app = atest::init_service(App::new().route("/v1/echo", web::post().to(echo))).await;
        let mut req = atest::TestRequest::post()
            .uri("/v1/echo")
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload(vec![b' '; 100])
            .to_request();
        req.headers_mut().remove(header::CONTENT_LENGTH);
        assert!(req.headers().get(header::CONTENT_LENGTH).is_none());
        let res = atest::call_service(&app, req).await;
        assert_eq!(res.status().as_u16(), 413);
    }

    #[actix_web::test]
    async fn invalid_utf8_and_invalid_json_are_malformed() {
        let (status, body) = call("/v1/echo", Some("application/json"), vec![b'"', 0xff, b'"']).await;
        assert_eq!(status, 400);
        assert_eq!(body["code"], "malformed_json");
        let (status, body) = call("/_api/admin/echo", Some("application/json"), b"{\"a\":".to_vec()).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["reason"], "InvalidJSON");
        let (status, _) = call("/v1/echo", Some("application/json"), Vec::new()).await;
        assert_eq!(status, 400);
    }

    #[test]
    fn typed_errors_carry_json_pointers_and_keywords() {
        let e = from_value::<Dto>(&json!({}), "").unwrap_err();
        assert_eq!((e.location.as_str(), e.kind), ("", "required"));
        assert_eq!(e.details["missing"], json!(["name"]));

        let e = from_value::<Dto>(&json!({"name": "a", "extra": 1}), "").unwrap_err();
        assert_eq!((e.location.as_str(), e.kind), ("", "additionalProperties"));
        assert_eq!(e.details["property"], "extra");

        let e = from_value::<Dto>(&json!({"name": 1}), "").unwrap_err();
        assert_eq!((e.location.as_str(), e.kind), ("/name", "type"));

        let e = from_value::<Dto>(&json!({"name": "a", "items": [{"pointer": "/ok"}, {"pointer": "bad"}]}), "/x")
            .unwrap_err();
        assert_eq!((e.location.as_str(), e.kind, e.code), ("/x/items/1/pointer", "format", Code::InvalidFieldPointer));
        assert_eq!(e.details["format"], "json-pointer");

        let e = from_value::<Dto>(&json!({"name": "a", "items": [{"pointer": "", "n": -1}]}), "").unwrap_err();
        assert_eq!(e.location, "/items/0/n");
    }

    #[test]
    fn validation_errors_list_every_cause() {
        let errs = vec![FieldError::general("/a~1b", "bad"), FieldError::general("", "worse")];
        let e = validation_error(ApiDialect::Native, &errs);
        assert_eq!(e.code, Code::InvalidRequestBody);
        assert!(e.message.contains("/a~1b: bad"));
        assert!(e.message.contains("(root): worse"));
        assert_eq!(e.info.as_ref().unwrap()["causes"].as_array().unwrap().len(), 2);
        assert_eq!(escape_token("a/b~c"), "a~1b~0c");
    }
}
