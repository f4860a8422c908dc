//! The portal's REST protocol as the proxy needs it: how a call is addressed (`route`), how its
//! parameters are read (`php`, `params`), how `batch` wraps other calls (`batch`) and how errors
//! are shaped (`envelope`); which parameters are credentials (`credentials`); how a batch
//! command splits (`command`) and how the proxy writes back what it read (`encode`). Nothing
//! here does I/O.

pub mod batch;
pub mod command;
pub mod credentials;
pub mod encode;
pub mod envelope;
pub mod params;
pub mod php;
pub mod route;
