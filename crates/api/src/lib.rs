//! actix-web HTTP API: native, Authgear, Auth0 and Descope dialects
