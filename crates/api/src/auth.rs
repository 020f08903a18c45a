//! Authentication: management keys and RS256 admin JWTs, plus key generation and token minting for
//! the CLI.
//!
//! `Authorization: Bearer <project_id>:<management_key>` is checked against the stored key hashes.
//! `Authorization: Bearer <jwt>` must be RS256 with a `kid` registered for the project its `aud`
//! names, and carry `exp` and `aud`. Every failure answers 401 with a short reason; tokens and keys
//! are never logged.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use userexport_domain::{Code, ErrorCode, Project, ProjectId, SigningKeyId};
use userexport_store::StoreError;

use crate::AppState;
use crate::error::{ApiDialect, ApiError};

/// Issuer written into minted tokens.
pub const ISSUER: &str = "userexport";

/// Why a request could not be authenticated, or a key or token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    #[error("missing bearer credentials")]
    Missing,
    /// The credentials are wrong, malformed or expired; the reason is short and safe to show.
    #[error("invalid credentials: {0}")]
    Invalid(&'static str),
    /// Key generation, PEM or signing failed.
    #[error("key error: {0}")]
    Key(String),
    /// The store could not be asked.
    #[error("store error")]
    Store(#[from] StoreError),
}

impl ErrorCode for AuthError {
    fn error_code(&self) -> Code {
        match self {
            AuthError::Missing | AuthError::Invalid(_) => Code::Unauthorized,
            AuthError::Store(e) if e.error_code() == Code::ServiceUnavailable => Code::ServiceUnavailable,
            AuthError::Key(_) | AuthError::Store(_) => Code::Internal,
        }
    }
}

/// The project a request is authenticated for. Use it as a handler argument.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The caller's project; every lookup is scoped by it.
    pub project: Project,
}

/// The credential shapes a bearer value can have.
#[derive(Debug, PartialEq, Eq)]
enum Credentials<'a> {
    ManagementKey {
        project: ProjectId,
        key: &'a str,
    },
    /// An RS256 admin JWT signed with a project's registered key.
    Jwt(&'a str),
    /// An HS256 access token from `POST /oauth/token`; valid on the Auth0 routes only.
    IssuedToken(&'a str),
}

fn bearer(req: &HttpRequest) -> Result<&str, AuthError> {
    let value = req.headers().get(header::AUTHORIZATION).ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Invalid("malformed authorization header"))?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Invalid("expected a bearer token"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Invalid("expected a bearer token"));
    }
    let token = token.trim();
    if token.is_empty() { Err(AuthError::Missing) } else { Ok(token) }
}

fn classify(token: &str) -> Result<Credentials<'_>, AuthError> {
    if let Some((project, key)) = token.split_once(':') {
        let project = ProjectId::parse(project).map_err(|_| AuthError::Invalid("malformed project id"))?;
        if key.is_empty() {
            return Err(AuthError::Invalid("empty management key"));
        }
        return Ok(Credentials::ManagementKey { project, key });
    }
    if crate::dialect::auth0::is_issued_token(token) {
        Ok(Credentials::IssuedToken(token))
    } else if token.split('.').count() == 3 {
        Ok(Credentials::Jwt(token))
    } else {
        Err(AuthError::Invalid("malformed bearer token"))
    }
}

/// `aud` as a string or an array of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct AudienceOnly {
    #[serde(default)]
    aud: Option<Audience>,
}

/// The project a JWT claims to be for (its first `aud` that is a project id). Not verified: only used
/// to find the keys to verify with.
pub fn jwt_project(token: &str) -> Result<ProjectId, AuthError> {
    let data = jsonwebtoken::dangerous::insecure_decode::<AudienceOnly>(token)
        .map_err(|_| AuthError::Invalid("malformed token"))?;
    let auds = match data.claims.aud {
        Some(Audience::One(a)) => vec![a],
        Some(Audience::Many(a)) => a,
        None => return Err(AuthError::Invalid("token has no audience")),
    };
    auds.iter().find_map(|a| ProjectId::parse(a).ok()).ok_or(AuthError::Invalid("token audience names no project"))
}

