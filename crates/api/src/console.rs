//! The web console (`GET /console`): sign in with a project id and a management key, search users
//! with the Descope filters, select some, export them (or the whole filtered set) as CSV or NDJSON,
//! watch the task's progress and download the file.
//!
//! The page is plain HTML, CSS and JavaScript committed under `crates/api/assets/console` (no build
//! step, no CDN, no external fonts) and compiled into the binary with `include_str!`. It talks to
//! this server only, through the public APIs any client uses — Descope's `POST
//! /v2/mgmt/user/search` and the native `/v1/exports` routes — with `Authorization: Bearer
//! <project_id>:<management_key>`. The key is kept in the tab's `sessionStorage`, never in a URL
//! or `localStorage`.
//!
//! The default field pointers of the Descope view ([`default_fields`]) are embedded in the page as
//! a JSON data block (`<script type="application/json">`, which the CSP does not treat as script),
//! so the field picker always matches what the server exports by default.
//!
//! Every response carries a strict `Content-Security-Policy` ([`CONSOLE_CSP`]): the page may load
//! and call nothing but this server's own files and APIs, and no inline script runs.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use userexport_domain::spec::default_fields;
use userexport_domain::{Code, UserView};

use crate::error::{ApiDialect, ApiError};
use crate::routes::Routes;

/// Registers `GET /console` and `GET /console/{asset}`.
pub fn configure(routes: &mut Routes<'_>) {
    routes.get("/console", console_page).get("/console/{asset}", console_asset);
}

/// Only this server's own files and APIs; no inline script or style; not frameable; forms are
/// never submitted by the browser (the page handles them in script), so credentials cannot end up
/// in a URL even if the script failed to load.
pub const CONSOLE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page template; [`FIELDS_PLACEHOLDER`] is replaced by the default fields as JSON.
const INDEX_TEMPLATE: &str = include_str!("../assets/console/index.html");
/// Where the default fields go in [`INDEX_TEMPLATE`].
const FIELDS_PLACEHOLDER: &str = "{{DEFAULT_FIELDS_JSON}}";

/// The files the page loads: `(name, content type, text)`.
const CONSOLE_ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../assets/console/app.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../assets/console/app.css")),
];

/// The default fields of the Descope view as `[{"pointer": …, "name": …}]`.
pub fn default_fields_json() -> serde_json::Value {
    default_fields(UserView::Descope)
        .iter()
        .map(|f| serde_json::json!({ "pointer": f.pointer().as_str(), "name": f.header() }))
        .collect()
}

/// The page with the default fields filled in, rendered once.
fn index_html() -> &'static str {
    static HTML: OnceLock<String> = OnceLock::new();
    HTML.get_or_init(|| {
        // `<` escaped so no value can close the data block.
        let json = default_fields_json().to_string().replace('<', "\\u003c");
        INDEX_TEMPLATE.replace(FIELDS_PLACEHOLDER, &json)
    })
}

/// Headers every console response carries.
fn secured(mut res: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    res.insert_header((header::CONTENT_SECURITY_POLICY, CONSOLE_CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    res
}

/// The web console: search users, export a selection or a filtered set, follow progress,
/// download.
#[utoipa::path(
    get,
    path = "/console",
    tag = "console",
    operation_id = "console_page",
    responses((status = 200, description = "The console page (HTML)", content_type = "text/html"))
)]
async fn console_page() -> HttpResponse {
    secured(HttpResponse::Ok()).content_type("text/html; charset=utf-8").body(index_html())
}

/// A static file of the console page.
#[utoipa::path(
    get,
    path = "/console/{asset}",
    tag = "console",
    operation_id = "console_asset",
    params(("asset" = String, Path, description = "`app.js` or `app.css`")),
    responses(
        (status = 200, description = "The file"),
        (status = 404, description = "No such file", body = crate::openapi::schemas::NativeError),
    )
)]
async fn console_asset(asset: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let Some((_, content_type, text)) = CONSOLE_ASSETS.iter().find(|(name, ..)| *name == asset.as_str()) else {
        return Err(ApiError::new(ApiDialect::Native, Code::RouteNotFound));
    };
    Ok(secured(HttpResponse::Ok()).content_type(*content_type).body(*text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test as atest;

    #[actix_web::test]
    async fn the_console_is_served_offline_with_a_strict_csp() {
        let app = atest::init_service(actix_web::App::new().configure(crate::configure)).await;
        let get = |uri: &str| atest::TestRequest::get().uri(uri).to_request();

        let res = atest::call_service(&app, get("/console")).await;
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(res.headers().get(header::CONTENT_TYPE).unwrap(), "text/html; charset=utf-8");
        let csp = res.headers().get(header::CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap().to_owned();
        assert!(csp.starts_with("default-src 'self'") && csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        let html = String::from_utf8(atest::read_body(res).await.to_vec()).unwrap();
        assert!(!html.contains("http://") && !html.contains("https://"), "no external resources");
        assert!(!html.contains(FIELDS_PLACEHOLDER));

        // The only <script> that runs is app.js; the other one is a JSON data block.
        let scripts: Vec<&str> =
            html.match_indices("<script").map(|(i, _)| &html[i..i + 60.min(html.len() - i)]).collect();
        assert_eq!(scripts.len(), 2, "{scripts:?}");
        assert!(scripts.iter().any(|s| s.starts_with("<script src=\"console/app.js\"")), "{scripts:?}");
        assert!(scripts.iter().any(|s| s.starts_with("<script id=\"default-fields\" type=\"application/json\">")));
        for inline in ["onclick=", "onload=", "onsubmit=", "onchange=", "style=", "javascript:"] {
            assert!(!html.contains(inline), "no inline script or style: {inline}");
        }
        let start = html.find("type=\"application/json\">").unwrap() + "type=\"application/json\">".len();
        let end = start + html[start..].find("</script>").unwrap();
        let fields: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(fields, default_fields_json());
        assert_eq!(fields[0], serde_json::json!({"pointer": "/userId", "name": "userId"}));

        for (asset, kind) in [("app.js", "text/javascript"), ("app.css", "text/css")] {
            assert!(html.contains(&format!("\"console/{asset}\"")), "{asset}");
            let res = atest::call_service(&app, get(&format!("/console/{asset}"))).await;
            assert_eq!(res.status().as_u16(), 200, "{asset}");
            assert!(res.headers().get(header::CONTENT_TYPE).unwrap().to_str().unwrap().starts_with(kind));
            assert!(res.headers().contains_key(header::CONTENT_SECURITY_POLICY));
            let body = String::from_utf8(atest::read_body(res).await.to_vec()).unwrap();
            assert!(body.len() > 500, "{asset}");
            assert!(!body.contains("http://") && !body.contains("https://"), "{asset} loads nothing external");
        }
        for missing in ["/console/index.html", "/console/../Cargo.toml", "/console/app.js.map"] {
            let res = atest::call_service(&app, get(missing)).await;
            assert_eq!(res.status().as_u16(), 404, "{missing}");
        }
    }

    #[test]
    fn the_key_is_never_put_in_local_storage_or_urls() {
        let js = CONSOLE_ASSETS[0].2;
        assert!(!js.contains("localStorage"));
        assert!(js.contains("sessionStorage"));
        // Credentials travel in the Authorization header only.
        assert!(js.contains("Authorization"));
    }
}
