//! The portal's REST protocol as the proxy needs it: how a call is addressed (`route`) and how
//! `batch` wraps other calls (`batch`). The protocol code the portal simulator shares — the PHP
//! value model and parameter readers (`php`, `params`), the encoders (`encode`), batch command
//! splitting (`command`), the credential list (`credentials`) and the error envelope
//! (`envelope`) — lives in the `b24-rest` crate and is re-exported here, so every reader of the
//! protocol says `rest::...`. Nothing here does I/O.

pub mod batch;
pub mod route;

pub use b24_rest::{command, credentials, encode, envelope, params, php};
