//! Object storage: S3 multipart + presign, and local files with HMAC-signed URLs