/// Verifies an RS256 JWT for `project` against that project's registered public JWKs.
pub fn verify_jwt(
    token: &str,
    project: &ProjectId,
    keys: &[(SigningKeyId, Value)],
    leeway: Duration,
) -> Result<(), AuthError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid("malformed token header"))?;
    if header.alg != Algorithm::RS256 {
        return Err(AuthError::Invalid("token algorithm must be RS256"));
    }
    let kid = header.kid.ok_or(AuthError::Invalid("token has no kid"))?;
    let (_, jwk) = keys.iter().find(|(id, _)| id.as_str() == kid).ok_or(AuthError::Invalid("unknown kid"))?;
    let jwk: Jwk = serde_json::from_value(jwk.clone()).map_err(|_| AuthError::Invalid("unusable signing key"))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| AuthError::Invalid("unusable signing key"))?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[project.as_str()]);
    validation.set_required_spec_claims(&["exp", "aud"]);
    validation.leeway = leeway.as_secs();
    validation.validate_nbf = true;
    jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        AuthError::Invalid(match e.kind() {
            ErrorKind::ExpiredSignature => "token expired",
            ErrorKind::ImmatureSignature => "token not yet valid",
            ErrorKind::InvalidAudience => "wrong audience",
            ErrorKind::InvalidSignature => "bad signature",
            ErrorKind::MissingRequiredClaim(_) => "missing required claim",
            _ => "invalid token",
        })
    })?;
    Ok(())
}

/// Resolves a bearer value (see [`classify`]) on a route of `dialect` to a project.
async fn authenticate(
    state: &AppState,
    credentials: Credentials<'_>,
    dialect: ApiDialect,
) -> Result<Project, AuthError> {
    let project_id = match credentials {
        Credentials::ManagementKey { project, key } => {
            if !state.store.verify_management_key(&project, key).await? {
                return Err(AuthError::Invalid("wrong management key"));
            }
            project
        }
        Credentials::Jwt(token) => {
            let project = jwt_project(token)?;
            let keys = state.store.signing_keys(&project).await?;
            verify_jwt(token, &project, &keys, state.settings.jwt_leeway)?;
            project
        }
        Credentials::IssuedToken(token) => {
            if dialect != ApiDialect::Auth0 {
                return Err(AuthError::Invalid("tokens from /oauth/token are only valid for /api/v2"));
            }
            crate::dialect::auth0::verify_token(&state.settings.auth0_token_key, token, state.settings.jwt_leeway)?
        }
    };
    state.store.get_project(&project_id).await?.ok_or(AuthError::Invalid("unknown project"))
}

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let dialect = ApiDialect::from_path(req.path());
            let fail = |e: AuthError| {
                if e.error_code() == Code::Unauthorized {
                    tracing::debug!(reason = %e, "authentication failed");
                }
                ApiError::from_coded(dialect, e)
            };
            // Malformed or missing credentials are refused before anything is looked up.
            let credentials = bearer(&req).and_then(classify).map_err(fail)?;
            let Some(state) = req.app_data::<web::Data<AppState>>() else {
                return Err(ApiError::internal(dialect, std::io::Error::other("AppState is not registered")));
            };
            let project = authenticate(state, credentials, dialect).await.map_err(fail)?;
            Ok(Authenticated { project })
        })
    }
}

/// Generates an RSA-2048 signing key: its id, the PKCS#8 PEM private key, and the public JWK
/// (`kid`, `alg: RS256`, `use: sig`) to register with the store.
pub fn generate_signing_key() -> Result<(SigningKeyId, String, Value), AuthError> {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use aws_lc_rs::rsa::{KeyPair, KeySize};

    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| AuthError::Key("RSA key generation failed".into()))?;
    let der: Pkcs8V1Der<'static> =
        AsDer::<Pkcs8V1Der<'static>>::as_der(&pair).map_err(|_| AuthError::Key("PKCS#8 encoding failed".into()))?;
    let private_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
    let kid = SigningKeyId::generate();
    let jwk = public_jwk(&kid, &private_pem)?;
    Ok((kid, private_pem, jwk))
}

/// The public JWK of a PEM private key, labelled with `kid`.
pub fn public_jwk(kid: &SigningKeyId, private_pem: &str) -> Result<Value, AuthError> {
    let enc = EncodingKey::from_rsa_pem(private_pem.as_bytes()).map_err(|e| AuthError::Key(e.to_string()))?;
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::RS256).map_err(|e| AuthError::Key(e.to_string()))?;
    jwk.common.key_id = Some(kid.as_str().to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    serde_json::to_value(&jwk).map_err(|e| AuthError::Key(e.to_string()))
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    aud: &'a str,
    iat: i64,
    exp: i64,
    iss: &'a str,
}

