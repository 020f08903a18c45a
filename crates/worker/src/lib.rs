//! Export worker: claim, stream, encode, upload, presign, sweep