/// Signs an admin JWT for `project` (as the Authgear docs' Node example does: `aud` = project id,
/// `iat` 30 s in the past, header `{typ: JWT, kid, alg: RS256}`), valid for `ttl`.
pub fn mint_token(
    project: &ProjectId,
    kid: &SigningKeyId,
    private_pem: &str,
    ttl: Duration,
) -> Result<String, AuthError> {
    let now = chrono::Utc::now().timestamp();
    let ttl = i64::try_from(ttl.as_secs()).map_err(|_| AuthError::Key("ttl too large".into()))?;
    let claims = MintedClaims { aud: project.as_str(), iat: now - 30, exp: now + ttl, iss: ISSUER };
    let header = Header { kid: Some(kid.as_str().to_owned()), ..Header::new(Algorithm::RS256) };
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).map_err(|e| AuthError::Key(e.to_string()))?;
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| AuthError::Key(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    use base64_engine::b64;

    /// Minimal base64url without padding, to forge tokens by hand.
    mod base64_engine {
        pub fn b64(data: &[u8]) -> String {
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in data.chunks(3) {
                let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..=chunk.len() {
                    out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }

    struct Fixture {
        kid: SigningKeyId,
        pem: String,
        jwk: Value,
        other_pem: String,
    }

    /// RSA key generation is slow in debug builds: make the keys once.
    fn fixture() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            let (kid, pem, jwk) = generate_signing_key().unwrap();
            let (_, other_pem, _) = generate_signing_key().unwrap();
            Fixture { kid, pem, jwk, other_pem }
        })
    }

    const LEEWAY: Duration = Duration::from_secs(60);

    fn keys() -> Vec<(SigningKeyId, Value)> {
        let f = fixture();
        vec![(f.kid.clone(), f.jwk.clone())]
    }

    fn sign(header: &Value, claims: &Value, pem: &str) -> String {
        let header: Header = serde_json::from_value(header.clone()).unwrap();
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn generated_keys_have_the_expected_shape() {
        let f = fixture();
        assert!(f.pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(f.jwk["kty"], "RSA");
        assert_eq!(f.jwk["alg"], "RS256");
        assert_eq!(f.jwk["use"], "sig");
        assert_eq!(f.jwk["kid"], f.kid.as_str());
        assert_eq!(f.jwk["e"], "AQAB");
        assert!(f.jwk.get("d").is_none(), "the JWK must be public only");
        assert_eq!(public_jwk(&f.kid, &f.pem).unwrap(), f.jwk);
    }

    #[test]
    fn minted_tokens_verify_and_look_like_authgear_admin_tokens() {
        let f = fixture();
        let project = ProjectId::generate();
        let token = mint_token(&project, &f.kid, &f.pem, Duration::from_secs(3600)).unwrap();
        assert_eq!(jwt_project(&token).unwrap(), project);
        verify_jwt(&token, &project, &keys(), LEEWAY).unwrap();

        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(header.kid.as_deref(), Some(f.kid.as_str()));
        let claims: Value = jsonwebtoken::dangerous::insecure_decode(&token).unwrap().claims;
        let now = chrono::Utc::now().timestamp();
        assert_eq!(claims["aud"], project.as_str());
        assert_eq!(claims["iss"], ISSUER);
        assert!((claims["iat"].as_i64().unwrap() - (now - 30)).abs() <= 2);
        assert!((claims["exp"].as_i64().unwrap() - (now + 3600)).abs() <= 2);
    }

    #[test]
    fn array_audiences_are_accepted() {
        let f = fixture();
        let project = ProjectId::generate();
        let now = chrono::Utc::now().timestamp();
        let token = sign(
            &serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": f.kid.as_str()}),
            &serde_json::json!({"aud": ["https://elsewhere", project.as_str()], "exp": now + 60}),
            &f.pem,
        );
        assert_eq!(jwt_project(&token).unwrap(), project);
        verify_jwt(&token, &project, &keys(), LEEWAY).unwrap();
    }

    #[test]
    fn bad_tokens_are_rejected() {
        let f = fixture();
        let project = ProjectId::generate();
        let now = chrono::Utc::now().timestamp();
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": f.kid.as_str()});
        let claims = |aud: &str, exp: i64| serde_json::json!({"aud": aud, "exp": exp, "iat": now});

        let other_key = sign(&header, &claims(project.as_str(), now + 600), &f.other_pem);
        let wrong_aud = sign(&header, &claims(ProjectId::generate().as_str(), now + 600), &f.pem);
        let expired = sign(&header, &claims(project.as_str(), now - 120), &f.pem);
        let unknown_kid = sign(
            &serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": SigningKeyId::generate().as_str()}),
            &claims(project.as_str(), now + 600),
            &f.pem,
        );
        let no_kid =
            sign(&serde_json::json!({"typ": "JWT", "alg": "RS256"}), &claims(project.as_str(), now + 600), &f.pem);
        let no_exp = sign(&header, &serde_json::json!({"aud": project.as_str()}), &f.pem);
        // HS256 forged with the public key material as the secret (alg confusion).
        let hs256 = jsonwebtoken::encode(
            &Header { kid: Some(f.kid.as_str().to_owned()), ..Header::new(Algorithm::HS256) },
            &claims(project.as_str(), now + 600),
            &EncodingKey::from_secret(f.jwk["n"].as_str().unwrap().as_bytes()),
        )
        .unwrap();
        let payload = b64(claims(project.as_str(), now + 600).to_string().as_bytes());
        let alg_none = format!(
            "{}.{}.",
            b64(serde_json::json!({"typ": "JWT", "alg": "none", "kid": f.kid.as_str()}).to_string().as_bytes()),
            payload
        );
        let valid = mint_token(&project, &f.kid, &f.pem, Duration::from_secs(600)).unwrap();
        let mut parts: Vec<&str> = valid.split('.').collect();
        let tampered_payload = b64(claims(project.as_str(), now + 99_999).to_string().as_bytes());
        parts[1] = &tampered_payload;
        let tampered = parts.join(".");

        for (name, token) in [
            ("other key", &other_key),
            ("wrong aud", &wrong_aud),
            ("expired", &expired),
            ("unknown kid", &unknown_kid),
            ("no kid", &no_kid),
            ("no exp", &no_exp),
            ("hs256", &hs256),
            ("alg none", &alg_none),
            ("tampered", &tampered),
        ] {
            let err = verify_jwt(token, &project, &keys(), LEEWAY).unwrap_err();
            assert_eq!(err.error_code(), Code::Unauthorized, "{name}: {err}");
        }
        // Expired within the leeway still passes; the leeway is honoured.
        let recent = sign(&header, &claims(project.as_str(), now - 10), &f.pem);
        verify_jwt(&recent, &project, &keys(), LEEWAY).unwrap();
        assert!(verify_jwt(&recent, &project, &keys(), Duration::ZERO).is_err());
    }

    #[test]
    fn bearer_values_are_classified() {
        let p = ProjectId::generate();
        let mk = format!("{p}:secret");
        assert_eq!(classify(&mk).unwrap(), Credentials::ManagementKey { project: p.clone(), key: "secret" });
        assert_eq!(classify("a.b.c").unwrap(), Credentials::Jwt("a.b.c"));
        assert!(classify("nope:secret").is_err());
        assert!(classify(&format!("{p}:")).is_err());
        assert!(classify("garbage").is_err());
        assert!(jwt_project("a.b.c").is_err());
        // HS256 tokens from `/oauth/token` are told apart by their header.
        let key = crate::dialect::auth0::TokenKey::random();
        let issued = crate::dialect::auth0::issue_token(&key, &p, "http://h/", "http://h/api/v2/").unwrap();
        assert_eq!(classify(&issued).unwrap(), Credentials::IssuedToken(&issued));
    }

    #[actix_web::test]
    async fn missing_or_malformed_credentials_are_401_in_the_dialect_envelope() {
        use actix_web::test as atest;
        use actix_web::{App, HttpResponse};
        async fn handler(_: Authenticated) -> HttpResponse {
            HttpResponse::Ok().finish()
        }
        let app = atest::init_service(
            App::new().route("/_api/admin/x", web::get().to(handler)).route("/v1/x", web::get().to(handler)),
        )
        .await;
        for (auth, path) in
            [(None, "/_api/admin/x"), (Some("Bearer garbage"), "/_api/admin/x"), (Some("Basic a:b"), "/v1/x")]
        {
            let mut req = atest::TestRequest::get().uri(path);
            if let Some(a) = auth {
                req = req.insert_header((header::AUTHORIZATION, a));
            }
            let res = atest::call_service(&app, req.to_request()).await;
            assert_eq!(res.status().as_u16(), 401, "{auth:?}");
            assert_eq!(res.headers().get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
            let body: Value = atest::read_body_json(res).await;
            if path.starts_with("/_api") {
                assert_eq!(body["error"]["name"], "Unauthorized");
                assert_eq!(body["error"]["code"], 401);
            } else {
                assert_eq!(body["code"], "unauthorized");
            }
        }
    }

    #[actix_web::test]
    async fn bearer_header_parsing() {
        let req = actix_web::test::TestRequest::default().to_http_request();
        assert!(matches!(bearer(&req), Err(AuthError::Missing)));
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::AUTHORIZATION, "Basic abc"))
            .to_http_request();
        assert!(matches!(bearer(&req), Err(AuthError::Invalid(_))));
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::AUTHORIZATION, "bearer  tok "))
            .to_http_request();
        assert_eq!(bearer(&req).unwrap(), "tok");
    }
}
